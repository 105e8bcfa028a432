"""Membership steps, driven from one node: add or remove one member, then re-scan.

The procedure and its safety argument are in core.config. This module runs it:

1. Check that a step may start: the configuration is settled (no other step is
   in progress) and the cluster is healthy, meaning every member this node's
   configuration lists is connected to this node, except a member being
   removed (so a dead member can be removed), and a member being added answers
   as a node waiting to join.
2. Decide the next configuration in the configuration register (the reserved
   key CONFIG_KEY, a CASPaxos register like any key) with a compare-and-set
   on the current one, under the current epoch: of two drivers, one wins.
3. Adopt it here and tell every member of both configurations; wait until a
   majority of the new members has it durably (their answers to config
   requests are sent once it is on disk): a set that meets every quorum of the
   old configuration, which can then gather no more votes.
4. Re-scan: every key any of those members holds (and this node's) is
   re-decided with `Touch` under the new epoch, written through every member.
5. Decide the settled form of the configuration, adopt it and tell everyone.
6. End the node key (server.liveness) of every member that is no longer one, so
   keys bound to a removed member end, as they would had it gone down.

Every part is idempotent: a step whose driver stopped after 2 leaves an
unsettled configuration, which `resume` (any member, any time) carries through
3 to 6; until then no other step may start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paxoskv.core.config import Config, ConfigError, Member, StepInProgress
from paxoskv.core.state import DeleteIf, Read, ReplaceIf, Touch
from paxoskv.server.lifetimes import NODES
from paxoskv.server.liveness import source_of
from paxoskv.server.node import Node, NoQuorum
from paxoskv.server.transport import PeerUnavailable

log = logging.getLogger("paxoskv.membership")

CONFIG_KEY = "\x00config"  # not a client key: client keys are "bucket/name"
STEP_TIMEOUT_S = 10.0  # for each consensus round and each wait of a step
RESCAN_CONCURRENCY = 32
STRAGGLER_WAIT_S = 2.0  # once a majority holds a new configuration, how long the others get


class StepRefused(Exception):
    """A step that must not start now; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Progress:
    """The step in progress, as GET /v1/admin/members reports it."""

    action: str  # "add n4", "remove n2", "resume"
    phase: str  # "deciding", "fencing", "rescanning", "settling"
    keys_done: int = 0
    keys_total: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "phase": self.phase, "keys_done": self.keys_done,
                "keys_total": self.keys_total}


