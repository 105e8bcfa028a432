"""Listings, a page at a time: a bucket's keys by prefix (POST /v1/list), the buckets
(/v1/buckets), the open sessions (/v1/sessions) and the node incarnations (/v1/nodes).

Two consistencies, as for a get:

- linearizable (the default): the candidate keys are the union of the keys held by
  this member and by enough others to make a quorum. A key chosen before the listing
  started was accepted by a quorum, which meets that one, so it is a candidate. Each
  candidate is then read linearizably, in order, until the page is full: every entry
  listed is the key's latest decided state when it was read, and no key that was live
  before the listing began and stayed live is left out. The page is not a snapshot of
  one instant: keys are read one after another.
- local: this member's chosen states, with no round trip: never a state that was
  merely accepted, but possibly stale, and a key decided without this member may be
  missing.

What each listing reads:

- keys: a bucket's keys beginning with a prefix, live ones only.
- buckets: every bucket among the candidates (the reserved `_` buckets left out), listed
  if one of its keys reads live, trying first the keys this member knows chosen live:
  so a bucket is listed when it held a live key at a read during the listing, and none
  that held one live throughout is left out. Only a local listing counts a bucket's live
  keys (this member's chosen ones); a linearizable one would have to read every key.
- sessions: the session keys (`_sessions/<id>`), live ones only: open sessions, with their
  deadline as decided (`until`, ms since the epoch, on the clock of the member that
  served the latest keep-alive) and what remains of it on this member's clock. The keys
  bound to a session are those this member's lifetimes index holds for it (fed by every
  state its acceptor takes), each read as the listing reads: listed when live and still
  bound; a key bound by decisions this member took no part in is missing until it
  learns of one (a catch-up, a commit it hears of).
- nodes: every node key (`_nodes/<name>`) ever decided, live or ended; its token is the
  incarnation (a node that comes back starts a new one, with a larger token).

Pages: `after` is the last entry of the previous page (its `next`): keys, bucket names,
session ids and node names are listed in code-point order. Every listing costs a pass
over the candidate keys of a quorum (each member filters its whole key set).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from paxoskv.core.state import UNTIL, KeyState
from paxoskv.server import validation as v
from paxoskv.server.lifetimes import NODES, SESSION, SESSIONS
from paxoskv.server.node import Node, NoQuorum
from paxoskv.server.transport import PeerUnavailable

READ_CONCURRENCY = 16  # linearizable reads in flight while filling a page
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    entries: list[T]
    next: str | None  # the last entry's name, when more may follow


@dataclass(frozen=True)
class Session:
    id: str
    state: KeyState  # its key's: live; its value holds the TTL, its bindings the deadline
    remaining_ms: int  # until its deadline, on this member's clock (0: due to end)
    keys: list[tuple[str, str]]  # (bucket, key) of the keys bound to it

    @property
    def until(self) -> int:
        return int(self.state.bindings[UNTIL])


@dataclass(frozen=True)
class Reading:
    """How a listing reads its candidates: through a quorum until `deadline` (loop
    time), or (`local`) this member's chosen states."""

    node: Node
    local: bool
    deadline: float
    retry: bool

    async def states(self, keys: list[str]) -> list[KeyState]:
        if self.local:
            return [self.node.read_local(key) for key in keys]
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise NoQuorum("the listing's timeout passed before its page was full")
        return list(await asyncio.gather(*(self.node.read(key, remaining, self.retry)
                                           for key in keys)))

    async def first(self, keys: list[str], keep: Callable[[KeyState], bool], limit: int
                    ) -> tuple[list[tuple[str, KeyState]], bool]:
        """The first `limit` of `keys` whose state `keep`s, read in order (the first
        chunk no larger than `limit`); and whether keys follow the last one kept."""
        found: list[tuple[str, KeyState]] = []
        done = 0
        while done < len(keys):
            chunk = keys[done:done + (READ_CONCURRENCY if done else min(READ_CONCURRENCY,
                                                                        limit))]
            for key, state in zip(chunk, await self.states(chunk), strict=True):
                if keep(state):
                    found.append((key, state))
                    if len(found) == limit:
                        return found, key != keys[-1]
            done += len(chunk)
        return found, False


async def _reading(node: Node, start: str, after: str | None, local: bool, timeout: float,
                   retry: bool) -> tuple[Reading, list[str]]:
    """How to read, and the candidate keys beginning with `start` that come after the
    key `after` (None: from the first), in order."""
    deadline = asyncio.get_running_loop().time() + timeout
    keys = sorted(k for k in await _candidates(node, start, local, timeout)
                  if after is None or k > after)
    return Reading(node, local, deadline, retry), keys


def _after(start: str, after: str | None) -> str | None:
    return None if after is None else start + after


def _live(state: KeyState) -> bool:
    return state.live


def _named(found: list[tuple[str, KeyState]], more: bool, skip: int
           ) -> Page[tuple[str, KeyState]]:
    """A page of (name, state): each key without its first `skip` characters."""
    entries = [(key[skip:], state) for key, state in found]
    return Page(entries, entries[-1][0] if more else None)


