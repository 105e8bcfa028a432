"""The kopf handlers: each glues one concern to the API; the work is elsewhere.

- login / startup / cleanup: one API client and one HTTP session for the operator.
- startup also starts the Lease (leader.py): every replica watches, one acts.
- `reconcile`: a daemon per PaxosKVCluster that runs reconcile.run_pass every few
  seconds (level-triggered: a pass sees the spec as it is now, so a change made while a
  long step runs is acted on by the next pass).
- `bound_pods` and `report_bindings`: node bindings for application pods. Pods labelled
  `paxoskv.io/cluster: <cluster name>` in the cluster's namespace are reported to it by
  their name (`node: <pod name>` binds a key to one): alive while Ready and not being
  deleted. Each report is a full list (pods left out are gone), resent whenever it
  changes and every REPORT_EVERY_S seconds anyway.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
from typing import Any

import aiohttp
import kopf

from . import manifests as m
from .kube import Kube
from .leader import Lease
from .nodes import REPORT_TIMEOUT, NodeError, Nodes
from .reconcile import Context, admin_token, run_pass

log = logging.getLogger("paxoskv.operator")

PASS_EVERY_S = 2.0
REPORT_EVERY_S = 15.0
CHECK_BINDINGS_EVERY_S = 0.5
# The node image: the operator's own unless the resource names one (set by deploy/).
IMAGE_VARIABLE = "PAXOSKV_IMAGE"
# Where the operator's Lease lives: its own namespace (the downward API sets it).
NAMESPACE_VARIABLE = "POD_NAMESPACE"
LEASE_NAME = "paxoskv-operator"


def credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """The pod's service account, else the kubeconfig (as kopf logs in by default)."""
    return (kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings))


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    return credentials(settings)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=m.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=m.GROUP, key="last-handled-configuration")
    info = credentials(settings)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: neither a service account "
                                  "nor a kubeconfig")
    kube = Kube(info)
    memo.context = Context(kube, Nodes(aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(use_dns_cache=False))),  # pods come back elsewhere
                           os.environ.get(IMAGE_VARIABLE, "paxoskv:latest"))
    memo.lease = Lease(kube, os.environ.get(NAMESPACE_VARIABLE) or "default", LEASE_NAME,
                       f"{socket.gethostname()}-{os.urandom(3).hex()}")
    memo.lease_keeper = asyncio.create_task(memo.lease.keep())


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx: Context = memo.context
    memo.lease_keeper.cancel()
    await memo.lease.release()
    await ctx.kube.close()
    await ctx.nodes.session.close()


@kopf.daemon(m.GROUP, m.VERSION, m.PLURAL, cancellation_timeout=5.0)
async def reconcile(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                    **_: Any) -> None:
    ctx: Context = memo.context
    while not stopped:
        if not memo.lease.held:
            await stopped.wait(PASS_EVERY_S)
            continue
        owner = copy.deepcopy(dict(body))  # a snapshot: the live body changes under us
        try:
            await run_pass(ctx, owner)
        except Exception as exc:  # a pass that failed is run again: log, do not die
            log.exception(f"reconcile pass failed: {exc}",
                          extra={"cluster": f"{body.metadata.namespace}/{body.metadata.name}"})
        await stopped.wait(PASS_EVERY_S)


@kopf.index("pods", labels={m.BINDING_LABEL: kopf.PRESENT})
def bound_pods(namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status,
               meta: kopf.Meta, **_: Any) -> dict[tuple[str, str], tuple[str, bool]]:
    ready = meta.get("deletionTimestamp") is None and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])
    return {(namespace or "", str(labels[m.BINDING_LABEL])): (name, ready)}


@kopf.daemon(m.GROUP, m.VERSION, m.PLURAL, cancellation_timeout=5.0)
async def report_bindings(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                          **kwargs: Any) -> None:
    ctx: Context = memo.context
    bound: kopf.Index[tuple[str, str], tuple[str, bool]] = kwargs["bound_pods"]
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    sent: dict[str, bool] | None = None
    since = 0.0
    while not stopped:
        report = dict(bound.get((namespace, name), []))
        if memo.lease.held and (report != sent or since >= REPORT_EVERY_S):
            try:
                await _report(ctx, copy.deepcopy(dict(body)), report)
                sent, since = report, 0.0
            except (NodeError, LookupError) as exc:
                log.warning(f"node report not delivered: {exc}",
                            extra={"cluster": f"{namespace}/{name}"})
        await stopped.wait(CHECK_BINDINGS_EVERY_S)
        since += CHECK_BINDINGS_EVERY_S


async def _report(ctx: Context, owner: m.Manifest, report: dict[str, bool]) -> None:
    members = [s for s in (owner.get("status") or {}).get("members") or [] if s.get("ready")]
    if not members:
        raise LookupError("no ready member")
    namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    token = await admin_token(ctx, owner)
    errors = []
    for member in members:  # the first that takes it
        ordinal = int(member["name"].rpartition("-")[2])
        host = m.peer_url(name, namespace, ordinal).removeprefix("http://").rsplit(":", 1)[0]
        try:
            await ctx.nodes.admin(host, token, "/v1/admin/nodes",
                                  {"source": "operator", "nodes": report}, REPORT_TIMEOUT)
            return
        except NodeError as exc:
            errors.append(str(exc))
    raise NodeError(0, "; ".join(errors))

