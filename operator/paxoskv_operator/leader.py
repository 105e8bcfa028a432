"""One operator acts at a time: a coordination.k8s.io/v1 Lease, as client-go's leader
election keeps it.

Every replica runs kopf (watches, indexes, its liveness endpoint); the handlers act only
while `Lease.held`. A replica takes the Lease when it is absent, or when its holder has not
renewed it for LEASE_S as measured on this replica's own clock (the record's timestamps
come from other machines' clocks and are not compared with ours). Updates carry the
resourceVersion they were based on, so two replicas racing for it cannot both win.

The data do not depend on this: a membership step is a compare-and-set on the cluster's
configuration register, so two operators acting at once could only see each other's
steps refused. The Lease keeps them from wasting steps and from double events.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from .kube import Kube, KubeError, path

log = logging.getLogger("paxoskv.operator.leader")

LEASE_S = 15
RENEW_EVERY_S = 5.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str) -> None:
        self.kube = kube
        self.url = path("coordination.k8s.io/v1", "leases", namespace, name)
        self.collection = path("coordination.k8s.io/v1", "leases", namespace)
        self.name = name
        self.identity = identity
        self.held = False
        self._seen: tuple[Any, ...] | None = None  # the holder's record as last seen
        self._seen_at = 0.0  # when it last changed, on our monotonic clock

    async def keep(self) -> None:
        """Take and renew the Lease for as long as the operator runs."""
        while True:
            try:
                await self.try_once()
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning(f"lease not renewed: {exc}")
                # Stop acting well before another replica may take it over.
                if time.monotonic() - self._seen_at > LEASE_S * 2 / 3:
                    self._set(False)
            await asyncio.sleep(RENEW_EVERY_S)

    async def try_once(self) -> None:
        lease = await self.kube.get(self.url)
        spec: dict[str, Any] = {"holderIdentity": self.identity, "leaseDurationSeconds": LEASE_S,
                                "renewTime": _now()}
        if lease is None:
            spec["acquireTime"] = spec["renewTime"]
            spec["leaseTransitions"] = 0
            try:
                await self.kube.create(self.collection, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name}, "spec": spec})
            except KubeError as exc:
                if exc.status != 409:
                    raise
                return  # another replica made it first
            self._taken()
            return
        current = lease.get("spec") or {}
        record = (current.get("holderIdentity"), current.get("renewTime"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        mine = current.get("holderIdentity") == self.identity
        expired = time.monotonic() - self._seen_at > LEASE_S
        if not (mine or expired or not current.get("holderIdentity")):
            self._set(False)
            return
        if not mine:
            spec["acquireTime"] = spec["renewTime"]
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        try:
            await self.kube.patch(self.url, {"metadata": {
                "resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": spec})
        except KubeError as exc:
            if exc.status != 409:
                raise
            self._set(False)  # someone else renewed or took it meanwhile
            return
        self._taken()

    def _taken(self) -> None:
        self._seen, self._seen_at = None, time.monotonic()
        self._set(True)

    def _set(self, held: bool) -> None:
        if held != self.held:
            log.info("leading: this replica acts" if held else
                     "standing by: another replica holds the lease",
                     extra={"node": self.identity})
        self.held = held

    async def release(self) -> None:
        """Hand the Lease over at once on a clean stop (the next replica need not wait)."""
        if not self.held:
            return
        self.held = False
        try:
            await self.kube.patch(self.url, {"spec": {"holderIdentity": None}})
        except (KubeError, OSError, TimeoutError) as exc:
            log.warning(f"lease not released: {exc}")
