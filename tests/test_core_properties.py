"""A simulated network around the real consensus core, checked against a "chosen" oracle.

3-5 acceptors and 2-3 proposers (one per node, on the first nodes) exchange messages in
wire form through a multiset of messages in flight. Hypothesis delivers, drops and
duplicates any of them in any order, crashes and restarts nodes, and lets proposers give
up on a round (the driver's timeout). Proposers choose ballots with the driver's own
`core.proposer.Ballots` (cached promises, the ZERO ballot at a key's home, full rounds
above a conflict's promise), so a bug in the real ballot choice shows here; a restarted
proposer gets a new `Ballots` with the next boot, as the node does. Acceptors have
clocks that move forward at random, and the workload includes deadline deletes (refused
as TooEarly until a clock passes them), deadline-bound puts, renewals and swaps.

An acceptor's durable state is exactly the records `Acceptor.handle` returned as writes;
a reply leaves only together with its write, and a restarted acceptor starts from a copy
of those records. The oracle records every durable accept: a (ballot, state) is chosen
once a quorum of acceptors accepted it. Checked after every step or outcome:

- per key, chosen states ordered by ballot never lose token (generation), and one token
  has one state: at most one value per generation, never changed while it lasts;
- a ballot is only ever accepted with one state;
- every Decided is chosen (accept phase) or is the latest chosen state below its ballot
  (prepare-only decision), and is no older than what was chosen before it started;
- every conclusive QuorumRead is a chosen state no older than what was chosen before it
  started (EMPTY only if nothing was);
- acceptors keep promised/accepted monotonic, hold in memory exactly what they wrote, and
  reply only what is durable.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.ballot import ZERO, Ballot
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Inspect,
    Observed,
    Prepare,
    Promise,
    Rejected,
    Reply,
    Request,
    TooEarly,
    decode,
    encode,
)
from paxoskv.core.proposer import (
    Ballots,
    Conflict,
    Decided,
    Outgoing,
    Premature,
    Proposal,
    QuorumRead,
)
from paxoskv.core.state import (
    EMPTY,
    UNTIL,
    Change,
    DeleteIf,
    KeyState,
    PutIfAbsent,
    Read,
    Renew,
    SwapIf,
    compose,
)

KEYS = ("k0", "k1")
MAX_IN_FLIGHT = 48
MAX_CRASHES = 3  # per run, so that most steps move the protocol forward
STEPS = 100
# CI: a fixed set of examples (derandomised), the same on every run. `make torture`
# sets PAXOSKV_PROPERTY_EXAMPLES: many more, drawn at random.
TORTURE_EXAMPLES = int(os.environ.get("PAXOSKV_PROPERTY_EXAMPLES", "0"))
EXAMPLES = TORTURE_EXAMPLES or 500


def home(key: str) -> str:
    """k0 lives on n0, k1 on n1: both nodes run a proposer in every cluster."""
    return "n" + key[1:]


@dataclass(frozen=True)
class Flight:
    """One message on the network, in wire form. Requests go to `acceptor`; replies go
    back to operation `op` of proposer `proposer` in incarnation `boot`."""

    reply: bool
    proposer: str
    boot: int
    op: int
    acceptor: str
    wire: list[Any]


@dataclass
class Op:
    """A proposal or quorum read a proposer has in progress."""

    op: int
    key: str
    kind: str  # "zero" | "cached" | "full" | "read"
    floor: tuple[Ballot, KeyState] | None  # the highest chosen (ballot, state) at start
    proposal: Proposal | None = None
    read: QuorumRead | None = None
    accept_sent: bool = False


@dataclass
class ProposerNode:
    name: str
    boot: int = 1
    up: bool = True
    ballots: Ballots = field(init=False)
    conflicts: dict[str, Ballot] = field(default_factory=dict)  # key -> promise to beat
    proposals: dict[str, Op] = field(default_factory=dict)
    reads: dict[str, Op] = field(default_factory=dict)
    seen: dict[str, KeyState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ballots = Ballots(self.name, self.boot)


class PaxosNetwork(RuleBasedStateMachine):
    # Which paths the runs took, summed over all examples (see test_paxos_network).
    coverage: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.quorum = 0
        self.acceptors: dict[str, Acceptor | None] = {}
        self.clocks: dict[str, int] = {}  # each acceptor's wall clock (ms)
        self.durable: dict[str, dict[str, Record]] = {}
        self.proposers: dict[str, ProposerNode] = {}
        self.flight: list[Flight] = []
        self.ops: dict[int, tuple[str, Op]] = {}
        self.next_op = 0
        self.crashes = 0
        # The oracle: per key, the state accepted at each ballot and who accepted it.
        self.ballot_state: dict[str, dict[Ballot, KeyState]] = {k: {} for k in KEYS}
        self.voters: dict[str, dict[Ballot, set[str]]] = {k: {} for k in KEYS}

    # -- setup ------------------------------------------------------------------------------

    @initialize(acceptors=st.integers(3, 5), proposers=st.integers(2, 3))
    def setup(self, acceptors: int, proposers: int) -> None:
        self.names = [f"n{i}" for i in range(acceptors)]
        self.quorum = acceptors // 2 + 1
        self.acceptors = {n: Acceptor() for n in self.names}
        self.clocks = {n: 0 for n in self.names}
        self.durable = {n: {} for n in self.names}
        self.proposers = {n: ProposerNode(n) for n in self.names[:proposers]}
        self.coverage[f"cluster {acceptors}/{proposers}"] += 1

    # -- the oracle -------------------------------------------------------------------------

    def chosen(self, key: str) -> list[tuple[Ballot, KeyState]]:
        """Every (ballot, state) a quorum accepted, by ballot."""
        return sorted(((b, self.ballot_state[key][b]) for b, who in self.voters[key].items()
                       if len(who) >= self.quorum), key=lambda bs: bs[0])

    def highest_chosen(self, key: str, below: Ballot | None = None) -> tuple[Ballot,
                                                                             KeyState] | None:
        found = [bs for bs in self.chosen(key) if below is None or bs[0] < below]
        return found[-1] if found else None

    def note_accepted(self, acceptor: str, key: str, ballot: Ballot, state: KeyState) -> None:
        known = self.ballot_state[key].setdefault(ballot, state)
        assert known == state, f"ballot {ballot} accepted with two states: {known} and {state}"
        self.voters[key].setdefault(ballot, set()).add(acceptor)

    @staticmethod
    def assert_not_older(state: KeyState, floor: tuple[Ballot, KeyState] | None,
                         what: str) -> None:
        """`state` must reflect everything chosen before the operation began."""
        if floor is None:
            return
        assert state.token >= floor[1].token, f"{what} {state} is older than chosen {floor}"
        if state.token == floor[1].token:
            assert state.generation() == floor[1].generation(), (
                f"{what} {state} differs from chosen {floor} (same token)")
            if UNTIL in floor[1].bindings:
                assert state.bindings.get(UNTIL, -1) >= floor[1].bindings[UNTIL], (
                    f"{what} {state} has an earlier deadline than chosen {floor}")

    # -- acceptors --------------------------------------------------------------------------

    def handle(self, name: str, msg: Request) -> Reply:
        acc = self.acceptors[name]
        assert acc is not None
        before = acc.record(msg.key)
        reply, write = acc.handle(msg, self.clocks[name])
        if write is not None:
            key, rec = write
            assert key == msg.key
            self.durable[name][key] = rec  # fsync, before the reply leaves
            if rec.accepted is not None:
                self.note_accepted(name, key, rec.accepted, rec.state)
        # Everything the acceptor holds in memory was handed out as a write.
        assert acc.records == self.durable[name], "acceptor changed state without a write"
        after = self.durable[name].get(msg.key, before)
        where = f"{name} handling {msg}: {before} -> {after}, replied {reply}"
        if before.promised is not None:
            assert after.promised is not None and after.promised >= before.promised, where
        if before.accepted is not None:
            assert after.accepted is not None and after.accepted >= before.accepted, where
        if after.accepted is not None:
            assert after.promised is not None and after.accepted <= after.promised, where
        # A reply may only claim what is durable.
        match reply:
            case Accepted():
                assert isinstance(msg, Accept), where
                assert (after.accepted, after.state) == (msg.ballot, msg.state), where
            case Promise():
                assert after.promised == reply.ballot, where
                assert (reply.accepted, reply.state) == (after.accepted, after.state), where
            case Rejected():
                assert after.promised == reply.promised, where
                assert reply.promised > reply.ballot and after == before, where
            case Observed():
                assert (reply.accepted, reply.state) == (after.accepted, after.state), where
                assert after == before, where
            case TooEarly():
                assert isinstance(msg, Accept) and after == before, where
                assert self.clocks[name] < reply.not_before, where
        return reply

    # -- proposers --------------------------------------------------------------------------

    def new_op(self, p: ProposerNode, key: str, kind: str) -> Op:
        self.next_op += 1
        op = Op(self.next_op, key, kind, self.highest_chosen(key))
        self.ops[op.op] = (p.name, op)
        return op

    def send(self, p: ProposerNode, op: Op, outgoing: list[tuple[str, Request]]) -> None:
        for dest, msg in outgoing:
            if isinstance(msg, Accept):
                op.accept_sent = True
            self.flight.append(Flight(False, p.name, p.boot, op.op, dest, encode(msg)))

    def finish(self, p: ProposerNode, op: Op) -> None:
        del self.ops[op.op]
        # Replies to a finished operation are no-ops: keep them off the network.
        self.flight = [m for m in self.flight if not (m.reply and m.op == op.op)]
        if op.read is not None:
            del p.reads[op.key]
        else:
            del p.proposals[op.key]

    def settle(self, p: ProposerNode, op: Op) -> None:
        """Check and act on the outcome of a proposal, if it has one."""
        assert op.proposal is not None
        proposal, key = op.proposal, op.key
        outcome = proposal.outcome
        if outcome is None:
            return
        self.finish(p, op)
        if isinstance(outcome, Conflict):
            assert outcome.promised > proposal.ballot
            p.conflicts[key] = max(outcome.promised, p.conflicts.get(key, outcome.promised))
            self.coverage["conflict"] += 1
            return
        if isinstance(outcome, Premature):
            self.coverage["premature"] += 1
            return
        assert isinstance(outcome, Decided)
        assert outcome.state == proposal.change(outcome.prior)
        if op.accept_sent:
            # The decided state is chosen: a quorum durably accepted it at this ballot.
            who = self.voters[key].get(proposal.ballot, set())
            assert len(who) >= self.quorum, f"decided {outcome} but only {who} accepted"
            assert self.ballot_state[key][proposal.ballot] == outcome.state
            self.coverage[f"decided {op.kind}"] += 1
        else:
            # Decided without an accept: the state must be the latest chosen one below
            # the ballot (or the initial state if nothing was chosen).
            assert outcome.state == outcome.prior
            latest = self.highest_chosen(key, below=proposal.ballot)
            expected = EMPTY if latest is None else latest[1]
            assert outcome.state == expected, f"prepare-only {outcome} but chosen {latest}"
            assert outcome.promised == proposal.ballot
            self.coverage["decided prepare-only"] += 1
        self.assert_not_older(outcome.prior, op.floor, "decided prior")
        if outcome.state.token >= 3:
            self.coverage["token >= 3 decided"] += 1
        if outcome.prior.live and outcome.state.live and outcome.state.token > outcome.prior.token:
            self.coverage["swapped"] += 1
        p.seen[key] = outcome.state
        if outcome.promised is not None:
            assert outcome.promised >= proposal.ballot
        p.ballots.remember(key, outcome)

    def settle_read(self, p: ProposerNode, op: Op) -> None:
        assert op.read is not None
        if not op.read.done:
            return
        self.finish(p, op)
        result = op.read.result
        if result is None:
            self.coverage["quorum read inconclusive"] += 1
            return
        floor = op.floor
        candidates = [b for b, s in self.chosen(op.key) if s == result
                      and (floor is None or b >= floor[0])]
        assert candidates or (result == EMPTY and floor is None), (
            f"quorum read returned {result}; chosen: {self.chosen(op.key)}, floor {floor}")
        self.assert_not_older(result, floor, "quorum read")
        p.seen[op.key] = result
        self.coverage["quorum read"] += 1

    def idle(self) -> list[tuple[ProposerNode, str]]:
        return [(p, k) for p in self.proposers.values() if p.up for k in KEYS
                if k not in p.proposals]

    def make_change(self, p: ProposerNode, key: str, kind: str, value: int,
                    token: int, at: int) -> Change:
        seen = p.seen.get(key, EMPTY).token
        if kind == "put":
            return PutIfAbsent(value)
        if kind == "put until":
            return PutIfAbsent(value, {UNTIL: at})
        if kind == "renew":
            return Renew(seen, at)
        if kind == "expire":  # what a deadline's ending proposes
            return DeleteIf(seen, not_before=at)
        if kind == "delete":
            return DeleteIf(token)
        if kind == "delete seen":
            return DeleteIf(seen)
        if kind == "swap":  # a compare-and-swap's change, on the generation it read
            return SwapIf(seen, value, f"{p.name}.{p.boot}.{self.next_op}", at)
        return Read()

    @precondition(lambda self: bool(self.idle()))
    @rule(data=st.data(), kind=st.sampled_from(["put", "delete seen", "read", "delete",
                                                "put until", "renew", "expire", "swap"]),
          value=st.integers(0, 2), token=st.integers(1, 4), ahead=st.integers(-20, 40))
    def propose(self, data: st.DataObject, kind: str, value: int, token: int,
                ahead: int) -> None:
        p, key = data.draw(st.sampled_from(self.idle()), label="proposer, key")
        # Deadlines near the proposer's own clock, past or ahead: other clocks may be
        # behind it, so an ending can be premature for some acceptors.
        at = max(0, self.clocks[p.name] + ahead)
        change = self.make_change(p, key, kind, value, token, at)
        own = self.acceptors[p.name]
        assert own is not None  # a proposer is up only while its node is
        # The ballot, as the node's driver picks it: with the driver's own class.
        plan = p.ballots.plan(key, zero=ZERO if home(key) == p.name else None,
                              known_key=own.has_record(key), above=p.conflicts.pop(key, None),
                              hint=own.record(key).promised)
        op = self.new_op(p, key, plan.path)
        ballot = plan.ballot
        proposal = Proposal(key, compose([change]), ballot, self.names, self.quorum,
                            prepared=plan.prepared, next_promise=plan.next_promise)
        op.proposal = proposal
        p.proposals[key] = op
        outgoing: Outgoing = proposal.start()
        if ballot == ZERO:
            # The use of ZERO is durable on the home's own disk before any peer sees it.
            mine = [(d, m) for d, m in outgoing if d == p.name]
            outgoing = [(d, m) for d, m in outgoing if d != p.name]
            assert len(mine) == 1
            op.accept_sent = True
            reply = self.handle(p.name, mine[0][1])
            outgoing += proposal.receive(p.name, reply)
            self.settle(p, op)
            if proposal.outcome is not None:
                return
        self.send(p, op, list(outgoing))

    @precondition(lambda self: any(p.up and len(p.reads) < len(KEYS)
                                   for p in self.proposers.values()))
    @rule(data=st.data())
    def quorum_read(self, data: st.DataObject) -> None:
        choices = [(p, k) for p in self.proposers.values() if p.up for k in KEYS
                   if k not in p.reads]
        p, key = data.draw(st.sampled_from(choices), label="reader, key")
        op = self.new_op(p, key, "read")
        op.read = QuorumRead(key, self.names, self.quorum)
        p.reads[key] = op
        self.send(p, op, [(a, Inspect(key)) for a in self.names])

    @precondition(lambda self: bool(self.ops))
    @rule(data=st.data())
    def give_up(self, data: st.DataObject) -> None:
        """The driver's attempt timeout: forget an operation; late replies are ignored."""
        name, op = self.ops[data.draw(st.sampled_from(sorted(self.ops)), label="op")]
        self.finish(self.proposers[name], op)

    # -- the network ------------------------------------------------------------------------

    def take(self, data: st.DataObject) -> Flight:
        return self.flight.pop(data.draw(st.integers(0, len(self.flight) - 1), label="msg"))

    def deliver_one(self, msg: Flight) -> None:
        decoded = decode(msg.wire)
        if not msg.reply:
            assert isinstance(decoded, (Prepare, Accept, Inspect))
            if self.acceptors[msg.acceptor] is None:
                return  # the node is down: lost
            reply = self.handle(msg.acceptor, decoded)
            if msg.op in self.ops:  # otherwise nobody waits for the reply
                self.flight.append(Flight(True, msg.proposer, msg.boot, msg.op, msg.acceptor,
                                          encode(reply)))
            return
        assert isinstance(decoded, (Promise, Accepted, Rejected, Observed, TooEarly))
        p = self.proposers[msg.proposer]
        entry = self.ops.get(msg.op)
        if not p.up or p.boot != msg.boot or entry is None:
            return  # nobody waits for it any more
        op = entry[1]
        if op.read is not None:
            assert isinstance(decoded, Observed)
            op.read.receive(msg.acceptor, decoded)
            self.settle_read(p, op)
            return
        assert op.proposal is not None and not isinstance(decoded, Observed)
        self.send(p, op, list(op.proposal.receive(msg.acceptor, decoded)))
        self.settle(p, op)

    @precondition(lambda self: bool(self.flight))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        self.deliver_one(self.take(data))

    @precondition(lambda self: bool(self.flight))
    @rule(data=st.data(), count=st.integers(2, 32))
    def deliver_several(self, data: st.DataObject, count: int) -> None:
        """A burst of deliveries in random order (one step, to keep runs short)."""
        for _ in range(count):
            if not self.flight:
                return
            self.deliver_one(self.take(data))

    @precondition(lambda self: bool(self.flight))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.take(data)

    @precondition(lambda self: 0 < len(self.flight) < MAX_IN_FLIGHT)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        msg = self.flight[data.draw(st.integers(0, len(self.flight) - 1), label="msg")]
        self.flight.append(msg)
        self.coverage["duplicate"] += 1

    # -- crashes ----------------------------------------------------------------------------

    @precondition(lambda self: self.crashes < MAX_CRASHES
                  and any(a is not None for a in self.acceptors.values()))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A node dies: its acceptor's memory and its proposer's state are gone."""
        up = [n for n, a in self.acceptors.items() if a is not None]
        name = data.draw(st.sampled_from(up), label="crash")
        self.acceptors[name] = None
        self.crashes += 1
        p = self.proposers.get(name)
        if p is not None:
            for op in [*p.proposals.values(), *p.reads.values()]:
                self.finish(p, op)
            p.up = False
            p.conflicts.clear()
            p.proposals.clear()
            p.reads.clear()
            p.seen.clear()
        self.coverage["crash"] += 1

    @precondition(lambda self: any(a is None for a in self.acceptors.values()))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        down = [n for n, a in self.acceptors.items() if a is None]
        name = data.draw(st.sampled_from(down), label="restart")
        self.acceptors[name] = Acceptor(dict(self.durable[name]))
        p = self.proposers.get(name)
        if p is not None:
            p.up = True
            p.boot += 1  # the durable restart counter
            p.ballots = Ballots(p.name, p.boot)  # a new boot remembers no ballot
        self.coverage["restart"] += 1

    @rule(data=st.data(), ms=st.integers(1, 15))
    def tick(self, data: st.DataObject, ms: int) -> None:
        """One acceptor's clock moves on (clocks disagree: each moves on its own)."""
        name = data.draw(st.sampled_from(self.names), label="clock")
        self.clocks[name] += ms

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def chosen_states_are_consistent(self) -> None:
        for key in KEYS:
            chosen = self.chosen(key)
            for i, (b1, s1) in enumerate(chosen):
                for b2, s2 in chosen[i + 1:]:
                    # Tokens never decrease along the chosen sequence ...
                    assert s2.token >= s1.token, f"{key}: {s2}@{b2} after {s1}@{b1}"
                    # ... and one generation has one value: at most one value decided
                    # per generation, and it never changes while the generation lasts
                    # (a renewal may move its deadline, only later).
                    if s2.token == s1.token:
                        assert s2.generation() == s1.generation(), f"{key}: {s1}@{b1}, {s2}@{b2}"
                        if s1.live and UNTIL in s1.bindings:
                            assert s2.bindings[UNTIL] >= s1.bindings[UNTIL], f"{key}: {s2}"
            if chosen:
                self.coverage[f"chosen tokens {chosen[-1][1].token}"] += 1

    @invariant()
    def live_acceptors_hold_exactly_their_durable_records(self) -> None:
        for name, acc in self.acceptors.items():
            if acc is not None:
                assert acc.records == self.durable[name]


