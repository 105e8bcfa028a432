"""Ending keys whose binding died: deadlines (`until`) and parent keys (`key`).

Every ending is a consensus decision on the key (a conditional delete of the
generation that was bound), never a local erasure. A binding's death is
permanent (a deadline stays passed, a parent generation stays ended), so the
check can run outside the key's own round without a race, and any node may
end the key: the delete is conditional on the token, hence idempotent.

Work is found through indexes fed by this node's acceptor, which sees nearly
every decision. The key's home member does the work; another member steps in
while the home is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from typing import Any

from paxoskv.core.state import DeleteIf, KeyState
from paxoskv.server.node import Node, NoQuorum

log = logging.getLogger("paxoskv.lifetimes")

UNTIL = "until"
PARENT = "key"
TICK = 0.05  # seconds between sweeps: the delay after a deadline is TICK + one round
RETRY_AFTER_MS = 1000


def parent_binding(bucket_of: str, binding: Any) -> tuple[str, int] | None:
    """(parent key id, parent token) from a child's `key` binding."""
    if not isinstance(binding, dict):
        return None
    return f"{bucket_of}/{binding['name']}", int(binding["token"])


def bucket_of(key_id: str) -> str:
    return key_id.split("/", 1)[0]


class Lifetimes:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._deadlines: list[tuple[int, str, int]] = []  # (until ms, key, token)
        self._children: dict[str, set[str]] = {}  # parent key -> child keys
        self._suspects: set[tuple[str, str]] = set()  # (child, parent) to verify
        self._task: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        node.observers.append(self.observe)

    def start(self) -> None:
        for key, record in self.node.acceptor.records.items():
            self.observe(key, record.state)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in [self._task, *self._ending]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def observe(self, key: str, state: KeyState) -> None:
        """Index a state this node's acceptor recorded (accepted, maybe not chosen)."""
        for child in self._children.get(key, ()):
            self._suspects.add((child, key))
        if not state.live:
            return
        until = state.bindings.get(UNTIL)
        if until is not None:
            heapq.heappush(self._deadlines, (int(until), key, state.token))
        parent = parent_binding(bucket_of(key), state.bindings.get(PARENT))
        if parent is not None:
            self._children.setdefault(parent[0], set()).add(key)
            known = self.node.read_local(parent[0])
            if not known.live or known.token != parent[1]:
                self._suspects.add((key, parent[0]))

    def _responsible(self, key: str) -> bool:
        home = self.node.home(key)
        return home == self.node.name or not self.node.links[home].connected

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = self.node.wall_ms()
            while self._deadlines and self._deadlines[0][0] <= now:
                until, key, token = heapq.heappop(self._deadlines)
                if self._responsible(key):
                    self._spawn(self._end_expired(key, token, until))
            suspects, self._suspects = self._suspects, set()
            for child, parent in suspects:
                if self._responsible(child):
                    self._spawn(self._end_orphan(child, parent))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _end_expired(self, key: str, token: int, until: int) -> None:
        try:
            await self.node.change(key, DeleteIf(token, not_before=until), 5.0, retry=False)
        except NoQuorum:
            # Try again later; meanwhile the key stays (never early, maybe late).
            heapq.heappush(self._deadlines, (self.node.wall_ms() + RETRY_AFTER_MS, key, token))

    async def _end_orphan(self, key: str, parent_key: str) -> None:
        """End `key` if the parent generation it is bound to has ended."""
        try:
            state = await self.node.read(key, 5.0, retry=False)
            parent = parent_binding(bucket_of(key), state.bindings.get(PARENT))
            if state.live and parent is not None:
                parent_state = await self.node.read(parent[0], 5.0, retry=False)
                if parent_state.live and parent_state.token == parent[1]:
                    return  # a false alarm: the parent generation lives
                await self.node.change(key, DeleteIf(state.token), 5.0, retry=False)
        except NoQuorum:
            await asyncio.sleep(RETRY_AFTER_MS / 1000)
            self._suspects.add((key, parent_key))
            return
        children = self._children.get(parent_key)
        if children is not None:
            children.discard(key)
            if not children:
                del self._children[parent_key]