class Membership:
    """This node's membership driver (one step at a time per node; the register
    keeps drivers on different nodes to one step at a time too)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.progress: Progress | None = None
        self._lock = asyncio.Lock()

    # -- the steps ------------------------------------------------------------------

    async def add(self, member: Member) -> Config:
        """Add `member` (a node waiting to join, whose member id the caller read)."""
        return await self._step(f"add {member.name}", lambda c: c.adding(member), skip=None)

    async def remove(self, name: str) -> Config:
        """Remove member `name` (it may be down: that is often why)."""
        return await self._step(f"remove {name}", lambda c: c.removing(name), skip=name)

    async def resume(self) -> Config:
        """Finish a step whose driver stopped before it settled (nothing if none)."""
        async with self._locked("resume"):
            await self._learn_register()
            if self.node.config.settled:
                return self.node.config
            return await self._finish(self.node.config)

    async def _step(self, action: str, make: Callable[[Config], Config], skip: str | None
                    ) -> Config:
        async with self._locked(action):
            await self._learn_register()  # a step decided elsewhere may not have reached us
            current = self.node.config
            try:
                target = make(current)
            except StepInProgress as exc:
                raise StepRefused(409, str(exc)) from None
            except ConfigError as exc:
                raise StepRefused(400, str(exc)) from None
            self._check_healthy(current, skip)
            assert self.progress is not None
            self.progress.phase = "deciding"
            await self._decide(current, target)
            log.info("membership step decided", extra={"node": self.node.name,
                                                       "epoch": target.epoch,
                                                       "peer": action})
            return await self._finish(target)

    async def _finish(self, target: Config) -> Config:
        """Steps 3 to 5 for `target`, an unsettled configuration already decided."""
        assert self.progress is not None
        self.progress.phase = "fencing"
        self._adopt_and_tell(target)
        fenced = await self._wait_for_majority(target)
        self.progress.phase = "rescanning"
        keys = await self._rescan(fenced)
        self.progress.phase = "settling"
        settled = target.settle()
        await self._decide(target, settled)
        self._adopt_and_tell(settled)
        log.info("membership step settled", extra={"node": self.node.name,
                                                   "epoch": settled.epoch})
        await self._end_former_members(keys, settled)
        return settled

    # -- parts ------------------------------------------------------------------------

    def _locked(self, action: str) -> _Locked:
        return _Locked(self, action)

    def _check_healthy(self, current: Config, skip: str | None) -> None:
        down = [name for name in current.names
                if name not in (self.node.name, skip)
                and not (name in self.node.links and self.node.links[name].connected)]
        if down:
            raise StepRefused(503, f"the cluster is not healthy: {', '.join(down)} "
                                   "not reachable from this node (every member but one "
                                   "being removed must be)")

    async def _decide(self, current: Config, target: Config) -> None:
        """Compare-and-set the configuration register from `current` to `target`."""
        expected = None if current.epoch == 0 else current.to_json()
        try:
            state = await self.node.submit(CONFIG_KEY, ReplaceIf(expected, target.to_json()),
                                           STEP_TIMEOUT_S, retry=True)
        except NoQuorum as exc:
            raise StepRefused(503, f"the configuration could not be decided: {exc}") from None
        if state.value != target.to_json():
            raise StepRefused(409, "another membership change was decided first "
                                   f"(the register holds epoch {_epoch_of(state.value)})")

    async def _learn_register(self) -> None:
        """Adopt the configuration register's value if it is newer than this node's."""
        try:
            state = await self.node.submit(CONFIG_KEY, Read(), STEP_TIMEOUT_S, retry=True)
        except NoQuorum as exc:
            raise StepRefused(503, f"the configuration could not be read: {exc}") from None
        if state.live:
            self.node.adopt(Config.from_json(state.value))

    def _adopt_and_tell(self, config: Config) -> None:
        self.node.adopt(config)
        for link in self.node.links.values():
            link.notify("c", config.to_json())

    async def _wait_for_majority(self, target: Config) -> list[str]:
        """Members of `target` that hold it durably: all of them, or after a while a
        majority.

        That is enough to fence the previous configuration: it differs by one
        member, so a majority of `target` holds at least n - (n // 2 + 1) + 1 of
        the previous n members, which meets every majority of them.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + STEP_TIMEOUT_S
        majority_at: float | None = None
        others = [name for name in target.names if name != self.node.name]
        while True:
            epochs = await asyncio.gather(*(self._epoch_at(name) for name in others))
            have = [name for name, epoch in zip(others, epochs, strict=True)
                    if epoch is not None and epoch >= target.epoch]
            if self.node.name in target.names:
                have.append(self.node.name)
            # A majority fences the old epoch; the rest are waited for a while too,
            # so that the rescan writes through them (a member being added above
            # all), but a member that went down meanwhile does not block the step.
            if len(have) >= target.quorum and majority_at is None:
                majority_at = loop.time()
            if len(have) == len(target.members) or (
                    majority_at is not None and loop.time() > majority_at + STRAGGLER_WAIT_S):
                return have
            if loop.time() > end:
                raise StepRefused(503, f"only {len(have)} of {len(target.members)} members "
                                       f"hold epoch {target.epoch} ({target.quorum} needed); "
                                       "the step is decided: resume it once they are up")
            for link in self.node.links.values():
                link.notify("c", target.to_json())
            await asyncio.sleep(0.2)

    async def _epoch_at(self, name: str) -> int | None:
        link = self.node.links.get(name)
        if link is None:
            return None
        try:
            raw = await asyncio.wait_for(link.call("c", None), 2.0)
            return int(raw["epoch"])
        except (PeerUnavailable, TimeoutError, KeyError, TypeError, ValueError):
            return None

    async def _rescan(self, holders: list[str]) -> list[str]:
        """Re-decide every key that `holders` (and this node) hold; returns the keys."""
        keys = set(self.node.acceptor.all_keys())
        for name in holders:
            if name != self.node.name:
                keys.update(await self._keys_at(name))
        assert self.progress is not None
        self.progress.keys_total = len(keys)
        pending = sorted(keys)
        semaphore = asyncio.Semaphore(RESCAN_CONCURRENCY)

        async def touch(key: str) -> None:
            async with semaphore:
                await self.node.submit(key, Touch(), STEP_TIMEOUT_S, retry=True)
                assert self.progress is not None
                self.progress.keys_done += 1

        try:
            await asyncio.gather(*(touch(key) for key in pending))
        except NoQuorum as exc:
            raise StepRefused(503, f"the rescan stopped: {exc}; the step is decided: "
                                   "resume it") from None
        return pending

    async def _end_former_members(self, keys: list[str], config: Config) -> None:
        """End the live node keys that members keep for themselves (server.liveness)
        of nodes that are not members any more. Best effort: the step is settled; a
        key left live here ends at the next step."""
        prefix = f"{NODES}/"
        for key in keys:
            name = key[len(prefix):] if key.startswith(prefix) else None
            if name is None or name in config.names:
                continue
            try:
                state = await self.node.read(key, STEP_TIMEOUT_S, retry=True)
                if state.live and source_of(state) == "member":
                    await self.node.change(key, DeleteIf(state.token), STEP_TIMEOUT_S,
                                           retry=True)
                    log.info("a former member's node key ended",
                             extra={"node": self.node.name, "peer": name})
            except NoQuorum as exc:
                log.warning("could not end a former member's node key",
                            extra={"node": self.node.name, "peer": name, "error": str(exc)})

    async def _keys_at(self, name: str) -> list[str]:
        link = self.node.links.get(name)
        if link is None:
            raise StepRefused(503, f"{name} left before its keys could be listed; resume")
        try:
            return [str(k) for k in await asyncio.wait_for(link.call("k", None),
                                                           STEP_TIMEOUT_S)]
        except (PeerUnavailable, TimeoutError) as exc:
            raise StepRefused(503, f"{name} did not list its keys ({exc!r}); resume") from None


class _Locked:
    """One step at a time on this node, with its progress shown meanwhile."""

    def __init__(self, membership: Membership, action: str) -> None:
        self._m = membership
        self._action = action

    async def __aenter__(self) -> None:
        if self._m._lock.locked():
            raise StepRefused(409, f"a membership change is in progress here "
                                   f"({self._m.progress.action if self._m.progress else '?'})")
        await self._m._lock.acquire()
        self._m.progress = Progress(self._action, "checking")

    async def __aexit__(self, *_: object) -> None:
        self._m.progress = None
        self._m._lock.release()


def _epoch_of(raw: Any) -> Any:
    return raw.get("epoch") if isinstance(raw, dict) else 0
