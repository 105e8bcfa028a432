"""Key lifetimes: bindings to deadlines, parent keys and sessions, and their ending.

A binding is pinned, at put time, to something whose death is permanent: a
deadline, a parent key's generation (its token), a session id (sessions are
never reopened). So "is this binding dead?" only ever turns from no to yes,
the check can run outside the key's own round without a race, and any node
may end a dead-bound key: the ending is a conditional delete of the bound
generation, decided by consensus like every other change, hence idempotent.

A session is itself a key, in the reserved bucket `_sessions`, bound to a
deadline that keep-alives move forward; a key bound to a session (`pid`) is a
child of that key. Work is found through indexes fed by this node's acceptor,
which sees nearly every decision. The key's home member does the work; another
member steps in while the home is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from paxoskv.core.state import UNTIL, DeleteIf, KeyState, PutIfAbsent, Renew
from paxoskv.server import validation as v
from paxoskv.server.node import Node, NoQuorum

log = logging.getLogger("paxoskv.lifetimes")

PARENT = "key"
SESSION = "pid"
NODE = "node"
# Buckets no client can name (client buckets start with a letter or digit).
SESSIONS = "_sessions"  # a key per session, alive while the session is
NODES = "_nodes"  # a key per node, alive while the node is; its token is the incarnation
TICK = 0.05  # seconds between sweeps: an ending starts at most this long after it is due
RETRY_AFTER_MS = 1000
GRACE_MS = 2000  # how long other members leave an ending to the key's home

Parent = tuple[str, int | None]  # (key id, pinned token or None: any generation)
# Who asks to keep alive or close a session: (the name of its token, None without
# tokens; whether it may do so for any session).
Owner = tuple[str | None, bool]


def bucket_of(key_id: str) -> str:
    return key_id.split("/", 1)[0]


def session_key(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}"


def node_key(name: str) -> str:
    return f"{NODES}/{name}"


def parents(key_id: str, bindings: dict[str, Any]) -> list[Parent]:
    """The keys that `key_id`'s bindings make it a child of."""
    found: list[Parent] = []
    parent = bindings.get(PARENT)
    if isinstance(parent, dict):
        found.append((f"{bucket_of(key_id)}/{parent['name']}", int(parent["token"])))
    session = bindings.get(SESSION)
    if isinstance(session, str):
        found.append((session_key(session), None))
    node = bindings.get(NODE)
    if isinstance(node, dict):
        found.append((node_key(node["name"]), int(node["token"])))
    return found


def alive(parent: Parent, state: KeyState) -> bool:
    return state.live and (parent[1] is None or state.token == parent[1])


