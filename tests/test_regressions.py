"""The five violations of issue 8, each as its scripted schedule against the real drivers.

Each test runs real Nodes (with their Lifetimes and Liveness) on the
simulator's loop, network and disks, drives the schedule the issue describes
step by step on the virtual clock (no randomness decides anything that
matters: latencies and disk times are fixed, lost messages are chosen), and
checks the recorded history with the fault checker. Each runs twice: on the
current code the history is clean; with the fix reverted by its plant
(tests/sim/plants.py) the same schedule shows the violation, which proves the
schedule is the one the fix is for.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from paxoskv.core import messages
from paxoskv.core.config import Config, Member
from paxoskv.core.messages import Accept, Promise
from paxoskv.core.state import KeyState, PutIfAbsent
from paxoskv.server import validation as v
from paxoskv.server.api import delete_key
from paxoskv.server.identity import IdentityError
from paxoskv.server.lifetimes import Lifetimes, node_key, session_key
from paxoskv.server.node import Node, NoQuorum
from paxoskv.server.transport import Envelope
from tests.faults.checker import Kind, Op, Outcome, SessionLog, check, sessions_live_while_promised
from tests.sim import checks
from tests.sim.cluster import Clock, SimCluster
from tests.sim.loop import SimLoop
from tests.sim.network import MessageFaults, Network
from tests.sim.plants import planted
from tests.sim.runner import finish
from tests.sim.storage import DiskTiming

T = TypeVar("T")
NAMES = ["n1", "n2", "n3"]
BUCKET = "default"
LATENCY_S = 0.001  # every message, one way
DISK_S = 0.001  # every commit


class World:
    """Three members on the simulator, a scripted client, and the recorded history."""

    def __init__(self, skews: dict[str, float] | None = None, amnesia: bool = False) -> None:
        self.loop = SimLoop()
        self.trace: list[str] = []
        self.network = Network(random.Random(1), MessageFaults(latency_s=(LATENCY_S, LATENCY_S)),
                               self.note)
        self.network.heartbeat_s = (3.0, 3.0)  # links outlive the schedules' stalls
        clocks = {name: Clock((skews or {}).get(name, 0.0)) for name in NAMES}
        self.cluster = SimCluster(self.loop, self.network, clocks, random.Random(1),
                                  DiskTiming(fast=(DISK_S, DISK_S), slow_chance=0.0),
                                  amnesia=amnesia)
        self.history: list[Op] = []
        self.sessions: dict[str, SessionLog] = {}
        self._lost: list[Callable[[str, str, Envelope], bool]] = []
        self.network.lose = lambda src, dst, env: any(rule(src, dst, env) for rule in self._lost)

    def note(self, line: str) -> None:
        self.trace.append(f"{self.loop.time():8.3f} {line}")

    # -- running a schedule ------------------------------------------------------------

    def run(self, schedule: Callable[[World], Coroutine[Any, Any, None]]) -> list[str]:
        """Start the members, run `schedule`, stop; the anomalies the checks find."""

        async def main() -> None:
            for name in NAMES:
                self.cluster.start(name)
            await self.at(0.5)  # links up
            await schedule(self)
            await self.cluster.stop()

        try:
            self.loop.run_until_complete(main())
            finish(self.loop)
        finally:
            self.loop.close()
        alive_until = {sid: min(log.closed_at, self.cluster.earliest_end(log.until_ms))
                       for sid, log in self.sessions.items()}
        report = check(self.history, bindings_end_keys=True, sessions_alive_until=alive_until)
        return [*report.anomalies, *checks.puts_take_effect_once(self.history),
                *sessions_live_while_promised(self.sessions, alive_until),
                *self.cluster.ledger.anomalies]

    async def at(self, t: float) -> None:
        """Wait until virtual time `t` (seconds since the run began)."""
        await asyncio.sleep(max(0.0, t - self.loop.time()))

    def now_ms(self) -> int:
        """The test's clock, in ms since the epoch (the clock of an unskewed member)."""
        return int(self.cluster.now() * 1000)

    def node(self, name: str) -> Node:
        node = self.cluster.members[name].node
        assert node is not None, f"{name} is down"
        return node

    # -- faults --------------------------------------------------------------------------

    def stall(self, name: str, seconds: float) -> None:
        proc = self.cluster.stall(name)
        assert proc is not None
        self.loop.call_later(seconds, self.cluster.resume, proc)
        self.note(f"stall {name} for {seconds}s")

    def crash(self, name: str) -> None:
        self.cluster.crash(name)
        self.note(f"crash {name}")

    def wipe(self, name: str) -> None:
        self.cluster.wipe(name)
        self.note(f"wipe {name}: crash, empty disk")

    def start(self, name: str) -> str | None:
        """Start a member; why it was refused (IdentityError), if it was."""
        try:
            self.cluster.start(name)
        except IdentityError as exc:
            self.note(f"start {name}: refused ({exc})")
            return str(exc)
        self.note(f"start {name}")
        return None

    def lose(self, rule: Callable[[str, str, Any], bool]) -> Callable[[], None]:
        """Lose every message that `rule(src, dst, body)` picks, until the returned
        function is called. `body`: an acceptor message, decoded, or a forwarded
        change's request or answer (a dict)."""

        def picks(src: str, dst: str, envelope: Envelope) -> bool:
            body = messages.decode(envelope[2]) if envelope[1] == "m" else envelope[2]
            return rule(src, dst, body)

        self._lost.append(picks)
        return lambda: self._lost.remove(picks)

    # -- clients -------------------------------------------------------------------------

    async def call(self, via: str, work: Callable[[Node, Lifetimes], Coroutine[Any, Any, T]]
                   ) -> T:
        """Run `work` in member `via`'s process, as its HTTP handler would."""
        member = self.cluster.members[via]
        assert member.proc is not None and member.node and member.lifetimes, f"{via} is down"
        task = self.loop.create_task(work(member.node, member.lifetimes),
                                     context=member.proc.context.copy())
        await asyncio.wait([task])
        return task.result()

    async def op(self, via: str, kind: Kind, key: str,
                 work: Callable[[Node, Lifetimes], Coroutine[Any, Any, KeyState]],
                 answered: dict[str, bool] | None = None, **fields: Any) -> Op:
        """Run `work` as client op `kind` and record it; `answered`: answer fields that
        `work` fills in (a delete's `deleted`)."""
        invoke = self.cluster.now()
        outcome: Outcome = "ok"
        state: KeyState | None = None
        try:
            state = await self.call(via, work)
        except v.RequestError:
            outcome = "fail"
        except NoQuorum:
            outcome = "unknown"
        if state is None:
            op = Op(0, kind, key, invoke, math.inf if outcome == "unknown" else
                    self.cluster.now(), outcome, **fields)
        else:
            fields.update(answered or {})
            op = Op(0, kind, key, invoke, self.cluster.now(), "ok", found=state.live,
                    seen_value=state.value if state.live else None, token=state.token, **fields)
        self.history.append(op)
        self.note(f"{kind} {key} via {via} {fields} -> {op.outcome} token {op.token} "
                  f"{op.seen_value!r}")
        return op

    async def put(self, via: str, key: str, value: str, *, until_ms: int | None = None,
                  timeout: float = 1.0) -> Op:
        """put-if-absent; `until_ms`: a deadline, that many ms after now (test clock)."""
        wanted = {} if until_ms is None else {"until": self.now_ms() + until_ms}
        target = v.Target(BUCKET, key, "return", timeout)

        async def put(node: Node, lifetimes: Lifetimes) -> KeyState:
            bindings = await lifetimes.resolve(target, wanted) if wanted else {}
            return await node.change(target.key_id, PutIfAbsent(value, bindings), timeout,
                                     retry=False)

        until = None if until_ms is None else int(
            self.cluster.earliest_end(wanted["until"]) * 1000)
        return await self.op(via, "put", key, put, value=value, until=until)

    async def delete(self, via: str, key: str, token: int, timeout: float = 1.0) -> Op:
        """As the HTTP handler runs it (`api.delete_key`)."""
        answered: dict[str, bool] = {}

        async def delete(node: Node, _: Lifetimes) -> KeyState:
            state, answered["deleted"] = await delete_key(node, f"{BUCKET}/{key}", token,
                                                          timeout, retry=False)
            return state

        return await self.op(via, "delete", key, delete, answered, token_arg=token)

    async def get(self, via: str, key: str, timeout: float = 2.0) -> Op:
        return await self.op(via, "get", key,
                             lambda n, _: n.read(f"{BUCKET}/{key}", timeout, retry=True))

    async def open_session(self, via: str, ttl_ms: int) -> SessionLog:
        sid, until = await self.call(via, lambda _, lt: lt.open_session(ttl_ms, 1.0, False))
        log = self.sessions[sid] = SessionLog(sid, ttl_ms, until)
        self.note(f"session {sid[:8]} opened via {via}: until {until}")
        return log

    async def keep_alive(self, via: str, log: SessionLog) -> int | None:
        invoke = self.cluster.now()
        until = await self.call(via, lambda _, lt: lt.keep_alive(log.id, 1.0, retry=False))
        log.keep_alives.append((invoke, self.cluster.now(), until))
        if until is not None:
            log.until_ms = max(log.until_ms, until)
        self.note(f"keep-alive {log.id[:8]} via {via} -> {until}")
        return until

    async def close(self, via: str, log: SessionLog) -> None:
        log.closed_at = self.cluster.now()
        await self.call(via, lambda _, lt: lt.close_session(log.id, 1.0, retry=False))


