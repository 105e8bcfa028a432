"""One pass over one PaxosKVCluster: keep its objects, observe, decide, act.

The pass is level-triggered and idempotent (see plan.py): the handlers run it on a
timer and whenever the resource changes; a pass killed half-way is simply run again.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from . import manifests as m
from . import plan
from .certificates import cluster_certificates
from .kube import MERGE, Kube, KubeError, path
from .nodes import NodeError, Nodes, Pod

log = logging.getLogger("paxoskv.operator")

JSON_PATCH = "application/json-patch+json"


@dataclass
class Context:
    kube: Kube
    nodes: Nodes
    default_image: str  # the operator's own image: it holds the node too
    # TLS contexts trusting a cluster's CA, by the CA's PEM (made once per CA).
    trusts: dict[str, ssl.SSLContext] = field(default_factory=dict)


def _body(owner: m.Manifest) -> kopf.Body:
    """The resource as kopf's events name it."""
    return kopf.Body(cast(kopf.RawBody, owner))


def namespace_name(owner: m.Manifest) -> tuple[str, str]:
    return owner["metadata"]["namespace"], owner["metadata"]["name"]


async def made_once(ctx: Context, owner: m.Manifest, secret_name: str,
                    build: Callable[[], m.Manifest]) -> dict[str, str]:
    """A Secret's data (decoded), made now with `build` if the Secret does not exist;
    never changed afterwards (it holds secrets, or files the user may edit)."""
    namespace, _ = namespace_name(owner)
    url = path("v1", "secrets", namespace, secret_name)
    secret = await ctx.kube.get(url)
    if secret is None:
        try:
            secret = await ctx.kube.create(path("v1", "secrets", namespace), build())
        except KubeError as exc:
            if exc.status != 409:  # made meanwhile by another pass
                raise
            secret = await ctx.kube.get(url)
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def admin_token(ctx: Context, owner: m.Manifest) -> str:
    """The cluster's admin token, from its Secret (made now if it has none)."""
    name = owner["metadata"]["name"]
    data = await made_once(ctx, owner, f"{name}-admin",
                           lambda: m.admin_secret(owner, secrets.token_urlsafe(32)))
    return data["token"]


def _tokens(owner: m.Manifest) -> m.Manifest:
    token = secrets.token_urlsafe(32)
    return m.tokens_secret(owner, m.client_tokens_file(hashlib.sha256(token.encode())
                                                       .hexdigest()), token)


async def keep_secrets(ctx: Context, owner: m.Manifest) -> None:
    """The admin token, the tokens file and the certificates the spec asks for."""
    namespace, name = namespace_name(owner)
    await admin_token(ctx, owner)
    if m.auth_on(owner):
        await made_once(ctx, owner, f"{name}-tokens", lambda: _tokens(owner))
    if m.tls_on(owner) and m.tls_secret_name(owner) == f"{name}-tls":
        await made_once(ctx, owner, f"{name}-tls", lambda: m.tls_secret(
            owner, cluster_certificates(name, namespace)))


async def trust(ctx: Context, owner: m.Manifest) -> ssl.SSLContext | None:
    """A TLS context trusting the cluster's CA (None: the cluster serves plain HTTP)."""
    if not m.tls_on(owner):
        return None
    namespace, _ = namespace_name(owner)
    secret = await ctx.kube.get(path("v1", "secrets", namespace, m.tls_secret_name(owner)))
    raw = ((secret or {}).get("data") or {}).get("ca.crt")
    if raw is None:
        raise LookupError(f"Secret {m.tls_secret_name(owner)} has no ca.crt")
    ca = base64.b64decode(raw).decode()
    if ca not in ctx.trusts:
        ctx.trusts[ca] = ssl.create_default_context(cadata=ca)
    return ctx.trusts[ca]


async def keep(ctx: Context, collection: str, built: m.Manifest) -> dict[str, Any]:
    """Create `built` in `collection` (a path), or patch it if its spec hash changed."""
    url = f"{collection}/{built['metadata']['name']}"
    current = await ctx.kube.get(url)
    if current is None:
        return await ctx.kube.create(collection, built)
    wanted = built["metadata"]["annotations"].get(m.HASH)
    if current["metadata"].get("annotations", {}).get(m.HASH) == wanted:
        return current
    if built["kind"] == "StatefulSet":
        # Only the template and the update strategy of a StatefulSet may change; the
        # replicas are the operator's to set, step by step.
        ops = [{"op": "replace", "path": "/spec/template", "value": built["spec"]["template"]},
               {"op": "replace", "path": "/spec/updateStrategy",
                "value": built["spec"]["updateStrategy"]}]
        await ctx.kube.patch(url, ops, JSON_PATCH)
        return await ctx.kube.patch(url, {"metadata": {"annotations": {m.HASH: wanted}}})
    patch = {key: value for key, value in built.items() if key not in ("apiVersion", "kind")}
    return await ctx.kube.patch(url, patch, MERGE)


