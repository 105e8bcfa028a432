"""Listing a bucket's keys by prefix, a page at a time (POST /v1/list).

Two consistencies, as for a get:

- linearizable (the default): the candidate keys are the union of the keys held by
  this member and by enough others to make a quorum. A key chosen before the listing
  started was accepted by a quorum, which meets that one, so it is a candidate. Each
  candidate is then read linearizably, in key order, until the page is full: every
  entry listed is the key's latest decided state when it was read, and no key that
  was live before the listing began and stayed live is left out. The page is not a
  snapshot of one instant: keys are read one after another.
- local: this member's chosen states, with no round trip: never a state that was
  merely accepted, but possibly stale, and a key decided without this member may be
  missing.

Pages: `after` is the last key of the previous page (its `next`); keys are listed in
code-point order. Reserved keys (node keys, sessions, the configuration register)
live outside every bucket and are never listed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from paxoskv.core.state import KeyState
from paxoskv.server.node import Node, NoQuorum
from paxoskv.server.transport import PeerUnavailable

READ_CONCURRENCY = 16  # linearizable reads in flight while filling a page


@dataclass(frozen=True)
class Page:
    entries: list[tuple[str, KeyState]]  # (key name without its bucket, state), live only
    next: str | None  # the last key listed, when more may follow


async def list_keys(node: Node, bucket: str, prefix: str, after: str | None, limit: int,
                    local: bool, timeout: float, retry: bool) -> Page:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    start = f"{bucket}/{prefix}"
    keys = sorted(k for k in await _candidates(node, start, local, timeout)
                  if after is None or k > f"{bucket}/{after}")
    entries: list[tuple[str, KeyState]] = []
    skip = len(bucket) + 1
    for first in range(0, len(keys), READ_CONCURRENCY):
        chunk = keys[first:first + READ_CONCURRENCY]
        if local:
            states = [node.read_local(key) for key in chunk]
        else:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NoQuorum("the listing's timeout passed before its page was full")
            states = await asyncio.gather(*(node.read(key, remaining, retry)
                                            for key in chunk))
        for key, state in zip(chunk, states, strict=True):
            if state.live:
                entries.append((key[skip:], state))
                if len(entries) == limit:
                    more = key != keys[-1]
                    return Page(entries, key[skip:] if more else None)
    return Page(entries, None)


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