def key_homed_on(name: str) -> str:
    """A client key whose home member is `name`."""
    config = Config.initial([Member(n, "", f"id-{n}") for n in NAMES])  # homes go by name
    return next(k for k in (f"k{i}" for i in range(100)) if config.home(f"{BUCKET}/{k}") == name)


PLANTED = [None, "plant"]


def _ids(plant: str | None) -> str:
    return "planted" if plant else "fixed"


# -- 1. a ballot used twice with different values ----------------------------------------


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_1_a_full_round_never_reuses_a_ballot_its_acceptor_never_saw(plant: str | None
                                                                      ) -> None:
    """The key's home n1 runs 2.5 s behind. A stand-in's expiry delete is decided by n2
    and n3 while n1's acceptor answers TooEarly (so the next promise n1 caches is one its
    acceptor never saw); put v2 uses that cached promise, n1 says TooEarly, n2 accepts,
    the message to n3 is lost: no quorum. Put v3 then runs a full round: from the local
    acceptor's promise (the bug) that is the cached ballot again, acknowledged as token
    3 by n1 and n3, and a read at n2 returns v2 as token 3."""
    key = key_homed_on("n1")

    async def schedule(w: World) -> None:
        await w.put("n1", key, "v1", until_ms=1000)  # D = 1.5 s
        await w.at(3.7)  # n2 and n3 stood in at D + 2 s; n1's clock reads 1.2
        unlose = w.lose(lambda src, dst, msg: src == "n1" and dst == "n3"
                        and isinstance(msg, Accept) and msg.state.value == "v2")
        await w.put("n1", key, "v2", timeout=0.25)
        unlose()
        w.stall("n2", 0.8)  # its answers come late: the rounds go to n1 and n3
        await w.at(4.6)  # n1's clock has passed D (and its own sweep ran)
        await w.put("n1", key, "v3")
        await w.at(5.5)
        await w.get("n2", key)
        await w.get("n1", key)

    anomalies = _run_under(plant and "ballot-from-acceptor", schedule, skews={"n1": -2.5})
    _assert_outcome(plant, anomalies, "generation 3 decided twice")


