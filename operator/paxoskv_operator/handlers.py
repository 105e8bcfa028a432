"""The kopf handlers: each glues one concern to the API; the work is elsewhere.

- login / startup / cleanup: one API client and one HTTP session for the operator.
- startup also starts the Lease (leader.py): every replica watches, one acts.
- `cluster_event` keeps `Clusters`, which runs two loops per PaxosKVCluster: passes of
  reconcile.run_pass every few seconds and at once on a change (level-triggered: a pass
  sees the spec as it is now, so a change made while a long step runs is acted on by the
  next pass), and node reports.
- `bound_pod_event`: node bindings for application pods. Pods labelled
  `paxoskv.io/cluster: <cluster name>` in the cluster's namespace are reported to it by
  their name (`node: <pod name>` binds a key to one): alive while Ready and not being
  deleted. Each report is a full list (pods left out are gone), resent whenever it
  changes and every REPORT_EVERY_S seconds anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .nodes import REPORT_TIMEOUT, NodeError, Nodes, Pod
from .reconcile import Context, admin_token, run_pass, trust

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
    memo.clusters = Clusters(memo.context, memo.lease)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx: Context = memo.context
    await memo.clusters.stop()
    memo.lease_keeper.cancel()
    await memo.lease.release()
    await ctx.kube.close()
    await ctx.nodes.session.close()


@kopf.on.event(m.GROUP, m.VERSION, m.PLURAL)
async def cluster_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        memo.clusters.gone(key)
    else:
        memo.clusters.seen(key, copy.deepcopy(dict(body)))


@kopf.on.event("pods", labels={m.BINDING_LABEL: kopf.PRESENT})
async def bound_pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta, status = body.metadata, body.status
    ready = type != "DELETED" and meta.get("deletionTimestamp") is None and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])
    key = (meta.namespace or "", str(meta.labels.get(m.BINDING_LABEL)))
    memo.clusters.pod(key, meta.name or "", None if type == "DELETED" else ready)


class Clusters:
    """The PaxosKVClusters in sight, each with two loops while it exists: passes of
    reconcile.run_pass (every PASS_EVERY_S, and at once when the resource changes) and
    node reports. Loops, not kopf daemons: a daemon makes kopf put a finalizer on the
    resource, which then could not be deleted once the operator is gone (as
    `helm uninstall` does, deleting both at once); nothing here needs a finalizer (the
    resource's objects are collected through their owner references)."""

    def __init__(self, ctx: Context, lease: Lease) -> None:
        self.ctx, self.lease = ctx, lease
        self.bodies: dict[tuple[str, str], m.Manifest] = {}
        self.pods: dict[tuple[str, str], dict[str, bool]] = {}
        self.changed: dict[tuple[str, str], asyncio.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def seen(self, key: tuple[str, str], body: m.Manifest) -> None:
        before = self.bodies.get(key)
        self.bodies[key] = body
        if before is None:
            self.changed[key] = asyncio.Event()
            for loop in (self._reconcile(key), self._report(key)):
                task = asyncio.create_task(loop)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        if before is None or before["metadata"].get("generation") != body["metadata"].get(
                "generation"):  # the spec changed (not merely the status the pass wrote)
            self.changed[key].set()

    def gone(self, key: tuple[str, str]) -> None:
        self.bodies.pop(key, None)
        event = self.changed.pop(key, None)
        if event is not None:
            event.set()

    def pod(self, key: tuple[str, str], name: str, ready: bool | None) -> None:
        pods = self.pods.setdefault(key, {})
        if ready is None:
            pods.pop(name, None)
        else:
            pods[name] = ready

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _reconcile(self, key: tuple[str, str]) -> None:
        while key in self.bodies:
            changed = self.changed[key]
            changed.clear()
            if self.lease.held:
                try:
                    await run_pass(self.ctx, copy.deepcopy(self.bodies[key]))
                except Exception as exc:  # a failed pass is run again: log, do not die
                    log.exception(f"reconcile pass failed: {exc}",
                                  extra={"cluster": "/".join(key)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), PASS_EVERY_S)

    async def _report(self, key: tuple[str, str]) -> None:
        sent: dict[str, bool] | None = None
        since = 0.0
        while key in self.bodies:
            report = dict(self.pods.get(key, {}))
            if self.lease.held and (report != sent or since >= REPORT_EVERY_S):
                try:
                    await _report(self.ctx, self.bodies[key], report)
                    sent, since = report, 0.0
                except (NodeError, LookupError) as exc:
                    log.warning(f"node report not delivered: {exc}",
                                extra={"cluster": "/".join(key)})
            await asyncio.sleep(CHECK_BINDINGS_EVERY_S)
            since += CHECK_BINDINGS_EVERY_S


async def _report(ctx: Context, owner: m.Manifest, report: dict[str, bool]) -> None:
    members = [s for s in (owner.get("status") or {}).get("members") or [] if s.get("ready")]
    if not members:
        raise LookupError("no ready member")
    namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    token = await admin_token(ctx, owner)
    trusted = await trust(ctx, owner)
    errors = []
    for member in members:  # the first that takes it
        host = m.pod_host(name, namespace, int(member["name"].rpartition("-")[2]))
        try:
            await ctx.nodes.admin(Pod(host, trusted, host), token, "/v1/admin/nodes",
                                  {"source": "operator", "nodes": report}, REPORT_TIMEOUT)
            return
        except NodeError as exc:
            errors.append(str(exc))
    raise NodeError(0, "; ".join(errors))

