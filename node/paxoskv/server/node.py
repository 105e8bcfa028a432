"""The node: drives the pure core over the network and the disk.

Routing: every change of a key goes to the key's *home* member, which queues
concurrent changes per key and decides them together in one CASPaxos round
(so contention stays live and cheap). If the home is unreachable, the node
that got the request proposes itself, with full rounds and randomised
backoff. Reads try a one-round-trip quorum read first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paxoskv.core import messages
from paxoskv.core.acceptor import Acceptor, Write
from paxoskv.core.ballot import ZERO, Ballot, first_ballot
from paxoskv.core.messages import Inspect, Observed, Promise, Reply, Request
from paxoskv.core.proposer import Conflict, Decided, Outgoing, Premature, Proposal, QuorumRead
from paxoskv.core.state import Change, KeyState, Read, apply_all, change_from_json
from paxoskv.server.storage import Storage
from paxoskv.server.transport import PeerLink, PeerUnavailable

log = logging.getLogger("paxoskv.node")

MAX_CACHED_PROMISES = 10_000


class NoQuorum(Exception):
    """No quorum answered in time. The change may or may not have been decided."""


@dataclass
class Stats:
    fast_path: int = 0
    cached_promise: int = 0
    full_round: int = 0
    conflicts: int = 0
    quorum_reads: int = 0
    forwarded: int = 0


@dataclass
class _Waiter:
    change: Change
    future: asyncio.Future[KeyState]
    deadline: float
    retry: bool


@dataclass
class Node:
    name: str
    members: Sequence[str]  # every member's name, this node's included
    acceptor: Acceptor
    storage: Storage
    boot: int
    links: dict[str, PeerLink] = field(default_factory=dict)
    attempt_timeout: float = 1.0
    clock: Callable[[], float] = time.monotonic  # for timeouts
    wall_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))  # deadlines
    stats: Stats = field(default_factory=Stats)
    # Called with (key, state) whenever this node's acceptor records a new state.
    observers: list[Callable[[str, KeyState], None]] = field(default_factory=list)
    # Test-only ways to break safety, to show that the fault tests notice (see main.py).
    breaks: frozenset[str] = frozenset()
    # Test-only named failpoints: name -> probability of crashing there (see main.py).
    failpoints: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members = sorted(self.members)
        self.quorum = len(self.members) // 2 + 1
        # Promises this proposer holds: key -> (ballot, chosen state).
        self._promises: dict[str, tuple[Ballot, KeyState]] = {}
        self._queues: dict[str, list[_Waiter]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, list[asyncio.Future[None]]] = {}

    # -- membership view ------------------------------------------------------

    def home(self, key: str) -> str:
        return self.members[zlib.crc32(key.encode()) % len(self.members)]

    def reachable(self) -> int:
        return 1 + sum(link.connected for link in self.links.values())

    def has_quorum(self) -> bool:
        return self.reachable() >= self.quorum

    # -- the acceptor, local and remote --------------------------------------

    def accept_request(self, msg: Request) -> tuple[Reply, Write | None]:
        """This node's acceptor answers; the caller must persist the write before replying."""
        reply, write = self.acceptor.handle(msg, self.wall_ms())
        if "promise-without-accepted" in self.breaks and isinstance(reply, Promise):
            reply = Promise(reply.key, reply.ballot, None, KeyState())  # forget what it took
        if write is not None:
            key, record = write
            for observe in self.observers:
                observe(key, record.state)
            for waiter in self._watchers.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)
        return reply, write

    def failpoint(self, name: str) -> None:
        """Crash here (as kill -9 would: no flush, no goodbye) if the test asked for it."""
        chance = self.failpoints.get(name)
        if chance is not None and random.random() < chance:
            log.warning("failpoint: crashing", extra={"node": f"{self.name} at {name}"})
            os._exit(86)

    def _send(self, dest: str, msg: Request) -> asyncio.Future[Reply]:
        """Send an acceptor request; the future holds the reply."""
        if dest == self.name:
            # This node's own acceptor: its reply, too, waits for the disk.
            reply, write = self.accept_request(msg)
            durable = self.storage.write([write]) if write else self.storage.flushed()
            return _mapped(durable, lambda _: reply)
        return _mapped(self.links[dest].call("m", messages.encode(msg)), messages.decode)

    # -- client operations ------------------------------------------------------

    async def change(self, key: str, change: Change, timeout: float, retry: bool) -> KeyState:
        """Apply `change` by consensus and return the key's resulting state."""
        deadline = self.clock() + timeout
        home = self.home(key)
        link = self.links.get(home)
        if link is not None and link.connected:
            try:
                return await self._forward(link, key, change, deadline, retry)
            except (TimeoutError, PeerUnavailable):
                log.debug("home %s did not answer for %s; proposing here", home, key)
        return await self.submit(key, change, deadline - self.clock(), retry)

    async def read(self, key: str, timeout: float, retry: bool) -> KeyState:
        """A linearizable read."""
        if self.has_quorum():
            state = await self._quorum_read(key, min(timeout, self.attempt_timeout))
            if state is not None:
                self.stats.quorum_reads += 1
                return state
        return await self.change(key, Read(), timeout, retry)

    def read_local(self, key: str) -> KeyState:
        """This acceptor's latest accepted state: possibly stale."""
        return self.acceptor.record(key).state

    async def watch(self, key: str, token: int, timeout: float) -> tuple[KeyState, bool]:
        """Wait until the key's fencing token differs from `token`.

        Returns the key's state (read linearizably) and whether it changed. A
        change this node's acceptor sees wakes the watcher at once; it also
        re-reads every second, for changes decided without this node.
        """
        deadline = self.clock() + timeout
        while True:
            remaining = deadline - self.clock()
            state = await self.read(key, max(remaining, self.attempt_timeout), retry=False)
            if state.token != token:
                return state, True
            remaining = deadline - self.clock()
            if remaining <= 0:
                return state, False
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._watchers.setdefault(key, []).append(waiter)
            try:
                await wait_until(waiter, min(remaining, 1.0))
            finally:
                waiting = self._watchers.get(key)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._watchers[key]

    async def _forward(
        self, link: PeerLink, key: str, change: Change, deadline: float, retry: bool
    ) -> KeyState:
        self.stats.forwarded += 1
        remaining = max(deadline - self.clock(), 0.001)
        body = {"key": key, "change": change.to_json(), "timeout": remaining, "retry": retry}
        # A stalled home must not hold the request hostage: after two
        # attempts' worth of silence, propose here instead.
        call = link.call("p", body)
        if not await wait_until(call, min(remaining, 2 * self.attempt_timeout)):
            raise TimeoutError
        reply = call.result()
        if "error" in reply:
            raise NoQuorum(reply["error"])
        return KeyState.from_json(reply["state"])

    async def handle_forwarded(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            state = await self.submit(body["key"], change_from_json(body["change"]),
                                      float(body["timeout"]), bool(body["retry"]))
        except NoQuorum as exc:
            return {"error": str(exc)}
        return {"state": state.to_json()}

    # -- per-key queues ---------------------------------------------------------

    async def submit(self, key: str, change: Change, timeout: float, retry: bool) -> KeyState:
        """Queue a change; concurrent changes of one key share one round."""
        future: asyncio.Future[KeyState] = asyncio.get_running_loop().create_future()
        deadline = self.clock() + timeout
        self._queues.setdefault(key, []).append(_Waiter(change, future, deadline, retry))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key))
        if not await wait_until(future, timeout):
            future.cancel()  # the worker skips it from now on
            raise NoQuorum(f"no quorum answered within {timeout * 1000:.0f} ms; "
                           "the change may or may not have been decided")
        return future.result()

    async def _work(self, key: str) -> None:
        backoff = 0.05
        try:
            while batch := [w for w in self._queues.pop(key, []) if not w.future.done()]:
                deadline = max(w.deadline for w in batch)
                changes = [w.change for w in batch]
                try:
                    decided = await self._decide(key, _compose(changes), deadline)
                except NoQuorum as exc:
                    now = self.clock()
                    again = [w for w in batch if w.retry and w.deadline > now]
                    for w in batch:
                        if w not in again and not w.future.done():
                            w.future.set_exception(NoQuorum(str(exc)))
                    if again:
                        self._queues.setdefault(key, [])[:0] = again
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                        backoff = min(backoff * 2, 1.0)
                    continue
                for w, state in zip(batch, apply_all(decided.prior, changes), strict=True):
                    if not w.future.done():
                        w.future.set_result(state)
        finally:
            del self._workers[key]

    # -- consensus rounds ---------------------------------------------------------

    async def _decide(
        self, key: str, change: Callable[[KeyState], KeyState], deadline: float
    ) -> Decided:
        backoff = 0.002
        above: Ballot | None = None  # the highest promise a conflict showed us
        while True:
            if not self.has_quorum():
                raise NoQuorum(f"{self.reachable()} of {len(self.members)} members reachable, "
                               f"{self.quorum} needed")
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise NoQuorum("deadline passed under contention")
            proposal = self._proposal(key, change, above)
            outcome = await self._drive(proposal, min(remaining, self.attempt_timeout))
            if isinstance(outcome, Decided):
                if outcome.promised is not None:
                    self._remember_promise(key, outcome.promised, outcome.state)
                return outcome
            if outcome is None:
                raise NoQuorum("no quorum answered in time")
            if isinstance(outcome, Premature):
                # A deadline that passed on our clock has not on a majority's
                # yet: wait for their clocks (a "not before" is never early).
                wait = (outcome.not_before - self.wall_ms()) / 1000
                await asyncio.sleep(max(wait, backoff * random.random()))
                backoff = min(backoff * 2, 0.5)
                continue
            self.stats.conflicts += 1
            above = outcome.promised if above is None else max(above, outcome.promised)
            await asyncio.sleep(backoff * random.random())
            backoff = min(backoff * 2, 0.5)

    def _remember_promise(self, key: str, ballot: Ballot, state: KeyState) -> None:
        # Keep the most recently decided keys only: memory stays bounded and
        # the garbage collector does not scan one entry per key.
        self._promises[key] = (ballot, state)
        if len(self._promises) > MAX_CACHED_PROMISES:
            del self._promises[next(iter(self._promises))]

    def _proposal(self, key: str, change: Callable[[KeyState], KeyState],
                  above: Ballot | None) -> Proposal:
        def make(ballot: Ballot, prepared: KeyState | None) -> Proposal:
            next_promise = Ballot(ballot.round + 1, self.boot, self.name)
            return Proposal(key, change, ballot, self.members, self.quorum,
                            prepared=prepared, next_promise=next_promise)

        cached = self._promises.pop(key, None)
        if cached is not None and above is None:
            self.stats.cached_promise += 1
            return make(*cached)
        if above is None and self.home(key) == self.name and not self.acceptor.has_record(key):
            self.stats.fast_path += 1
            return make(ZERO, KeyState())
        self.stats.full_round += 1
        promised = self.acceptor.record(key).promised
        if promised is None or (above is not None and above > promised):
            promised = above
        return make(first_ballot(self.name, self.boot, promised), None)

    async def _drive(self, proposal: Proposal, timeout: float
                     ) -> Decided | Conflict | Premature | None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def dispatch(outgoing: Outgoing) -> None:
            for dest, msg in outgoing:
                try:
                    future = self._send(dest, msg)
                except PeerUnavailable:
                    continue
                future.add_done_callback(functools.partial(on_reply, dest))

        def on_reply(sender: str, future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            dispatch(proposal.receive(sender, future.result()))
            if proposal.outcome is not None and not done.done():
                done.set_result(None)

        outgoing = proposal.start()
        if proposal.ballot == ZERO:
            # The ZERO ballot may be used once per key: record its use on this
            # node's disk before any peer can see it. (Sending in parallel is not
            # safe, even with a per-boot ballot: a home that lost an unsynced
            # accept which peers had chosen could start over on a higher one.)
            mine = [(d, m) for d, m in outgoing if d == self.name]
            outgoing = [(d, m) for d, m in outgoing if d != self.name]
            for dest, msg in mine:
                dispatch(proposal.receive(dest, await self._send(dest, msg)))
            if proposal.outcome is not None:
                return proposal.outcome
        dispatch(outgoing)
        await wait_until(done, timeout)
        return proposal.outcome

    async def _quorum_read(self, key: str, timeout: float) -> KeyState | None:
        reader = QuorumRead(key, self.members, self.quorum)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_reply(sender: str, future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            reply = future.result()
            if isinstance(reply, Observed):
                reader.receive(sender, reply)
            if reader.done and not done.done():
                done.set_result(None)

        for dest in self.members:
            try:
                future = self._send(dest, Inspect(key))
            except PeerUnavailable:
                continue
            future.add_done_callback(functools.partial(on_reply, dest))
        await wait_until(done, timeout)
        return reader.result

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()
        for task in list(self._workers.values()):
            task.cancel()


def _mapped(source: asyncio.Future[Any], fn: Callable[[Any], Any]) -> asyncio.Future[Any]:
    """A future of `fn(source's result)`, without a task."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            out.set_result(fn(f.result()))

    source.add_done_callback(done)
    return out


async def wait_until(future: asyncio.Future[Any], timeout: float) -> bool:
    """Wait at most `timeout` seconds for `future`, without cancelling it; True if done.

    Cheaper than asyncio.wait_for, which wraps every wait in a task.
    """
    if not future.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(max(timeout, 0.0), wake)
        future.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
    return future.done()


def _compose(changes: list[Change]) -> Callable[[KeyState], KeyState]:
    def apply(state: KeyState) -> KeyState:
        for change in changes:
            state = change.apply(state)
        return state

    return apply