# -- 2. a forwarded change applied twice ------------------------------------------------


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_2_a_put_forwarded_to_a_stalled_home_takes_effect_once(plant: str | None) -> None:
    """The home n1 stalls for 2.1 s; put v is acknowledged as token 1 through n2 (which
    hedged); delete(1) is acknowledged through n3; n1 resumes and runs the put it held:
    without the put's id (the bug) v comes back as token 3."""
    key = key_homed_on("n1")

    async def schedule(w: World) -> None:
        await w.at(1.0)
        w.stall("n1", 2.1)
        await w.put("n2", key, "v")
        await w.delete("n3", key, 1)
        await w.at(3.5)  # n1 has resumed and run what it held
        await w.get("n2", key)
        await w.get("n3", key)

    anomalies = _run_under(plant and "put-runs-twice", schedule)
    _assert_outcome(plant, anomalies, "put of 'v' took effect more than once")


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_2_a_delete_of_a_generation_not_yet_made_takes_effect_at_most_once(
        plant: str | None) -> None:
    """Found by a fault run. delete(1) of a key never written goes to its stalled home
    n1 through n2, which hedges: decided on the absent key, it answers deleted: false.
    A put then makes generation 1; n1 resumes and runs the delete it held. Without the
    delete's id (the bug) that run ends generation 1, which no delete answered
    deleted: true, so a get sees a tombstone that no delete made."""
    key = key_homed_on("n1")

    async def schedule(w: World) -> None:
        await w.at(1.0)
        w.stall("n1", 2.1)
        await w.delete("n2", key, 1)
        await w.put("n3", key, "v")
        await w.at(3.5)  # n1 has resumed and run what it held
        await w.get("n2", key)
        await w.get("n3", key)

    anomalies = _run_under(plant and "delete-runs-twice", schedule)
    _assert_outcome(plant, anomalies, "no delete invoked before it could have ended")