async def keep_objects(ctx: Context, owner: m.Manifest) -> dict[str, Any]:
    """The Services, the Secret and the StatefulSet (made with one pod at first)."""
    namespace, name = namespace_name(owner)
    services = path("v1", "services", namespace)
    await keep(ctx, services, m.peer_service(owner))
    await keep(ctx, services, m.client_service(owner))
    await keep_secrets(ctx, owner)
    image = owner["spec"].get("image") or ctx.default_image
    existing = await ctx.kube.get(path("apps/v1", "statefulsets", namespace, name))
    replicas = 1 if existing is None else int(existing["spec"]["replicas"])
    return await keep(ctx, path("apps/v1", "statefulsets", namespace),
                      m.statefulset(owner, image, replicas))


async def keep_budget(ctx: Context, owner: m.Manifest, members: int) -> None:
    namespace, name = namespace_name(owner)
    version = "policy/v1" if await ctx.kube.has_api("policy/v1") else "policy/v1beta1"
    collection = path(version, "poddisruptionbudgets", namespace)
    built = m.disruption_budget(owner, members, version)
    if built is None:
        await ctx.kube.delete(f"{collection}/{name}")
    else:
        await keep(ctx, collection, built)


async def keep_claims(ctx: Context, owner: m.Manifest, claims: list[dict[str, Any]]) -> None:
    """Own the data claims (so they go with the resource) under reclaimPolicy Delete,
    and leave them unowned under Retain."""
    namespace, _ = namespace_name(owner)
    delete = (owner["spec"].get("storage") or {}).get("reclaimPolicy") == "Delete"
    reference = m.owner_reference(owner)
    for claim in claims:
        owners = claim["metadata"].get("ownerReferences") or []
        ours = [r for r in owners if r.get("uid") == reference["uid"]]
        if delete == bool(ours):
            continue
        others = [r for r in owners if r.get("uid") != reference["uid"]]
        await ctx.kube.patch(path("v1", "persistentvolumeclaims", namespace,
                                  claim["metadata"]["name"]),
                             {"metadata": {"ownerReferences": others + (
                                 [{**reference, "controller": False}] if delete else [])}})


async def observe(ctx: Context, owner: m.Manifest, statefulset: dict[str, Any] | None
                  ) -> plan.Observed:
    namespace, name = namespace_name(owner)
    selector = m.selector_string(name)
    pods = await ctx.kube.select(path("v1", "pods", namespace), selector)
    claims = await ctx.kube.select(path("v1", "persistentvolumeclaims", namespace), selector)
    if not owner["spec"].get("paused"):
        await keep_claims(ctx, owner, claims)
    observed = plan.Observed(name, int(owner["spec"].get("replicas", 3)))
    try:
        trusted = await trust(ctx, owner)
    except LookupError:
        trusted = None  # not made yet: the pods cannot start without it either

    async def view(pod: dict[str, Any]) -> plan.Pod | None:
        ordinal = observed.ordinal(pod["metadata"]["name"])
        if ordinal is None:
            return None
        ip = pod.get("status", {}).get("podIP")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in pod.get("status", {}).get("conditions") or [])
        reachable = ip and (trusted is not None or not m.tls_on(owner))
        identity = (await ctx.nodes.identity(_reach(owner, trusted, ordinal, ip))
                    if reachable else None)
        return plan.Pod(ordinal, ready, ip, pod["metadata"].get("deletionTimestamp")
                        is not None, identity)

    views = [v for v in await asyncio.gather(*(view(p) for p in pods)) if v is not None]
    claim_ordinals = {observed.ordinal(c["metadata"]["name"].removeprefix("data-"))
                      for c in claims}
    return plan.Observed(
        name, observed.desired, bool(owner["spec"].get("paused")),
        None if statefulset is None else int(statefulset["spec"]["replicas"]),
        {v.ordinal: v for v in views},
        frozenset(n for n in claim_ordinals if n is not None),
        (owner.get("status") or {}).get("clusterId"))