class Lifetimes:
    def __init__(self, node: Node) -> None:
        self.node = node
        # (due ms, key, token, until ms): due is `until`, or later for a stand-in.
        self._deadlines: list[tuple[int, str, int, int]] = []
        self._scheduled: dict[str, tuple[int, int]] = {}  # key -> (token, until) in the heap
        self._children: dict[str, set[str]] = {}  # parent key -> child keys
        self._parents: dict[str, list[str]] = {}  # child key -> parent keys
        self._parent_tokens: dict[str, int] = {}  # parent key -> token last seen live
        # (child, parent) to verify -> when (ms): now, or later for a stand-in.
        self._suspects: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self.new_id: Callable[[], str] = lambda: uuid.uuid4().hex  # session ids (tests inject)
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

    # -- puts with bindings -----------------------------------------------------------

    async def resolve(self, target: v.Target, wanted: dict[str, Any]) -> dict[str, Any]:
        """Check that every requested binding is alive now, and pin it."""
        retry = target.no_quorum == "retry"
        resolved: dict[str, Any] = {}
        if UNTIL in wanted:
            if wanted[UNTIL] <= self.node.wall_ms():
                raise v.dead_binding("bindings.until", "the deadline has already passed")
            resolved[UNTIL] = wanted[UNTIL]
        if PARENT in wanted:
            name = wanted[PARENT]
            parent = await self.node.read(f"{target.bucket}/{name}", target.timeout, retry)
            if not parent.live:
                raise v.dead_binding("bindings.key", f"parent key {name!r} is not present "
                                     f"in bucket {target.bucket!r}")
            resolved[PARENT] = {"name": name, "token": parent.token}
        if SESSION in wanted:
            session = await self.node.read(session_key(wanted[SESSION]), target.timeout, retry)
            if not session.live:
                raise v.dead_binding("bindings.pid", "the session is closed, expired or "
                                     "unknown")
            resolved[SESSION] = wanted[SESSION]
        if NODE in wanted:
            name = wanted[NODE]
            node = await self.node.read(node_key(name), target.timeout, retry)
            if not node.live:
                raise v.dead_binding("bindings.node", f"node {name!r} is not alive")
            # Pinned to this incarnation: a node that goes down and comes back
            # is a new incarnation, and keys bound to the old one are gone.
            resolved[NODE] = {"name": name, "token": node.token}
        return resolved

    # -- sessions -------------------------------------------------------------------------

    async def open_session(self, ttl_ms: int, timeout: float, retry: bool,
                           owner: str | None = None) -> tuple[str, int]:
        """A new session id, alive for at least `ttl_ms` without a keep-alive; `owner`:
        the name of the token that opened it, when the node takes tokens."""
        session_id = self.new_id()
        until = self.node.wall_ms() + ttl_ms
        value: dict[str, Any] = {"ttl_ms": ttl_ms}
        if owner is not None:
            value["owner"] = owner
        state = await self.node.change(session_key(session_id), PutIfAbsent(
            value, {UNTIL: until}), timeout, retry)
        return session_id, int(state.bindings[UNTIL])

    @staticmethod
    def _check_owner(session_id: str, state: KeyState, owner: Owner) -> None:
        name, any_session = owner
        if not any_session and state.value.get("owner") != name:
            raise v.RequestError("session", f"session {session_id} is not this token's: "
                                 "only the token that opened it, or one that may write "
                                 "every bucket, keeps it alive or closes it", "forbidden", 403)

    async def keep_alive(self, session_id: str, timeout: float, retry: bool,
                         owner: Owner = (None, True)) -> int | None:
        """Move the session's deadline a TTL ahead; its new deadline, or None if it is
        dead. `owner`: (the caller's token name, whether it may touch any session)."""
        key = session_key(session_id)
        state = await self.node.read(key, timeout, retry)
        if not state.live:
            return None
        self._check_owner(session_id, state, owner)
        until = self.node.wall_ms() + int(state.value["ttl_ms"])
        renewed = await self.node.change(key, Renew(state.token, until), timeout, retry)
        if not renewed.live or renewed.token != state.token:
            return None
        return int(renewed.bindings[UNTIL])

    async def close_session(self, session_id: str, timeout: float, retry: bool,
                            owner: Owner = (None, True)) -> bool:
        """End the session (and so every key bound to it); False if it was already dead."""
        key = session_key(session_id)
        state = await self.node.read(key, timeout, retry)
        if not state.live:
            return False
        self._check_owner(session_id, state, owner)
        ended = await self.node.change(key, DeleteIf(state.token), timeout, retry)
        return not ended.live and ended.token == state.token + 1

    def children(self, key: str) -> set[str]:
        """The keys whose latest state this node's acceptor took is live and bound to
        `key` (a parent key, a session's or a node's key): hints, maybe not chosen."""
        return set(self._children.get(key, ()))

    # -- finding and ending dead-bound keys ---------------------------------------------

    def observe(self, key: str, state: KeyState) -> None:
        """Index a state this node's acceptor recorded (accepted, maybe not chosen)."""
        if not state.bindings and key not in self._children and key not in self._parents:
            return  # the common case: a key with no lifetime, no children, no old parents
        if key in self._children and self._parent_changed(key, state):
            for child in self._children[key]:
                self._suspect(child, key)
        self._index_parents(key, state)
        if not state.live:
            return
        until = state.bindings.get(UNTIL)
        if until is not None and self._scheduled.get(key) != (state.token, int(until)):
            self._scheduled[key] = (state.token, int(until))
            heapq.heappush(self._deadlines, (int(until), key, state.token, int(until)))
        for parent in parents(key, state.bindings):
            if not alive(parent, self._hint(parent[0])):
                self._suspect(key, parent[0])

    def _parent_changed(self, key: str, state: KeyState) -> bool:
        """Children need a look only when their parent ended or was decided anew."""
        before = self._parent_tokens.get(key)
        if state.live:
            self._parent_tokens[key] = state.token
        else:
            self._parent_tokens.pop(key, None)
        return not state.live or (before is not None and before != state.token)

    def _index_parents(self, key: str, state: KeyState) -> None:
        """Keep `key` listed under exactly the parents its latest live state names."""
        now = [p[0] for p in parents(key, state.bindings)] if state.live else []
        for old in self._parents.pop(key, []):
            if old not in now and old in self._children:
                self._children[old].discard(key)
                if not self._children[old]:
                    del self._children[old]
                    self._parent_tokens.pop(old, None)
        if now:
            self._parents[key] = now
            for parent in now:
                if parent not in self._children:
                    self._parent_tokens[parent] = self._hint(parent).token
                self._children.setdefault(parent, set()).add(key)

    def _suspect(self, child: str, parent: str, delay_ms: int = 0) -> None:
        due = self.node.wall_ms() + delay_ms
        self._suspects[(child, parent)] = min(due, self._suspects.get((child, parent), due))

    def _hint(self, key: str) -> KeyState:
        """The latest state this node's acceptor holds: accepted, maybe not chosen. Good
        enough to find work; every ending is checked and decided by consensus."""
        return self.node.acceptor.record(key).state

    def _renewed(self, key: str, token: int, until: int) -> bool:
        local = self._hint(key)
        later = local.bindings.get(UNTIL)
        return local.live and local.token == token and later is not None and int(later) > until

    def _first_in_line(self, key: str) -> bool:
        """The key's home acts at once; the others stand in after GRACE_MS."""
        home = self.node.home(key)
        link = self.node.links.get(home)  # none yet for a member just added
        return home == self.node.name or link is None or not link.connected

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = self.node.wall_ms()
            while self._deadlines and self._deadlines[0][0] <= now:
                due, key, token, until = heapq.heappop(self._deadlines)
                if self._scheduled.get(key) == (token, until):
                    del self._scheduled[key]
                if self._renewed(key, token, until):
                    continue  # the later deadline has its own entry
                if due == until and not self._first_in_line(key):
                    heapq.heappush(self._deadlines, (until + GRACE_MS, key, token, until))
                    continue
                self._spawn(self._end_expired(key, token, until))
            due_now = [s for s, due in self._suspects.items() if due <= now]
            for child, parent in due_now:
                del self._suspects[(child, parent)]
                if self._first_in_line(child):
                    self._spawn(self._end_orphan(child, parent))
                else:
                    self._spawn(self._stand_in(child, parent))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._ending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._ending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ending a key failed", exc_info=task.exception())

    async def _end_expired(self, key: str, token: int, until: int) -> None:
        try:
            # Ends the key only if its deadline is still `until` (not renewed).
            await self.node.change(key, DeleteIf(token, not_before=until), 5.0, retry=False)
        except NoQuorum:
            # Try again later; meanwhile the key stays (never early, maybe late).
            retry_at = self.node.wall_ms() + RETRY_AFTER_MS
            heapq.heappush(self._deadlines, (retry_at, key, token, until))

    async def _stand_in(self, key: str, parent_key: str) -> None:
        """Check again after GRACE_MS, in case the key's home never does."""
        await asyncio.sleep(GRACE_MS / 1000)
        await self._end_orphan(key, parent_key)

    async def _end_orphan(self, key: str, parent_key: str) -> None:
        """End `key` if a parent it is bound to has died."""
        try:
            state = await self.node.read(key, 5.0, retry=False)
            if state.live:
                for parent in parents(key, state.bindings):
                    if not alive(parent, await self.node.read(parent[0], 5.0, retry=False)):
                        await self.node.change(key, DeleteIf(state.token), 5.0, retry=False)
                        break
                else:
                    return  # a false alarm: every parent lives
        except NoQuorum:
            self._suspect(key, parent_key, RETRY_AFTER_MS)