# -- 3. a member restarted on an empty data directory -------------------------------------


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_3_a_member_restarted_on_a_wiped_disk_is_refused(plant: str | None) -> None:
    """Put v1 is acknowledged as token 1 (ZERO, accepted by n1 and n2; n3 is down); n1
    restarts on an empty disk while n2 is down and n3 is back. It must be refused (it
    would vote with none of its promises); let in (the bug), put v2 is acknowledged as
    token 1 too (ZERO, accepted by n1 and n3)."""
    key = key_homed_on("n1")
    refused: list[str] = []

    async def schedule(w: World) -> None:
        w.crash("n3")
        await w.put("n1", key, "v1")
        w.crash("n2")
        w.start("n3")
        w.wipe("n1")
        await w.at(1.0)
        if (why := w.start("n1")) is not None:
            refused.append(why)
        await w.at(1.5)  # links up
        await w.put("n3" if refused else "n1", key, "v2")
        w.start("n2")
        await w.at(3.0)
        for name in ("n2", "n3"):
            await w.get(name, key)

    anomalies = _run_under(plant and "wiped-votes", schedule)
    _assert_outcome(plant, anomalies, "generation 1 decided twice")
    if plant is None:
        assert refused and "it may rejoin only as a new member" in refused[0], refused
    else:
        assert not refused


# -- 4. a change built on a deadline's tombstone drops its guard ---------------------------


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_4_a_key_never_ends_before_a_majority_of_clocks_reach_its_deadline(
        plant: str | None) -> None:
    """n3's clock runs 8 s fast and its link to the key's home n1 is down. Put v1 lives
    until D = 10.5 s. n3 proposes its expiry early: only n3 accepts the tombstone (the
    others' clocks are 8 s short). Put v2 with a 1 s deadline, through n1, builds on that
    tombstone (n2's promise is lost), so it is accepted by n3 alone; v2's own expiry,
    built on it, is a tombstone guarded only by v2's deadline (the bug): n2 and n3
    choose it at 4 s, and a read at 6 s says the key is gone, 4.5 s before D."""
    key = key_homed_on("n1")

    async def schedule(w: World) -> None:
        w.network.heartbeat_s = (1.0, 1.0)
        await w.put("n1", key, "v1", until_ms=10_000)  # D = 10.5 s
        w.network.cut([("n3", "n1")])  # n3 -> n1 drops at 1.5 s (heartbeat)
        await w.at(3.0)  # n3's clock passed D at 2.5 s: it tried to expire the key
        unlose = w.lose(lambda src, dst, msg: src == "n2" and dst == "n1"
                        and isinstance(msg, Promise))
        await w.put("n1", key, "v2", until_ms=1000)  # until 4.0 s
        unlose()
        await w.at(6.0)
        await w.get("n2", key)
        w.network.heal([("n3", "n1")])
        await w.at(11.0)
        await w.get("n1", key)

    anomalies = _run_under(plant and "delete-drops-guard", schedule, skews={"n3": 8.0})
    _assert_outcome(plant, anomalies, "generation 1 reported gone")


