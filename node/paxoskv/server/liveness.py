"""Node liveness for the `node` binding: which nodes are alive, as consensus state.

A node is alive while its key `_nodes/<name>` is; the key's token is the node's
incarnation, and keys bound to a node are pinned to one incarnation. A node
that went down and came back is a new incarnation, so keys bound to the old one
stay gone, as in PaxosKV where a node going down ends its keys.

Two sources say which nodes are alive:
- The cluster's own members. Each member keeps its own key alive (and starts a
  new incarnation when it starts); a member whose peer link has been down for
  DOWN_AFTER_MS is ended by the members that lost it. The wait is for one
  incarnation: a member that restarts while our link to it is still down writes
  a new one through the others, and that restarts our wait (else a peer that
  reconnects a little late would end the fresh incarnation at once).
- An external reporter (the Kubernetes operator reporting pods), through
  `report`: a full, level-triggered list of the nodes it vouches for. Resending
  the same report changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paxoskv.core.state import DeleteIf, KeyState, PutIfAbsent
from paxoskv.server.lifetimes import NODES, node_key
from paxoskv.server.node import Node, NoQuorum

log = logging.getLogger("paxoskv.liveness")

DOWN_AFTER_MS = 2000  # a member unreachable this long is down
# ... or this long after our start, if we never reached it: peers start one by one.
NEVER_SEEN_DOWN_AFTER_MS = 10_000
TICK = 0.25
ROUND_TIMEOUT = 2.0


class Liveness:
    def __init__(self, node: Node) -> None:
        self.node = node
        # member -> (monotonic time its link was first seen down, the incarnation
        # this acceptor held for it then): what the wait to end it is measured on.
        self._down_since: dict[str, tuple[float, int]] = {}
        self._seen: set[str] = set()  # members we have been connected to
        self._task: asyncio.Task[None] | None = None
        self._incarnation: int | None = None  # this member's own, once started

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(NoQuorum):
                await self._keep_self_alive()
                await self._end_lost_members()
            await asyncio.sleep(TICK)

    async def _keep_self_alive(self) -> None:
        if self.node.name not in self.node.config.names:
            return  # not a member (any more): the step that removed it ended its key
        key = node_key(self.node.name)
        state = await self.node.read(key, ROUND_TIMEOUT, retry=False)
        if state.live and state.token == self._incarnation:
            return
        if state.live and self._incarnation is None:
            # Left over from before this start: that incarnation is over.
            await self.node.change(key, DeleteIf(state.token), ROUND_TIMEOUT, retry=False)
        started = await self.node.change(key, PutIfAbsent({"source": "member"}),
                                         ROUND_TIMEOUT, retry=False)
        self._incarnation = started.token
        log.info("node incarnation", extra={"node": self.node.name, "boot": started.token})

    async def _end_lost_members(self) -> None:
        now = self.node.clock()
        for name, link in self.node.links.items():
            if link.connected:
                self._seen.add(name)
                self._down_since.pop(name, None)
                continue
            key = node_key(name)
            since, incarnation = self._down_since.setdefault(
                name, (now, self.node.acceptor.record(key).state.token))
            # A member never reached is given longer: peers start one by one.
            limit = DOWN_AFTER_MS if name in self._seen else NEVER_SEEN_DOWN_AFTER_MS
            if (now - since) * 1000 < limit:
                continue
            state = await self.node.read(key, ROUND_TIMEOUT, retry=False)
            if state.live and state.token != incarnation:
                # It started again since we lost it: wait anew for this incarnation.
                self._down_since[name] = (now, state.token)
            elif state.live and source_of(state) == "member":
                await self.node.change(key, DeleteIf(state.token), ROUND_TIMEOUT, retry=False)

    async def _end(self, key: str, source: str | None = None) -> bool:
        """End the node's current incarnation (only one from `source`, if given)."""
        state = await self.node.read(key, ROUND_TIMEOUT, retry=False)
        if not state.live or (source is not None and source_of(state) != source):
            return False
        ended = await self.node.change(key, DeleteIf(state.token), ROUND_TIMEOUT, retry=False)
        return not ended.live and ended.token == state.token + 1

    async def report(self, source: str, alive: dict[str, bool], timeout: float
                     ) -> dict[str, list[str]]:
        """Apply an external reporter's full view: names mapped to alive or not;
        nodes it reported before and leaves out now are gone. Idempotent."""
        started, ended = [], []
        for name, is_alive in sorted(alive.items()):
            key = node_key(name)
            if is_alive:
                before = await self.node.read(key, timeout, retry=False)
                if not before.live:
                    await self.node.change(key, PutIfAbsent({"source": source}), timeout,
                                           retry=False)
                    started.append(name)
            elif await self._end(key):
                ended.append(name)
        for key in self._known_from(source):
            name = key.split("/", 1)[1]
            if name not in alive and await self._end(key, source):
                ended.append(name)
        return {"started": started, "ended": ended}

    def _known_from(self, source: str) -> list[str]:
        """Node keys this acceptor has seen live from `source` (confirmed before use)."""
        prefix = f"{NODES}/"
        return [key for key, record in self.node.acceptor.records.items()
                if key.startswith(prefix) and record.state.live
                and source_of(record.state) == source]


def source_of(state: KeyState) -> str | None:
    """Who started a node incarnation: "member" (the node itself), or a reporter."""
    value = state.value
    return value.get("source") if isinstance(value, dict) else None
