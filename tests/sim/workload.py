"""Random clients that call the node objects as the HTTP handlers do, and record it.

A client is attached to one node (failing over to another while it is down,
or, with `Mix.roam`, sending some requests to any member, as through a load
balancer).
Each request runs as a task in the node's process, as a request handler would:
a stalled node answers late, a crashed one never (the op is then unknown).
Times come from the test's clock (`SimCluster.now`), not the nodes' skewed ones.

Recorded for tests/faults/checker.py: puts (with every binding kind),
conditional deletes (through the HTTP handler's own `delete_key`) of tokens seen or of
generations not made yet, compare-and-swaps (through the HTTP handler's
own `swap_value`, from the value last seen, or another, with or without its token),
linearizable reads and watches (as gets).
Recorded apart: local reads (stale by design, so outside the real-time rule)
and each session's deadlines, close and keep-alive answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from paxoskv.core.config import home_of
from paxoskv.core.state import KeyState, PutIfAbsent
from paxoskv.server import validation as v
from paxoskv.server.api import delete_key, swap_value
from paxoskv.server.lifetimes import Lifetimes
from paxoskv.server.node import Node, NoQuorum
from tests.faults.checker import Kind, Op, Outcome, SessionLog
from tests.sim.cluster import Member, SimCluster

T = TypeVar("T")
BUCKET = "default"
TTLS_MS = [1000, 1500, 2000, 3000, 5000]
TIMEOUTS_S = [0.5, 1.0, 2.0, 5.0]
THINK_S = 0.3  # a client waits up to this long between requests


@dataclass(frozen=True)
class Mix:
    """What the clients do: over how many keys, which share of requests are puts,
    gets, deletes, watches and swaps (the rest are local reads), which share of puts
    carry a deadline, and how far ahead (ms)."""

    keys: int = 4
    home: str | None = None  # only keys whose home is this member
    put: float = 0.35
    get: float = 0.25
    delete: float = 0.15
    watch: float = 0.1
    swap: float = 0.08
    until: float = 0.25
    until_ms: tuple[int, int] = (200, 4000)
    roam: float = 0.0  # the chance that a request goes to any member (a load balancer)
    sessions: int = 2  # how many of the clients also keep sessions
    session: float = 0.2  # the share of puts bound to the client's session, if it has one

    def names(self, members: list[str]) -> list[str]:
        """The client keys (`keys` of them)."""
        candidates = (f"k{i}" for i in range(1000))
        if self.home is not None:
            candidates = (k for k in candidates if home_of(members, f"{BUCKET}/{k}") == self.home)
        return list(itertools.islice(candidates, self.keys))


@dataclass(frozen=True)
class LocalRead:
    process: int
    key: str
    invoke: float
    complete: float
    found: bool
    token: int
    value: Any


@dataclass
class Recorder:
    history: list[Op] = field(default_factory=list)
    local_reads: list[LocalRead] = field(default_factory=list)
    sessions: dict[str, SessionLog] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # unexpected exceptions from node code


class Down(Exception):
    """No node is up to take the request: nothing was sent."""


class Crashed(Exception):
    """The node died while serving the request: its outcome is unknown."""


Work = Callable[[Node, Lifetimes], Coroutine[Any, Any, T]]


class Client:
    def __init__(self, process: int, home: str, cluster: SimCluster, rng: random.Random,
                 recorder: Recorder, mix: Mix = Mix()) -> None:
        self.process = process
        self.mix = mix
        self.keys = mix.names(cluster.names)
        self.home = home
        self.cluster = cluster
        self.rng = rng
        self.rec = recorder
        self.tokens: dict[str, int] = {}  # key -> the last token seen
        self.values: dict[str, Any] = {}  # key -> the last value seen (None: absent)
        self.session: SessionLog | None = None
        self._n = 0

    # -- calling a node ------------------------------------------------------------

    def _member(self) -> Member | None:
        member = self.cluster.members[self.home]
        if member.proc is None or (self.mix.roam and self.rng.random() < self.mix.roam):
            up = [m for m in self.cluster.members.values() if m.proc is not None]
            return self.rng.choice(up) if up else None
        return member

    async def on_node(self, work: Work[T], member: Member | None = None) -> T:
        """Run `work` in a node's process, as its HTTP handler would."""
        member = member or self._member()
        if member is None or member.proc is None:
            raise Down
        assert member.node is not None and member.lifetimes is not None
        task = self.cluster.loop.create_task(work(member.node, member.lifetimes),
                                             context=member.proc.context.copy())
        await asyncio.wait([task])
        if task.cancelled():
            raise Crashed
        return task.result()

    async def _op(self, kind: Kind, key: str, work: Work[KeyState], member: Member | None = None,
                  answered: dict[str, Any] | None = None, **fields: Any) -> KeyState | None:
        """One recorded operation on a client key; the state it returned, if ok.
        `answered`: fields of the answer beside the state, which `work` fills in."""
        invoke = self.cluster.now()
        outcome: Outcome = "ok"
        state: KeyState | None = None
        try:
            state = await self.on_node(work, member)
        except Down:
            return None
        except v.RequestError:
            outcome = "fail"  # e.g. invalid_value: a dead binding; nothing was decided
        except (NoQuorum, Crashed):
            outcome = "unknown"
        except Exception as exc:
            self.rec.errors.append(f"p{self.process} {kind} {key}: {exc!r}")
            outcome = "unknown"
        if state is None:
            complete = math.inf if outcome == "unknown" else self.cluster.now()
            self.rec.history.append(Op(self.process, kind, key, invoke, complete, outcome,
                                       **fields))
            return None
        fields.update(answered or {})
        self.rec.history.append(Op(
            self.process, kind, key, invoke, self.cluster.now(), "ok", found=state.live,
            seen_value=state.value if state.live else None, token=state.token, **fields))
        self.tokens[key] = state.token
        self.values[key] = state.value if state.live else None
        return state

    # -- the workload ------------------------------------------------------------------

    async def run(self, stop_at: float) -> None:
        mix = self.mix
        while self.cluster.now() < stop_at:
            key = self.rng.choice(self.keys)
            roll = self.rng.random()
            timeout = self.rng.choice(TIMEOUTS_S)
            if roll < mix.put:
                await self.put(key, timeout)
            elif roll < mix.put + mix.get:
                await self.get(key, timeout, retry=self.rng.random() < 0.2)
            elif roll < mix.put + mix.get + mix.delete:
                await self.delete(key, timeout)
            elif roll < mix.put + mix.get + mix.delete + mix.watch:
                await self.watch(key, self.rng.uniform(0.1, 2.0))
            elif roll < mix.put + mix.get + mix.delete + mix.watch + mix.swap:
                await self.swap(key, timeout)
            else:
                await self.read_local(key)
            await asyncio.sleep(self.rng.uniform(0.0, THINK_S))

    async def get(self, key: str, timeout: float, retry: bool,
                  member: Member | None = None) -> None:
        await self._op("get", key, lambda n, _: n.read(f"{BUCKET}/{key}", timeout, retry),
                       member)

    async def watch(self, key: str, wait: float) -> None:
        """A watch answers with a linearizable read: recorded as a get."""
        token = self.tokens.get(key, 0)

        async def watch(node: Node, _: Lifetimes) -> KeyState:
            state, _changed = await node.watch(f"{BUCKET}/{key}", token, wait)
            return state

        await self._op("get", key, watch)

    async def put(self, key: str, timeout: float) -> None:
        self._n += 1
        value = f"p{self.process}-{self._n}"
        wanted: dict[str, Any] = {}
        until = session = None
        roll = self.rng.random()
        share = self.mix.until
        if roll < share:
            wanted["until"] = int(self.cluster.now() * 1000) + self.rng.randrange(
                *self.mix.until_ms)
            # The checker's deadline: when a quorum of clocks first reads `until`.
            until = int(self.cluster.earliest_end(wanted["until"]) * 1000)
        elif roll < (share := share + self.mix.session) and self.session is not None:
            session = wanted["pid"] = self.session.id
        elif roll < share + 0.1:
            wanted["key"] = self.rng.choice([k for k in self.keys if k != key])
        elif roll < share + 0.2:
            wanted["node"] = self.rng.choice(self.cluster.names)
        target = v.Target(BUCKET, key, "return", timeout)

        async def put(node: Node, lifetimes: Lifetimes) -> KeyState:
            bindings = await lifetimes.resolve(target, wanted) if wanted else {}
            return await node.change(target.key_id, PutIfAbsent(value, bindings), timeout,
                                     retry=False)

        await self._op("put", key, put, value=value, until=until, session=session,
                       bound="key" in wanted or "node" in wanted)

    async def delete(self, key: str, timeout: float) -> None:
        """A delete as the HTTP handler runs it, of the generation last seen (the live
        one before a tombstone seen), or sometimes of the next live generation, one
        not made yet: a client may name any token."""
        seen = self.tokens.get(key, 0)
        token = seen if seen % 2 else max(1, seen - 1)
        if self.rng.random() < 0.2:
            token = seen + 1 + seen % 2
        answered: dict[str, Any] = {}

        async def delete(node: Node, _: Lifetimes) -> KeyState:
            state, answered["deleted"] = await delete_key(node, f"{BUCKET}/{key}", token,
                                                          timeout, retry=False)
            return state

        await self._op("delete", key, delete, answered=answered, token_arg=token)

    async def swap(self, key: str, timeout: float) -> None:
        """A compare-and-swap to a new value of its own, as the HTTP handler runs it:
        mostly from the value last seen (a stale one, maybe), sometimes from another
        value this client put, sometimes also requiring the token last seen."""
        self._n += 1
        value = f"p{self.process}-{self._n}"
        expected = self.values.get(key)
        if expected is None or self.rng.random() < 0.15:
            expected = f"p{self.process}-{self.rng.randint(1, self._n)}"
        token = self.tokens.get(key) if self.rng.random() < 0.3 else None
        answered: dict[str, Any] = {}

        async def swap(node: Node, _: Lifetimes) -> KeyState:
            state, answered["swapped"] = await swap_value(node, f"{BUCKET}/{key}", expected,
                                                          value, token, timeout, retry=False)
            return state

        await self._op("swap", key, swap, answered=answered, value=value, expected=expected,
                       token_arg=token or 0)

    async def read_local(self, key: str) -> None:
        invoke = self.cluster.now()

        async def read(node: Node, _: Lifetimes) -> KeyState:
            return node.read_local(f"{BUCKET}/{key}")

        try:
            state = await self.on_node(read)
        except (Down, Crashed):
            return
        self.rec.local_reads.append(LocalRead(self.process, key, invoke, self.cluster.now(),
                                              state.live, state.token,
                                              state.value if state.live else None))

    # -- sessions ----------------------------------------------------------------------

    async def sessions(self, stop_at: float) -> None:
        """Open sessions one after another; keep each alive at TTL/3 for a while,
        then close it or abandon it (so it expires)."""
        while self.cluster.now() < stop_at:
            await asyncio.sleep(self.rng.uniform(0.0, 2.0))
            log = await self.open_session(self.rng.choice(TTLS_MS))
            if log is None:
                continue
            end = min(stop_at, self.cluster.now() + self.rng.uniform(1.0, 12.0))
            while self.cluster.now() < end:
                await asyncio.sleep(log.ttl_ms / 3000)
                if not await self.keep_alive(log):
                    break
            if self.session is log and (self.cluster.now() >= stop_at or self.rng.random() < 0.6):
                await self.close(log)
            self.session = None

    async def open_session(self, ttl: int) -> SessionLog | None:
        try:
            sid, until = await self.on_node(lambda _, lt: lt.open_session(ttl, 1.0, False))
        except (Down, Crashed, NoQuorum):
            return None
        log = self.session = self.rec.sessions[sid] = SessionLog(sid, ttl, until)
        return log

    async def keep_alive(self, log: SessionLog) -> bool:
        """False once the session is found dead."""
        invoke = self.cluster.now()
        try:
            until = await self.on_node(lambda _, lt: lt.keep_alive(log.id, 1.0, retry=False))
        except (Down, Crashed, NoQuorum):
            return True  # unknown: try again at the next tick
        log.keep_alives.append((invoke, self.cluster.now(), until))
        if until is None:
            self.session = None
            return False
        log.until_ms = max(log.until_ms, until)
        return True

    async def close(self, log: SessionLog) -> None:
        log.closed_at = min(log.closed_at, self.cluster.now())
        self.session = None
        with contextlib.suppress(Down, Crashed, NoQuorum):
            await self.on_node(lambda _, lt: lt.close_session(log.id, 1.0, retry=False))


async def final_reads(cluster: SimCluster, recorder: Recorder, mix: Mix = Mix()) -> None:
    """After the faults: every key read through every node (processes 100+)."""
    for i, name in enumerate(cluster.names):
        reader = Client(100 + i, name, cluster, random.Random(i), recorder, mix)
        for key in reader.keys:
            await reader.get(key, 10.0, retry=True, member=cluster.members[name])