def no_local_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis draws some values from the literal constants of the project's modules
    loaded so far, so a derandomised run changed with what earlier tests imported (CI saw
    a path go unvisited after test_cli.py had run) and with any new module (a sidecar's
    constants did it again). Without them, the examples depend on this test alone."""
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants
    from hypothesis.internal.floats import float_to_int
    from sortedcontainers import SortedSet  # type: ignore[import-untyped] # Hypothesis' own

    none = Constants(integers=SortedSet(), floats=SortedSet(key=float_to_int),
                               bytes=SortedSet(), strings=SortedSet())
    monkeypatch.setattr(providers, "_get_local_constants", lambda: none)


# Its own time budget, well above a normal run (about 15 s here), so that a failure
# has the time to print its shrunk counterexample instead of hitting the default limit.
@pytest.mark.timeout(900 if TORTURE_EXAMPLES else 600)
def test_paxos_network(monkeypatch: pytest.MonkeyPatch) -> None:
    no_local_constants(monkeypatch)
    PaxosNetwork.coverage.clear()
    run_state_machine_as_test(PaxosNetwork, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        derandomize=not TORTURE_EXAMPLES, database=None,
        report_multiple_bugs=False,  # shrink one failure only: much faster
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    # The runs went down every path the invariants are meant to guard.
    seen = PaxosNetwork.coverage
    for path in ("decided full", "decided zero", "decided cached", "decided prepare-only",
                 "conflict", "quorum read", "crash", "restart", "duplicate",
                 "token >= 3 decided", "premature", "swapped"):
        assert seen[path] > 0, f"no run took path {path!r}: {dict(seen)}"
    assert any(seen[f"cluster {a}/{p}"] for a in (4, 5) for p in (2, 3))