async def list_keys(node: Node, bucket: str, prefix: str, after: str | None, limit: int,
                    local: bool, timeout: float, retry: bool) -> Page[tuple[str, KeyState]]:
    """A bucket's live keys beginning with `prefix`: (key without its bucket, state)."""
    reading, keys = await _reading(node, f"{bucket}/{prefix}", _after(f"{bucket}/", after),
                                   local, timeout, retry)
    return _named(*await reading.first(keys, _live, limit), len(bucket) + 1)


async def list_nodes(node: Node, after: str | None, limit: int, local: bool, timeout: float,
                     retry: bool) -> Page[tuple[str, KeyState]]:
    """Every node key ever decided, live or ended: (node name, state)."""
    reading, keys = await _reading(node, f"{NODES}/", _after(f"{NODES}/", after), local,
                                   timeout, retry)
    found, more = await reading.first(keys, lambda state: state.token > 0, limit)
    return _named(found, more, len(NODES) + 1)


async def list_sessions(node: Node, after: str | None, limit: int, local: bool,
                        timeout: float, retry: bool, bound: Callable[[str], Iterable[str]]
                        ) -> Page[Session]:
    """The open sessions; `bound(session key)`: the keys this member knows bound to it."""
    reading, keys = await _reading(node, f"{SESSIONS}/", _after(f"{SESSIONS}/", after),
                                   local, timeout, retry)
    page = _named(*await reading.first(keys, _live, limit), len(SESSIONS) + 1)
    now = node.wall_ms()
    sessions = []
    for session_id, state in page.entries:
        children = sorted(bound(f"{SESSIONS}/{session_id}"))
        held = await reading.states(children)
        still = [_split(key) for key, child in zip(children, held, strict=True)
                 if child.live and child.bindings.get(SESSION) == session_id]
        until = int(state.bindings[UNTIL])
        sessions.append(Session(session_id, state, max(0, until - now), still))
    return Page(sessions, page.next)


def _split(key: str) -> tuple[str, str]:
    bucket, _, name = key.partition("/")
    return bucket, name


async def list_buckets(node: Node, after: str | None, limit: int, local: bool,
                       timeout: float, retry: bool) -> Page[tuple[str, int | None]]:
    """The buckets holding a live key: (name, its live keys as this member's chosen
    states count them, for a local listing; None for a linearizable one)."""
    reading, candidates = await _reading(node, "", None, local, timeout, retry)
    buckets: dict[str, list[str]] = {}
    for key in candidates:
        bucket, name = _split(key)
        if name and v.BUCKET_PATTERN.fullmatch(bucket) and (after is None or bucket > after):
            buckets.setdefault(bucket, []).append(key)
    names = sorted(buckets)
    listed: list[tuple[str, int | None]] = []
    for first in range(0, len(names), READ_CONCURRENCY):
        group = names[first:first + READ_CONCURRENCY]
        found = await asyncio.gather(*(_live_keys(reading, buckets[name]) for name in group))
        for name, (holds, count) in zip(group, found, strict=True):
            if holds:
                listed.append((name, count))
                if len(listed) == limit:
                    return Page(listed, name if name != names[-1] else None)
    return Page(listed, None)


async def _live_keys(reading: Reading, keys: list[str]) -> tuple[bool, int | None]:
    """Whether one of `keys` is live, and for a local reading how many are (this
    member's chosen states); a linearizable one reads the keys this member knows live
    first, then the others, until one reads live."""
    known = [k for k in keys if reading.node.read_local(k).live]
    if reading.local:
        return bool(known), len(known)
    rest = sorted(set(keys) - set(known))
    found, _ = await reading.first(known + rest, _live, 1)
    return bool(found), None


async def _candidates(node: Node, start: str, local: bool, timeout: float) -> set[str]:
    """Keys beginning with `start`: this member's, and for a linearizable listing also
    those of as many other members as make a quorum with it (every member that answers
    in time is asked; fewer than a quorum is a NoQuorum)."""
    mine = {k for k in node.acceptor.all_keys() if k.startswith(start)}
    if local:
        return mine
    others = [name for name in node.members if name != node.name]
    needed = node.quorum - (1 if node.name in node.members else 0)
    answers = await asyncio.gather(*(_keys_at(node, name, start, timeout) for name in others))
    held = [keys for keys in answers if keys is not None]
    if len(held) < needed:
        raise NoQuorum(f"{len(held) + 1} of {len(node.members)} members listed their keys, "
                       f"{node.quorum} needed")
    for keys in held:
        mine.update(keys)
    return mine


async def _keys_at(node: Node, name: str, start: str, timeout: float) -> list[str] | None:
    link = node.links.get(name)
    if link is None or not link.connected:
        return None
    try:
        raw = await asyncio.wait_for(link.call("k", start), timeout)
    except (PeerUnavailable, TimeoutError):
        return None
    return [str(k) for k in raw if str(k).startswith(start)]