# -- 5. a renewal that moves a deadline back ------------------------------------------------


@pytest.mark.parametrize("plant", PLANTED, ids=_ids)
def test_5_a_stale_keep_alive_never_moves_a_session_deadline_back(plant: str | None) -> None:
    """A session with a 4 s TTL. Its home stalls; a keep-alive through another member is
    acknowledged (hedged) with deadline +4000 ms; the next one, a second later, with
    +5000 (its forward to the home is lost). The home resumes and runs the first renewal
    it held: moved back to +4000 (the bug), the session ends while a client holds a
    later deadline."""

    async def schedule(w: World) -> None:
        log = await w.open_session("n1", 4000)
        home = w.node("n1").home(session_key(log.id))
        via = next(n for n in NAMES if n != home)
        await w.at(1.0)
        w.stall(home, 1.5)
        await w.keep_alive(via, log)  # until 5.0 s
        await w.at(2.0)
        unlose = w.lose(lambda src, dst, body: src == via and dst == home
                        and isinstance(body, dict) and body.get("change", {}).get("op") == "renew")
        await w.keep_alive(via, log)  # until 6.0 s
        unlose()
        await w.at(5.5)
        await w.keep_alive(via, log)
        await w.at(7.0)
        await w.close(via, log)

    anomalies = _run_under(plant and "renew-backwards", schedule)
    _assert_outcome(plant, anomalies, "a keep-alive found it gone")


# -- found later: a peer that reconnects late ends a restarted member ---------------------


def test_a_restarted_member_is_not_ended_by_a_peer_whose_link_is_still_down() -> None:
    """n3 crashes and n1 and n2 end its incarnation; n3 restarts and starts a new one
    through n1 while n2 still cannot reach it (a CI run saw this: n2's link came back a
    little late). n2's wait was measured from when it lost the old incarnation, so it
    ended the new one at once, and keys bound to n3 then failed ("not alive")."""
    key = node_key("n3")
    seen: list[KeyState] = []

    async def schedule(w: World) -> None:
        w.crash("n3")
        w.network.cut([("n2", "n3")])
        await w.at(4.0)  # both judged n3 down at 2.5 s
        assert not (await w.call("n1", lambda n, _: n.read(key, 1.0, retry=True))).live
        w.start("n3")
        for t in (4.5, 5.5, 6.5, 7.5, 8.5):  # n2 cannot reach n3 until 4.5 s
            await w.at(t)
            seen.append(await w.call("n1", lambda n, _: n.read(key, 1.0, retry=True)))
            if t == 4.5:
                w.network.heal([("n2", "n3")])

    assert not World().run(schedule)
    assert all(s.live for s in seen) and len({s.token for s in seen}) == 1, seen


def _run_under(plant: str | None, schedule: Callable[[World], Coroutine[Any, Any, None]],
               **world: Any) -> list[str]:
    with planted(plant):
        w = World(amnesia=plant == "wiped-votes", **world)
        anomalies = w.run(schedule)
    print("\n".join(w.trace))
    return anomalies


def _assert_outcome(plant: str | None, anomalies: list[str], expected: str) -> None:
    if plant is None:
        assert not anomalies, anomalies
    else:
        assert any(expected in a for a in anomalies), anomalies