async def act(ctx: Context, owner: m.Manifest, o: plan.Observed, action: plan.Action) -> None:
    """Carry out one step. Refusals by a node become warning events, not errors: the
    next pass decides again from what it sees."""
    namespace, name = namespace_name(owner)
    sts = path("apps/v1", "statefulsets", namespace, name)
    what = plan.describe(o, action)
    if isinstance(action, plan.Wait):
        return
    kopf.info(_body(owner), reason=type(action).__name__, message=what)
    log.info(what, extra={"cluster": f"{namespace}/{name}"})
    try:
        match action:
            case plan.ScaleStatefulSet(replicas=n):
                await ctx.kube.patch(sts, {"spec": {"replicas": n}})
            case plan.Bootstrap(ordinal=n, member_id=member_id):
                await ctx.nodes.admin(await _pod(ctx, owner, o, n),
                                      await admin_token(ctx, owner),
                                      "/v1/admin/bootstrap", {"member_id": member_id})
            case plan.Add(ordinal=n):
                await ctx.nodes.admin(await _member(ctx, owner, o, exclude=None),
                                      await admin_token(ctx, owner), "/v1/admin/members/add",
                                      {"name": o.pod_name(n), "url": m.peer_url(owner, n)})
            case plan.Remove(name=member):
                await ctx.nodes.admin(await _member(ctx, owner, o, exclude=member),
                                      await admin_token(ctx, owner),
                                      "/v1/admin/members/remove", {"name": member})
            case plan.Resume():
                await ctx.nodes.admin(await _member(ctx, owner, o, exclude=None),
                                      await admin_token(ctx, owner),
                                      "/v1/admin/members/resume", {})
            case plan.DeletePod(ordinal=n):
                await ctx.kube.delete(path("v1", "pods", namespace, o.pod_name(n)))
            case plan.DeleteClaim(ordinal=n):
                await ctx.kube.delete(path("v1", "persistentvolumeclaims", namespace,
                                           m.claim_name(name, n)))
                await ctx.kube.delete(path("v1", "pods", namespace, o.pod_name(n)))
    except (NodeError, KubeError, LookupError) as exc:
        kopf.warn(_body(owner), reason="StepRefused", message=f"{what}: {exc}")
        log.warning(f"{what}: {exc}", extra={"cluster": f"{namespace}/{name}"})
        return
    kopf.info(_body(owner), reason=type(action).__name__ + "Done", message=what)


def _reach(owner: m.Manifest, trusted: ssl.SSLContext | None, ordinal: int, ip: str) -> Pod:
    namespace, name = namespace_name(owner)
    return Pod(ip, trusted, m.pod_host(name, namespace, ordinal))


async def _pod(ctx: Context, owner: m.Manifest, o: plan.Observed, ordinal: int) -> Pod:
    pod = o.pods.get(ordinal)
    if pod is None or pod.ip is None:
        raise LookupError(f"{o.pod_name(ordinal)} has no address")
    return _reach(owner, await trust(ctx, owner), ordinal, pod.ip)


async def _member(ctx: Context, owner: m.Manifest, o: plan.Observed, exclude: str | None
                  ) -> Pod:
    """A ready member (the first by ordinal), not `exclude`."""
    config = o.config
    candidates = [p for n, p in sorted(o.pods.items())
                  if config is not None and o.pod_name(n) in config.members
                  and o.pod_name(n) != exclude and p.ready and p.ip and p.state == "member"]
    if not candidates:
        raise LookupError("no ready member to run the step")
    return await _pod(ctx, owner, o, candidates[0].ordinal)


def with_transitions(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """`new` status with each condition's lastTransitionTime: kept from `old` while the
    condition's status is unchanged, now otherwise."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = {c["type"]: c for c in (old or {}).get("conditions") or []}
    for c in new["conditions"]:
        previous = before.get(c["type"])
        same = previous is not None and previous.get("status") == c["status"]
        c["lastTransitionTime"] = previous.get("lastTransitionTime", now) if (
            previous is not None and same) else now
    return new


async def run_pass(ctx: Context, owner: m.Manifest) -> plan.Action:
    """Keep the objects, observe, write the status, take the next step."""
    namespace, name = namespace_name(owner)
    paused = bool(owner["spec"].get("paused"))
    sts = (await ctx.kube.get(path("apps/v1", "statefulsets", namespace, name)) if paused
           else await keep_objects(ctx, owner))
    observed = await observe(ctx, owner, sts)
    action = plan.next_action(observed)
    old = owner.get("status") or {}
    status = with_transitions(plan.status(observed, action, owner["metadata"]["generation"],
                                          m.selector_string(name)), old)
    await ctx.kube.patch(path(f"{m.GROUP}/{m.VERSION}", m.PLURAL, namespace, name, "status"),
                         {"status": status})
    if isinstance(action, plan.Wait) and action.degraded and action.reason != _reason(old):
        kopf.warn(_body(owner), reason=action.reason, message=action.message)
    if not paused and observed.config is not None:
        await keep_budget(ctx, owner, min(len(observed.config.members), observed.desired))
    await act(ctx, owner, observed, action)
    return action


def _reason(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "Degraded" and c.get("status") == "True":
            return str(c.get("reason"))
    return None
