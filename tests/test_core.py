"""Unit tests of the pure consensus core (paxoskv.core): ballots, states, acceptor rules,
proposal rounds, quorum reads and the wire form of messages."""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import pytest

from paxoskv.core.acceptor import BLANK, Acceptor, Record
from paxoskv.core.ballot import ZERO, Ballot, first_ballot, zero
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Commit,
    Fenced,
    Inspect,
    Learned,
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
    MAX_CACHED_PROMISES,
    Ballots,
    Conflict,
    Decided,
    Outgoing,
    Plan,
    Premature,
    Proposal,
    QuorumRead,
)
from paxoskv.core.state import (
    EMPTY,
    FORGET_AFTER_MS,
    MAX_APPLIED,
    NOT_BEFORE,
    UNTIL,
    Change,
    DeleteIf,
    KeyState,
    PutIfAbsent,
    Read,
    Renew,
    SwapIf,
    answers,
    change_from_json,
    compose,
    not_before,
    public_bindings,
    same_json,
    step,
)

NAMES = ["a", "b", "c"]
K = "bucket/key"


def b(round_: int, node: str = "p", boot: int = 1) -> Ballot:
    return Ballot(round_, boot, node)


M = TypeVar("M", bound=Request | Reply)


def over_the_wire(msg: M) -> M:
    """`msg` as a peer receives it: encoded, sent as JSON text, decoded (so its strings
    and large ints are new objects, equal to the sender's but not the same)."""
    decoded = decode(json.loads(json.dumps(encode(msg))))
    assert type(decoded) is type(msg)
    return cast(M, decoded)


def state_from_disk(state: KeyState) -> KeyState:
    return KeyState.from_json(json.loads(json.dumps(state.to_json())))


def change_from_wire(change: Change) -> Change:
    return change_from_json(json.loads(json.dumps(change.to_json())))


def cluster(names: Iterable[str] = NAMES) -> dict[str, Acceptor]:
    return {n: Acceptor() for n in names}


def deliver_all(
    proposal: Proposal,
    acceptors: dict[str, Acceptor],
    outgoing: Outgoing,
    *,
    only: set[str] | None = None,
) -> list[tuple[str, Request]]:
    """Deliver `outgoing` (and whatever it triggers) in FIFO order to the acceptors in
    `only` (all by default). Returns every request that was delivered."""
    queue = list(outgoing)
    delivered: list[tuple[str, Request]] = []
    while queue:
        dest, msg = queue.pop(0)
        if only is not None and dest not in only:
            continue
        delivered.append((dest, msg))
        reply, _ = acceptors[dest].handle(msg)
        queue.extend(proposal.receive(dest, reply))
    return delivered


def decide(
    acceptors: dict[str, Acceptor],
    change: Callable[[KeyState], KeyState],
    ballot: Ballot,
    *,
    only: set[str] | None = None,
    prepared: KeyState | None = None,
    next_promise: Ballot | None = None,
) -> Proposal:
    proposal = Proposal(K, change, ballot, list(acceptors), len(acceptors) // 2 + 1,
                        prepared=prepared, next_promise=next_promise)
    deliver_all(proposal, acceptors, proposal.start(), only=only)
    return proposal


# -- ballots -------------------------------------------------------------------------------


def test_ballots_order_by_round_then_boot_then_node() -> None:
    assert Ballot(1, 9, "z") < Ballot(2, 0, "a")
    assert Ballot(2, 1, "z") < Ballot(2, 2, "a")
    assert Ballot(2, 2, "a") < Ballot(2, 2, "b")
    assert ZERO < Ballot(0, 0, "a") < Ballot(1, 0, "")
    assert Ballot(3, 2, "n").successor() == Ballot(4, 2, "n")


def test_first_ballot_is_above_what_is_known_and_above_zero() -> None:
    assert first_ballot("n", 3, None) == Ballot(1, 3, "n")
    assert first_ballot("n", 3, None) > ZERO
    above = Ballot(7, 99, "zzz")
    mine = first_ballot("a", 0, above)
    assert mine > above
    assert mine == Ballot(8, 0, "a")  # the lowest of "a"'s ballots above it


def test_ballot_json_round_trip() -> None:
    ballot = Ballot(5, 2, "node-1")
    raw = json.loads(json.dumps(ballot.to_json()))
    assert Ballot.from_json(raw) == ballot
    assert Ballot.from_json(ZERO.to_json()) == ZERO


# -- states and changes ---------------------------------------------------------------------


def test_put_if_absent_first_write_wins_and_starts_a_generation() -> None:
    first = PutIfAbsent("v1", {"session": "s1"}).apply(EMPTY)
    assert first == KeyState(1, True, "v1", {"session": "s1"})
    # A live key keeps its value and bindings.
    assert PutIfAbsent("v2", {"session": "s2"}).apply(first) == first
    # A tombstone is replaced by a new generation.
    assert PutIfAbsent("v3").apply(KeyState(2, False)) == KeyState(3, True, "v3", {})


def test_put_if_absent_copies_its_bindings() -> None:
    bindings = {"session": "s1"}
    state = PutIfAbsent("v", bindings).apply(EMPTY)
    bindings["session"] = "mutated"
    assert state.bindings == {"session": "s1"}


def test_delete_if_only_ends_the_matching_live_generation() -> None:
    live = KeyState(4, True, "v", {"x": 1})
    assert DeleteIf(4).apply(live) == KeyState(5, False, None, {})
    assert DeleteIf(3).apply(live) == live
    assert DeleteIf(5).apply(live) == live
    dead = KeyState(5, False)
    assert DeleteIf(5).apply(dead) == dead
    assert DeleteIf(0).apply(EMPTY) == EMPTY


def test_read_is_the_identity() -> None:
    for state in (EMPTY, KeyState(3, True, [1, 2]), KeyState(4, False)):
        assert Read().apply(state) is state


def test_tokens_grow_with_every_new_decision_and_never_come_back() -> None:
    changes: list[Change] = [PutIfAbsent("a"), PutIfAbsent("b"), Read(), DeleteIf(1),
                             DeleteIf(1), PutIfAbsent("c"), DeleteIf(3), PutIfAbsent("a")]
    states = [s for s in answers(EMPTY, changes) if s is not None]
    assert [s.token for s in states] == [1, 1, 1, 2, 2, 3, 4, 5]
    assert [s.live for s in states] == [True, True, True, False, False, True, False, True]
    assert [s.value for s in states] == ["a", "a", "a", None, None, "c", None, "a"]
    assert answers(EMPTY, []) == []


def test_answers_given_the_decided_state_are_the_same() -> None:
    """A proposer passes the state it decided (compose of the batch) to `answers`,
    which then does not apply the last change again: the answers must not change."""
    put = PutIfAbsent("me", {}, "id-1", expires=5_000)
    batches: list[list[Change]] = [
        [put], [put, put], [PutIfAbsent("a"), DeleteIf(1)], [Read()],
        [PutIfAbsent("x", {}, "id-2", 5_000), put, Renew(1, 9_000), DeleteIf(1, 8_000)]]
    for prior in (EMPTY, step(put, EMPTY), KeyState(4, False, None, {NOT_BEFORE: 7}, (), 6_000)):
        for changes in batches:
            final = compose(changes)(prior)
            assert answers(prior, changes, final) == answers(prior, changes), (prior, changes)


def test_key_state_and_change_json_round_trip() -> None:
    state = KeyState(7, True, {"nested": [1, "x", None]}, {"session": "s", "ttl": 3})
    assert KeyState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert KeyState.from_json(EMPTY.to_json()) == EMPTY
    changes: list[Change] = [Read(), PutIfAbsent({"v": 1}, {"session": "s"}),
                             PutIfAbsent("plain"), PutIfAbsent(1, {}, "id-7", 12_345),
                             DeleteIf(12), DeleteIf(3, not_before=99), Renew(5, 77),
                             SwapIf(4, {"v": 2}), SwapIf(4, [1], "id-8", 9_000)]
    for change in changes:
        assert change_from_json(json.loads(json.dumps(change.to_json()))) == change
    assert change_from_json({"op": "put", "value": 1}) == PutIfAbsent(1, {})
    # An unknown change is refused, wherever its name sorts among the known ones.
    for op in ("", "cas", "erase", "update", "zap"):
        with pytest.raises(ValueError, match="unknown change"):
            change_from_json({"op": op, "token": 1, "until": 2, "value": 3})


def test_key_state_wire_form_stays_compact_for_keys_without_put_ids() -> None:
    # Keys that never saw a put id encode (on disk, on the wire) as they did before
    # ids existed, and such an encoding reads back with no ids and no horizon.
    plain: dict[str, Any] = {"token": 0, "live": False, "value": None, "bindings": {}}
    assert EMPTY.to_json() == plain
    assert KeyState.from_json(plain) == EMPTY
    assert KeyState(2, False).to_json() == {**plain, "token": 2}
    ids_only = KeyState(3, True, "v", {}, (("id-1", 9_000, 3, True),))
    horizon_only = KeyState(4, False, None, {}, (), 7_000)
    for state in (ids_only, horizon_only):
        assert state_from_disk(state) == state


def test_public_bindings_hide_only_the_deadline_marker() -> None:
    state = KeyState(3, True, "v", {"a": 1, "session": "s", NOT_BEFORE: 7_000, "zz": 2})
    for seen in (state, state_from_disk(state)):
        assert public_bindings(seen) == {"a": 1, "session": "s", "zz": 2}


def test_a_batch_applies_its_changes_in_order() -> None:
    batch = compose([PutIfAbsent("a"), DeleteIf(1), PutIfAbsent("b"), Renew(3, 5_000)])
    assert batch(EMPTY) == KeyState(3, True, "b", {UNTIL: 5_000})
    assert compose([])(KeyState(1, True, "v")) == KeyState(1, True, "v")


VALUES: list[Any] = [
    Prepare(K, b(1)), Accept(K, b(1), EMPTY), Inspect(K), Commit(K, b(1)),
    Promise(K, b(1), None, EMPTY), Accepted(K, b(1)), Rejected(K, b(1), b(2)),
    Observed(K, None, EMPTY), TooEarly(K, b(1), 5), Learned(K, b(1)),
    Decided(EMPTY, EMPTY, None), Conflict(b(1)), Premature(5), Plan("full", b(1), None, b(2)),
    PutIfAbsent("v"), DeleteIf(1), Renew(1, 2), SwapIf(1, "v"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_messages_changes_and_outcomes_are_immutable(value: Any) -> None:
    # One Accept object goes to every acceptor (the local one in-process), and changes
    # and outcomes are shared between the rounds of a batch: none may be changed.
    for name in [f.name for f in dataclasses.fields(value)]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)


# -- acceptor -------------------------------------------------------------------------------


def test_prepare_on_a_fresh_key_promises_and_writes() -> None:
    acc = Acceptor()
    assert not acc.has_record(K)
    reply, write = acc.handle(Prepare(K, b(1)))
    assert reply == Promise(K, b(1), None, EMPTY)
    assert write == (K, Record(b(1), None, EMPTY))
    assert acc.has_record(K)
    assert acc.record(K) == Record(b(1), None, EMPTY)
    assert acc.record("other") == BLANK


def test_prepare_below_the_promise_is_rejected_without_a_write() -> None:
    acc = Acceptor()
    acc.handle(Prepare(K, b(5)))
    reply, write = acc.handle(Prepare(K, b(4, "zz")))
    assert reply == Rejected(K, b(4, "zz"), b(5))
    assert write is None
    assert acc.record(K).promised == b(5)


def test_higher_prepare_raises_the_promise_and_reports_the_accepted_state() -> None:
    acc = Acceptor()
    state = KeyState(1, True, "v")
    acc.handle(Accept(K, b(1), state))
    reply, write = acc.handle(Prepare(K, b(2, "q")))
    assert reply == Promise(K, b(2, "q"), b(1), state)
    assert write == (K, Record(b(2, "q"), b(1), state))


def test_repeated_prepare_is_answered_again_without_a_write() -> None:
    acc = Acceptor()
    first = acc.handle(Prepare(K, b(3)))
    again = acc.handle(Prepare(K, b(3)))
    assert again[0] == first[0] == Promise(K, b(3), None, EMPTY)
    assert first[1] is not None
    assert again[1] is None


def test_accept_at_or_above_the_promise_is_accepted_and_written() -> None:
    acc = Acceptor()
    acc.handle(Prepare(K, b(2)))
    state = KeyState(1, True, "v")
    reply, write = acc.handle(Accept(K, b(2), state))
    assert reply == Accepted(K, b(2))
    assert write == (K, Record(b(2), b(2), state))
    # Above the promise, without any prepare of that ballot: accepted too.
    state2 = KeyState(2, False)
    reply, write = acc.handle(Accept(K, b(9, "q"), state2))
    assert reply == Accepted(K, b(9, "q"))
    assert write == (K, Record(b(9, "q"), b(9, "q"), state2))


def test_accept_below_the_promise_is_rejected_without_a_write() -> None:
    acc = Acceptor()
    acc.handle(Prepare(K, b(4)))
    reply, write = acc.handle(Accept(K, b(3), KeyState(1, True, "v")))
    assert reply == Rejected(K, b(3), b(4))
    assert write is None
    assert acc.record(K) == Record(b(4), None, EMPTY)


def test_accept_with_next_promise_promises_the_next_ballot() -> None:
    acc = Acceptor()
    state = KeyState(1, True, "v")
    reply, write = acc.handle(Accept(K, b(1), state, next_promise=b(2)))
    assert reply == Accepted(K, b(1))
    assert write == (K, Record(b(2), b(1), state))
    # Anything between the accepted ballot and the next promise is now refused ...
    assert acc.handle(Prepare(K, b(1, "zz")))[0] == Rejected(K, b(1, "zz"), b(2))
    assert acc.handle(Accept(K, b(1, "zz"), EMPTY))[0] == Rejected(K, b(1, "zz"), b(2))
    # ... and the promised ballot may go straight to the accept phase.
    assert acc.handle(Accept(K, b(2), KeyState(2, False)))[0] == Accepted(K, b(2))


def test_accept_never_lowers_the_promise_below_its_own_ballot() -> None:
    acc = Acceptor()
    _, write = acc.handle(Accept(K, b(5), EMPTY, next_promise=b(2)))
    assert write == (K, Record(b(5), b(5), EMPTY))


def test_duplicate_accept_produces_no_write() -> None:
    acc = Acceptor()
    msg = Accept(K, b(1), KeyState(1, True, "v"))
    first = acc.handle(msg)
    again = acc.handle(msg)
    assert first[1] is not None
    assert again == (Accepted(K, b(1)), None)


def test_duplicate_accept_after_its_own_next_promise_is_refused_without_a_write() -> None:
    acc = Acceptor()
    msg = Accept(K, b(1), KeyState(1, True, "v"), next_promise=b(2))
    first = acc.handle(msg)
    assert first[1] is not None
    assert acc.handle(msg) == (Rejected(K, b(1), b(2)), None)
    assert acc.record(K) == Record(b(2), b(1), KeyState(1, True, "v"))


def test_inspect_reports_without_promising_or_writing() -> None:
    acc = Acceptor()
    assert acc.handle(Inspect(K)) == (Observed(K, None, EMPTY), None)
    assert not acc.has_record(K)
    state = KeyState(1, True, "v")
    acc.handle(Accept(K, b(1), state))
    assert acc.handle(Inspect(K)) == (Observed(K, b(1), state), None)
    assert acc.record(K).promised == b(1)


def test_acceptor_restarted_from_its_writes_behaves_the_same() -> None:
    live = Acceptor()
    durable: dict[str, Record] = {}
    requests: list[Request] = [Prepare(K, b(1)), Accept(K, b(1), KeyState(1, True, "v"), b(2)),
                               Prepare("other", b(3, "q")), Prepare(K, b(1, "zz"))]
    for msg in requests:
        _, write = live.handle(msg)
        if write is not None:
            durable[write[0]] = write[1]
    assert durable == live.records
    on_disk = json.loads(json.dumps({k: r.to_json() for k, r in durable.items()}))
    restarted = Acceptor({k: Record.from_json(r) for k, r in on_disk.items()})
    after: list[Request] = [Prepare(K, b(1, "zz")), Accept(K, b(2), EMPTY), Inspect("other")]
    for msg in after:
        assert restarted.handle(msg) == live.handle(msg)


def test_an_acceptor_keeps_every_record_as_it_was_given() -> None:
    """Records are kept packed (acceptor.Packed): every field comes back."""
    records = {"a": BLANK, "b": Record(b(1), None, EMPTY),
               "c": Record(b(3), b(2), KeyState(2, True, {"x": [1, None]}, {"s": 1, UNTIL: 9})),
               "d": Record(b(5, "q", 2), b(4), KeyState(
                   3, False, None, {NOT_BEFORE: 7}, (("id-1", 9_000, 3, True),
                                                     ("id-2", 9_500, 3, False)), 500), True, 4)}
    acc = Acceptor(records)
    assert acc.records == records
    assert [acc.promised(k) for k in "abcd"] == [None, b(1), b(3), b(5, "q", 2)]


def test_a_record_is_untracked_by_the_collectors_first_pass() -> None:
    """A node holds a record per key: records that the cyclic garbage collector
    tracks pile up in its oldest generation, whose full collections then take tens
    of milliseconds (acceptor.Packed). One young pass must untrack a record, as it
    comes in a peer's decoded Accept and is marked chosen."""
    state = PutIfAbsent("v", {UNTIL: 9_000}, "n1.1.7", 5_000).apply(EMPTY)
    dict_value = PutIfAbsent({"x": 1}, {}, "n1.1.8", 5_000).apply(EMPTY)
    acc = Acceptor()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for key, proposed in (("plain", state), ("holds-a-dict", dict_value)):
            accept = decode(json.loads(json.dumps(encode(Accept(key, b(1), proposed, b(2))))))
            acc.handle(cast(Request, accept))
            assert acc.mark_chosen(key, b(1))
        gc.collect(0)
        # (The packed form is private; this test is about exactly it.)
        assert not gc.is_tracked(acc._packed["plain"])
        assert gc.is_tracked(acc._packed["holds-a-dict"])  # a dict value: tracked, as it must
    finally:
        if was_enabled:
            gc.enable()
    assert acc.record("plain") == Record(b(2), b(1), state, True)


def test_record_json_round_trip() -> None:
    with_ids = KeyState(3, True, "w", {"s": 1}, (("id-1", 9_000, 3, True),), 500)
    records = [BLANK, Record(b(1), None, EMPTY),
               Record(b(3), b(2), KeyState(2, True, "v", {"s": 1})),
               Record(b(5, "q", 2), b(4), with_ids, True)]
    for rec in records:
        assert Record.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    # A record written before `chosen` existed (three fields) loads as not chosen.
    old = [b(3).to_json(), b(2).to_json(), with_ids.to_json()]
    assert Record.from_json(json.loads(json.dumps(old))) == Record(b(3), b(2), with_ids, False)


# -- proposal ---------------------------------------------------------------------------------


def test_full_round_prepare_then_accept_then_decided() -> None:
    accs = cluster()
    proposal = Proposal(K, PutIfAbsent("v").apply, b(1), NAMES, 2, next_promise=b(2))
    out = proposal.start()
    assert out == [(n, Prepare(K, b(1))) for n in NAMES]
    # One promise is not a quorum.
    assert proposal.receive("a", accs["a"].handle(Prepare(K, b(1)))[0]) == []
    assert proposal.outcome is None
    # A duplicate promise from the same acceptor is not a second vote.
    assert proposal.receive("a", accs["a"].handle(Prepare(K, b(1)))[0]) == []
    assert proposal.proposed is None
    accepts = proposal.receive("b", accs["b"].handle(Prepare(K, b(1)))[0])
    new = KeyState(1, True, "v")
    assert accepts == [(n, Accept(K, b(1), new, b(2))) for n in NAMES]
    assert proposal.proposed == new
    assert proposal.receive("a", accs["a"].handle(accepts[0][1])[0]) == []
    assert proposal.receive("a", Accepted(K, b(1))) == []  # duplicate
    assert proposal.outcome is None
    proposal.receive("c", accs["c"].handle(accepts[2][1])[0])
    assert proposal.outcome == Decided(EMPTY, new, b(2))
    assert proposal.accepted_by == {"a", "c"}  # so a commit carries the state to b only
    # Once decided, later replies change nothing.
    assert proposal.receive("b", Rejected(K, b(1), b(9))) == []
    assert proposal.outcome == Decided(EMPTY, new, b(2))


def test_replies_for_another_ballot_or_key_are_ignored() -> None:
    proposal = Proposal(K, Read().apply, b(2), NAMES, 2)
    proposal.start()
    # Keys and ballots on either side of this proposal's.
    for reply in (Promise(K, b(1), None, EMPTY), Promise("other", b(2), None, EMPTY),
                  Promise(K, b(3), None, EMPTY), Promise("a/key", b(2), None, EMPTY),
                  Rejected(K, b(1), b(5)), Rejected("other", b(2), b(5)),
                  Rejected(K, b(3), b(5)), Rejected("a/key", b(2), b(5))):
        assert proposal.receive("a", reply) == []
        assert proposal.receive("b", reply) == []
    assert proposal.outcome is None


def test_a_round_and_a_quorum_read_complete_with_replies_from_the_wire() -> None:
    accs = cluster()
    proposal = Proposal(K, PutIfAbsent("v").apply, b(1), NAMES, 2)
    queue = proposal.start()
    while queue:
        dest, msg = queue.pop(0)
        reply, _ = accs[dest].handle(over_the_wire(msg))
        queue.extend(proposal.receive(dest, over_the_wire(reply)))
    assert proposal.outcome == Decided(EMPTY, KeyState(1, True, "v"), None)
    read = QuorumRead(K, NAMES, 2)
    for name in NAMES:
        observed = accs[name].handle(Inspect(K))[0]
        assert isinstance(observed, Observed)
        read.receive(name, over_the_wire(observed))
    assert read.result == KeyState(1, True, "v")


def test_accepted_before_the_accept_phase_is_ignored() -> None:
    proposal = Proposal(K, PutIfAbsent("v").apply, b(1), NAMES, 2)
    proposal.start()
    proposal.receive("a", Accepted(K, b(1)))
    proposal.receive("b", Accepted(K, b(1)))
    assert proposal.outcome is None


def test_prepare_adopts_the_highest_accepted_state() -> None:
    accs = cluster()
    old, newer = KeyState(1, True, "old"), KeyState(1, True, "newer")
    accs["a"].handle(Accept(K, b(1), old))
    accs["b"].handle(Accept(K, b(3), newer))
    # Even a quorum that reports the lower ballot twice must not win over the higher one.
    accs["c"].handle(Accept(K, b(1), old))
    proposal = decide(accs, PutIfAbsent("mine").apply, b(4))
    assert proposal.outcome == Decided(newer, newer, None)
    assert all(a.record(K).state == newer for a in accs.values())
    assert all(a.record(K).accepted == b(4) for a in accs.values())


def test_rejection_is_a_conflict_with_the_promised_ballot() -> None:
    accs = cluster()
    accs["b"].handle(Prepare(K, b(7, "q")))
    proposal = decide(accs, PutIfAbsent("v").apply, b(2))
    assert proposal.outcome == Conflict(b(7, "q"))


def test_rejected_accept_is_a_conflict() -> None:
    accs = cluster()
    proposal = Proposal(K, PutIfAbsent("v").apply, b(1), NAMES, 2)
    accepts = []
    for dest, msg in proposal.start():
        accepts.extend(proposal.receive(dest, accs[dest].handle(msg)[0]))
    assert len(accepts) == 3
    accs["a"].handle(Prepare(K, b(5, "q")))
    proposal.receive("a", accs["a"].handle(accepts[0][1])[0])
    assert proposal.outcome == Conflict(b(5, "q"))


def test_prepare_only_decision_when_a_quorum_agrees_and_the_change_is_a_noop() -> None:
    accs = cluster()
    chosen = KeyState(1, True, "v")
    for acc in accs.values():
        acc.handle(Accept(K, b(1), chosen))
    before = {n: a.record(K) for n, a in accs.items()}
    proposal = Proposal(K, Read().apply, b(2), NAMES, 2, next_promise=b(3))
    delivered = deliver_all(proposal, accs, proposal.start())
    assert proposal.outcome == Decided(chosen, chosen, b(2))
    assert not any(isinstance(m, Accept) for _, m in delivered)
    assert {n: a.record(K).accepted for n, a in accs.items()} == {
        n: r.accepted for n, r in before.items()}
    # A put on a live key is a no-op as well.
    proposal = decide(accs, PutIfAbsent("other").apply, b(4))
    assert proposal.outcome == Decided(chosen, chosen, b(4))
    assert all(a.record(K).accepted == b(1) for a in accs.values())


def test_prepare_only_decision_on_an_empty_key() -> None:
    accs = cluster()
    proposal = decide(accs, DeleteIf(1).apply, b(1))
    assert proposal.outcome == Decided(EMPTY, EMPTY, b(1))
    assert all(a.record(K).accepted is None for a in accs.values())


def test_a_renewal_on_a_quiet_key_goes_through_the_accept_phase() -> None:
    accs = cluster()
    live = KeyState(1, True, "s", {UNTIL: 1_000})
    for acc in accs.values():
        acc.handle(Accept(K, b(1), live))
    proposal = decide(accs, Renew(1, 5_000).apply, b(2))
    renewed = KeyState(1, True, "s", {UNTIL: 5_000})
    assert proposal.outcome == Decided(live, renewed, None)
    assert all(a.record(K) == Record(b(2), b(2), renewed) for a in accs.values())


def test_read_finishes_an_in_flight_proposal_it_sees() -> None:
    accs = cluster()
    pending = KeyState(1, True, "pending")
    accs["a"].handle(Accept(K, b(1), pending))  # accepted by one acceptor only
    proposal = decide(accs, Read().apply, b(2), only={"a", "b"})
    assert proposal.outcome == Decided(pending, pending, None)
    # It was re-accepted at the read's ballot by a quorum: now chosen.
    assert accs["a"].record(K).accepted == accs["b"].record(K).accepted == b(2)
    assert accs["b"].record(K).state == pending


def test_noop_change_without_an_agreeing_quorum_goes_through_accept() -> None:
    accs = cluster()
    state = KeyState(1, True, "v")
    accs["a"].handle(Accept(K, b(1), state))
    accs["b"].handle(Accept(K, b(1, "z"), state))  # same state, different ballots
    proposal = decide(accs, Read().apply, b(2), only={"a", "b"})
    assert proposal.outcome == Decided(state, state, None)
    assert accs["a"].record(K).accepted == b(2)


def test_skip_prepare_with_a_cached_promise() -> None:
    accs = cluster()
    first = decide(accs, PutIfAbsent("v").apply, b(1), next_promise=b(2))
    assert isinstance(first.outcome, Decided)
    assert first.outcome.promised == b(2)
    assert all(a.record(K).promised == b(2) for a in accs.values())
    # The next change starts at the accept phase with the cached promise.
    second = Proposal(K, DeleteIf(1).apply, b(2), NAMES, 2,
                      prepared=first.outcome.state, next_promise=b(3))
    out = second.start()
    tomb = KeyState(2, False)
    assert out == [(n, Accept(K, b(2), tomb, b(3))) for n in NAMES]
    deliver_all(second, accs, out)
    assert second.outcome == Decided(KeyState(1, True, "v"), tomb, b(3))
    # Promise replies are irrelevant to a prepared proposal.
    third = Proposal(K, Read().apply, b(3), NAMES, 2, prepared=tomb, next_promise=b(4))
    third.start()
    assert third.receive("a", Promise(K, b(3), None, EMPTY)) == []
    assert third.outcome is None


def test_cached_promise_fails_once_a_higher_ballot_was_promised() -> None:
    accs = cluster()
    first = decide(accs, PutIfAbsent("v").apply, b(1), next_promise=b(2))
    assert isinstance(first.outcome, Decided)
    # Another proposer prepares higher on a quorum.
    rival = decide(accs, Read().apply, b(2, "q"), only={"b", "c"})
    assert isinstance(rival.outcome, Decided)
    second = decide(accs, DeleteIf(1).apply, b(2), prepared=first.outcome.state,
                    next_promise=b(3), only={"b", "c"})
    assert second.outcome == Conflict(b(2, "q"))


def test_zero_ballot_fast_path_on_a_fresh_key() -> None:
    accs = cluster()
    proposal = decide(accs, PutIfAbsent("v").apply, ZERO, prepared=EMPTY,
                      next_promise=Ballot(1, 1, "a"))
    new = KeyState(1, True, "v")
    assert proposal.outcome == Decided(EMPTY, new, Ballot(1, 1, "a"))
    assert all(a.record(K) == Record(Ballot(1, 1, "a"), ZERO, new) for a in accs.values())


def test_zero_ballot_is_refused_where_anything_was_promised() -> None:
    accs = cluster()
    rival = decide(accs, PutIfAbsent("rival").apply, b(1, "q"), only={"b", "c"})
    assert isinstance(rival.outcome, Decided)
    proposal = decide(accs, PutIfAbsent("v").apply, ZERO, prepared=EMPTY)
    assert proposal.outcome == Conflict(b(1, "q"))
    # The rival's value stays chosen: a later round finds it.
    later = decide(accs, Read().apply, b(2))
    assert isinstance(later.outcome, Decided)
    assert later.outcome.state == KeyState(1, True, "rival")


def test_a_chosen_value_survives_competing_proposers() -> None:
    accs = cluster(["a", "b", "c", "d", "e"])
    first = decide(accs, PutIfAbsent("first").apply, b(1, "p"), only={"a", "b", "c"})
    assert isinstance(first.outcome, Decided)
    # A rival that only reaches {c, d, e} must still see the chosen value via c.
    rival = decide(accs, PutIfAbsent("second").apply, b(2, "q"), only={"c", "d", "e"})
    assert isinstance(rival.outcome, Decided)
    assert rival.outcome.prior == KeyState(1, True, "first")
    assert rival.outcome.state == KeyState(1, True, "first")


def test_token_grows_through_consensus_rounds() -> None:
    accs = cluster()
    states = []
    changes: list[Change] = [PutIfAbsent("a"), DeleteIf(1), PutIfAbsent("b"), DeleteIf(1),
                             PutIfAbsent("c"), DeleteIf(3), Read(), PutIfAbsent("d")]
    for i, change in enumerate(changes, start=1):
        proposal = decide(accs, change.apply, b(i))
        assert isinstance(proposal.outcome, Decided)
        states.append(proposal.outcome.state)
    assert [s.token for s in states] == [1, 2, 3, 3, 3, 4, 4, 5]
    assert [s.value for s in states] == ["a", None, "b", "b", "b", None, None, "d"]


# -- quorum read ----------------------------------------------------------------------------


def test_quorum_read_agreement_returns_the_chosen_state() -> None:
    state = KeyState(3, True, "v")
    read = QuorumRead(K, NAMES, 2)
    read.receive("a", Observed(K, b(4), state))
    assert not read.done
    read.receive("a", Observed(K, b(4), state))  # a duplicate is not a second vote
    assert not read.done
    read.receive("b", Observed(K, b(4), state))
    assert read.done
    assert read.result == state
    read.receive("c", Observed(K, b(5), KeyState(4, False)))
    assert read.result == state


def test_quorum_read_waits_for_agreement_among_the_replies() -> None:
    read = QuorumRead(K, ["a", "b", "c", "d", "e"], 3)
    read.receive("a", Observed(K, b(1), KeyState(1, True, "old")))
    read.receive("b", Observed(K, b(2), KeyState(1, True, "new")))
    read.receive("c", Observed(K, b(2), KeyState(1, True, "new")))
    assert not read.done
    read.receive("d", Observed(K, b(2), KeyState(1, True, "new")))
    assert read.done
    assert read.result == KeyState(1, True, "new")


def test_quorum_read_of_a_key_nobody_accepted_is_empty() -> None:
    read = QuorumRead(K, NAMES, 2)
    read.receive("a", Observed(K, None, EMPTY))
    read.receive("c", Observed(K, None, EMPTY))
    assert read.done
    assert read.result == EMPTY


def test_quorum_read_is_inconclusive_when_no_quorum_can_agree() -> None:
    read = QuorumRead(K, NAMES, 2)
    read.receive("a", Observed(K, b(1), KeyState(1, True, "x")))
    read.receive("b", Observed(K, b(2), KeyState(1, True, "y")))
    assert not read.done  # c could still agree with either
    read.receive("c", Observed(K, None, EMPTY))
    assert read.done
    assert read.result is None


def test_quorum_read_ignores_other_keys() -> None:
    read = QuorumRead(K, NAMES, 2)
    read.receive("a", Observed("other", None, EMPTY))
    read.receive("b", Observed("other", None, EMPTY))
    assert not read.done
    read = QuorumRead(K, NAMES, 2)
    read.receive("a", Observed("a/key", None, EMPTY))  # a key that sorts before K
    read.receive("b", Observed("a/key", None, EMPTY))
    assert not read.done
    assert read.result is None


def test_quorum_read_on_a_single_node() -> None:
    read = QuorumRead(K, ["a"], 1)
    read.receive("a", Observed(K, b(1), KeyState(1, True, "v")))
    assert read.done
    assert read.result == KeyState(1, True, "v")


def test_quorum_read_gives_up_as_soon_as_no_quorum_can_agree() -> None:
    names = [f"n{i}" for i in range(7)]
    read = QuorumRead(K, names, 4)
    for i, name in enumerate(names[:5]):
        assert not read.done
        read.receive(name, Observed(K, b(i + 1), KeyState(1, True, i)))
    # Five different ballots: the two acceptors left cannot make any of them a quorum.
    assert read.done
    assert read.result is None


def test_quorum_read_against_acceptors() -> None:
    accs = cluster()
    decided = decide(accs, PutIfAbsent("v").apply, b(1), only={"a", "b"})
    assert isinstance(decided.outcome, Decided)
    read = QuorumRead(K, NAMES, 2)
    for name in ("c", "a", "b"):
        reply, write = accs[name].handle(Inspect(K))
        assert write is None
        assert isinstance(reply, Observed)
        read.receive(name, reply)
    assert read.result == decided.outcome.state


# -- a proposer's ballots and plans ----------------------------------------------------------


def test_issued_ballots_are_new_and_climb_one_round_above_what_they_must_pass() -> None:
    ballots = Ballots("n", 3)
    issued = [ballots.issue(), ballots.issue(), ballots.issue(b(7, "q", 9)),
              ballots.issue(b(2, "q")), ballots.issue()]
    assert issued == [Ballot(r, 3, "n") for r in (1, 2, 8, 9, 10)]


def test_a_fresh_key_at_its_home_skips_prepare_at_zero_and_all_else_runs_full_rounds() -> None:
    ballots = Ballots("n", 1)
    assert ballots.plan(K, zero=ZERO, known_key=False, above=None) == Plan(
        "zero", ZERO, EMPTY, Ballot(1, 1, "n"))
    assert ballots.plan(K, zero=ZERO, known_key=True, above=None) == Plan(
        "full", Ballot(2, 1, "n"), None, Ballot(3, 1, "n"))
    assert ballots.plan(K, zero=None, known_key=False, above=None) == Plan(
        "full", Ballot(4, 1, "n"), None, Ballot(5, 1, "n"))
    # After a conflict, never ZERO again: above what the conflict showed.
    assert ballots.plan(K, zero=ZERO, known_key=False, above=b(9, "q")) == Plan(
        "full", Ballot(10, 1, "n"), None, Ballot(11, 1, "n"))


def test_a_cached_promise_is_used_once_and_never_after_a_conflict() -> None:
    ballots = Ballots("n", 1)
    state = KeyState(1, True, "v")
    promised = ballots.issue()
    ballots.remember(K, Decided(EMPTY, state, promised))
    assert ballots.plan(K, zero=None, known_key=True, above=None) == Plan(
        "cached", promised, state, Ballot(2, 1, "n"))
    assert ballots.plan(K, zero=None, known_key=True, above=None).path == "full"  # used up
    ballots.remember(K, Decided(EMPTY, state, ballots.issue()))
    plan = ballots.plan(K, zero=None, known_key=True, above=b(20, "q"))
    assert (plan.path, plan.ballot) == ("full", Ballot(21, 1, "n"))
    assert ballots.plan(K, zero=None, known_key=True, above=None).path == "full"  # dropped
    # A decision without a promise, or a forgotten one, leaves nothing to use.
    ballots.remember("other", Decided(EMPTY, state, None))
    assert ballots.plan("other", zero=None, known_key=True, above=None).path == "full"
    ballots.remember(K, Decided(EMPTY, state, ballots.issue()))
    ballots.forget()
    assert ballots.plan(K, zero=None, known_key=True, above=None).path == "full"


def test_the_promise_cache_keeps_only_the_most_recently_decided_keys() -> None:
    ballots = Ballots("n", 1)
    decided = Decided(EMPTY, EMPTY, Ballot(1, 1, "n"))
    for i in range(MAX_CACHED_PROMISES):
        ballots.remember(f"k{i}", decided)

    def cached(key: str) -> bool:
        return ballots.plan(key, zero=None, known_key=True, above=None).path == "cached"

    assert cached("k0")  # a full cache keeps every key
    ballots.remember("k0", decided)
    ballots.remember("k1", decided)  # decided again: now among the newest
    ballots.remember("new", decided)  # one too many: the oldest one goes
    assert not cached("k2")
    assert cached("k1") and cached("k0") and cached("new") and cached("k3")


def test_a_hint_only_ever_raises_the_ballot() -> None:
    ballots = Ballots("n", 1)

    def ballot(above: Ballot | None, hint: Ballot | None) -> Ballot:
        plan = ballots.plan(K, zero=None, known_key=True, above=above, hint=hint)
        assert plan.path == "full" and plan.next_promise > plan.ballot
        return plan.ballot

    assert ballot(None, b(5, "q")) == Ballot(6, 1, "n")
    assert ballot(b(20, "q"), b(10, "q")) == Ballot(21, 1, "n")  # below the conflict
    assert ballot(b(30, "q"), b(40, "q")) == Ballot(41, 1, "n")  # above the conflict
    assert ballot(b(50, "q"), None) == Ballot(51, 1, "n")
    assert ballot(None, None) == Ballot(53, 1, "n")


# -- wire form -------------------------------------------------------------------------------

MESSAGES: list[Request | Reply] = [
    Prepare(K, b(1)),
    Prepare(K, ZERO),
    Accept(K, b(2), KeyState(1, True, {"v": [1, 2]}, {"session": "s"}), b(3)),
    Accept(K, ZERO, EMPTY),
    Inspect(K),
    Promise(K, b(4), None, EMPTY),
    Promise(K, b(4), b(3), KeyState(2, False)),
    Accepted(K, b(5)),
    Rejected(K, b(5), b(6, "q", 2)),
    Observed(K, None, EMPTY),
    Observed(K, b(7), KeyState(9, True, "x", {"deadline": 12.5})),
    Observed(K, b(7), KeyState(1, True, "x", {}, (("id-1", 5_000, 1, True),), 4_000)),
    TooEarly(K, b(8), 1_234),
    Commit(K, b(9)),
    Commit(K, b(9), KeyState(3, True, "caught up")),
    Learned(K, b(9)),
    Prepare(K, b(1), 7),
    Accept(K, zero(3), EMPTY, b(1, "p", 2), 3),
    Inspect(K, 2),
    Commit(K, b(9), KeyState(3, True, "caught up"), 5),
    Fenced(K, b(1), 4),
    Fenced(K, None, 4),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_encode_decode_round_trip(msg: Request | Reply) -> None:
    raw = json.loads(json.dumps(encode(msg)))
    assert decode(raw) == msg


def test_message_kinds_are_distinct_on_the_wire() -> None:
    kinds = {encode(m)[0] for m in MESSAGES}
    assert kinds == {"prepare", "accept", "inspect", "promise", "accepted", "rejected",
                     "observed", "too_early", "commit", "learned", "fenced"}


def test_bad_messages_are_refused() -> None:
    # An unknown kind (a newer peer's, a corrupt frame) is refused, never read as
    # another message, wherever it sorts among the known kinds.
    for kind in ("", "abort", "acceptance", "bogus", "unknown", "zzz"):
        with pytest.raises(ValueError, match="unknown message kind"):
            decode([kind, K, b(1).to_json(), EMPTY.to_json(), None])
    with pytest.raises(TypeError, match="not a message"):
        encode(KeyState())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a request"):
        Acceptor().handle(Accepted(K, b(1)))  # type: ignore[arg-type]


# -- deadlines: a tombstone that claims a deadline passed waits for the acceptors' clocks --


def _expiring(token: int = 1, until: int = 1_000) -> tuple[KeyState, KeyState]:
    live = KeyState(token, True, "v", {"until": until})
    return live, DeleteIf(token, not_before=until).apply(live)


def test_deadline_tombstone_records_its_deadline_and_round_trips() -> None:
    _, tombstone = _expiring()
    assert not tombstone.live and tombstone.token == 2
    assert tombstone.bindings == {"not_before": 1_000}
    assert _expiring(token=5)[1] == KeyState(6, False, None, {"not_before": 1_000})
    change = DeleteIf(1, not_before=1_000)
    assert change_from_json(json.loads(json.dumps(change.to_json()))) == change


def test_acceptor_refuses_a_deadline_tombstone_before_its_clock_reaches_it() -> None:
    _, tombstone = _expiring(until=1_000)
    acceptor = Acceptor()
    ballot = Ballot(1, 1, "a")
    reply, write = acceptor.handle(Accept(K, ballot, tombstone), now_ms=999)
    assert isinstance(reply, TooEarly) and reply.not_before == 1_000
    assert write is None and not acceptor.has_record(K)
    reply, write = acceptor.handle(Accept(K, ballot, tombstone), now_ms=1_000)
    assert isinstance(reply, Accepted) and write is not None


def test_a_plain_delete_is_never_refused_for_time() -> None:
    live = KeyState(1, True, "v", {"until": 10**15})
    reply, _ = Acceptor().handle(Accept(K, Ballot(1, 1, "a"), DeleteIf(1).apply(live)),
                                 now_ms=0)
    assert isinstance(reply, Accepted)


def test_one_slow_clock_does_not_stop_a_due_deadline_but_a_majority_does() -> None:
    live, tombstone = _expiring(until=1_000)
    ballot = Ballot(1, 1, "a")

    def run(clocks: dict[str, int]) -> Proposal:
        acceptors = {n: Acceptor() for n in NAMES}
        proposal = Proposal(K, lambda s: tombstone, ballot, NAMES, 2, prepared=live)
        for dest, msg in proposal.start():
            reply, _ = acceptors[dest].handle(msg, now_ms=clocks[dest])
            proposal.receive(dest, reply)
        return proposal

    one_slow = run({"a": 500, "b": 1_000, "c": 1_001})
    assert isinstance(one_slow.outcome, Decided) and not one_slow.outcome.state.live
    two_slow = run({"a": 500, "b": 999, "c": 1_001})
    assert two_slow.outcome == Premature(1_000)


def test_premature_only_once_too_few_acceptors_are_left_for_a_quorum() -> None:
    live, tombstone = _expiring(until=1_000)
    names = ["a", "b", "c", "d", "e"]
    proposal = Proposal(K, lambda s: tombstone, b(1), names, 3, prepared=live)
    proposal.start()
    for name in ("a", "b", "b"):
        proposal.receive(name, TooEarly(K, b(1), 1_000))
    assert proposal.outcome is None  # c, d and e can still make a quorum
    proposal.receive("c", TooEarly(K, b(1), 1_000))
    assert proposal.outcome == Premature(1_000)


def test_a_put_built_on_a_deadline_tombstone_waits_for_the_deadline_too() -> None:
    _, tombstone = _expiring(until=1_000)
    # Batched or in a later round, a put on the tombstone must not slip past the clocks.
    replaced = PutIfAbsent("new").apply(tombstone)
    assert replaced.live and replaced.token == 3
    assert public_bindings(replaced) == {}
    acceptor = Acceptor()
    reply, write = acceptor.handle(Accept(K, Ballot(1, 1, "a"), replaced), now_ms=999)
    assert isinstance(reply, TooEarly) and write is None
    reply, _ = acceptor.handle(Accept(K, Ballot(1, 1, "a"), replaced), now_ms=1_000)
    assert isinstance(reply, Accepted)


def test_a_renewed_deadline_is_not_ended_by_the_old_one() -> None:
    live = KeyState(1, True, "session", {"until": 1_000})
    renewed = Renew(1, 5_000).apply(live)
    assert renewed.token == 1 and renewed.bindings == {"until": 5_000}
    assert DeleteIf(1, not_before=1_000).apply(renewed) == renewed
    assert not DeleteIf(1, not_before=5_000).apply(renewed).live
    assert not DeleteIf(1, not_before=6_000).apply(renewed).live  # its deadline has passed
    assert Renew(2, 9_000).apply(renewed) == renewed, "another generation is left alone"


# -- at most once, deadlines that only move later, guards carried forward ---------------


def test_a_put_knows_whether_it_won_from_what_it_answered() -> None:
    mine = PutIfAbsent("me", {}, "mine", expires=5_000)
    theirs = PutIfAbsent("me", {}, "theirs", expires=5_000)  # the same value, another put
    after_mine, after_theirs, again = answers(EMPTY, [mine, theirs, mine])
    assert after_mine is not None and mine.won(after_mine)
    assert after_theirs is not None and after_theirs.value == "me"
    assert not theirs.won(after_theirs), "the same value put by another is not a win"
    assert again is not None and mine.won(again), "a repeat answers as the first run did"
    ended = step(DeleteIf(1), after_mine)
    assert not mine.won(ended) and not theirs.won(ended)


def test_a_put_with_an_id_takes_effect_at_most_once_even_after_a_delete() -> None:
    # Regression (issue 8, violation 2): a forwarded put that ran again after the key
    # was deleted brought the deleted value back.
    put = PutIfAbsent("v", {}, "id-1", expires=10_000)
    first = step(put, EMPTY)
    assert first.generation() == (1, True, "v")
    deleted = step(DeleteIf(1), first)
    assert deleted.generation() == (2, False, None)
    again = step(put, deleted)
    assert again == deleted  # the repeat changes nothing
    # ... and answers as the first run did: it created generation 1; the changes
    # batched after it still run.
    repeat, following = answers(deleted, [put, PutIfAbsent("w")])
    assert repeat is not None and repeat.generation() == (1, True, "v") and put.won(repeat)
    assert following == KeyState(3, True, "w", {}, deleted.applied)


def test_a_delete_of_a_generation_not_made_yet_takes_effect_at_most_once() -> None:
    # Regression (issue 8, found by a fault run): delete(1) ran on the absent key and
    # answered "not deleted"; a put made generation 1; a later run of the same delete
    # (hedged, held by a stalled home) ended it.
    delete = DeleteIf(1, None, "del-1", expires=10_000)
    behind = step(delete, EMPTY)
    assert behind.generation() == EMPTY.generation() and delete.ended(behind) is False
    put = step(PutIfAbsent("v", {}, "put-1", 10_000), behind)
    assert put.generation() == (1, True, "v")
    again = step(delete, put)
    assert again == put and delete.ended(again) is False  # as the first run answered
    # A delete that ends its generation answers so, and so does any later run of it.
    other = DeleteIf(1, None, "del-2", expires=10_000)
    ended = step(other, put)
    assert ended.generation() == (2, False, None) and other.ended(ended) is True
    assert step(other, ended) == ended and delete.ended(ended) is True
    # Without an id (a lifetime's or a node's internal delete of a generation it saw
    # live), nothing is remembered: the state stays compact.
    assert step(DeleteIf(3), ended) is ended
    # Its id forgotten, a run cannot tell whether an earlier one ran behind: it does
    # nothing, and `ended` says the answer is unknown.
    late = DeleteIf(1, None, "del-3", expires=5_000)
    forgot = put._replace(horizon=5_000)
    assert step(late, forgot) == forgot and late.ended(forgot) is None
    assert change_from_wire(delete) == delete


def test_a_losing_put_is_remembered_too() -> None:
    held = step(PutIfAbsent("other", {}, "id-0", 10_000), EMPTY)
    loser = PutIfAbsent("mine", {}, "id-1", 10_000)
    after = step(loser, held)
    assert after.generation() == held.generation()
    assert answers(held, [loser]) == [after]
    # A repeat answers as the first run did while the generation it lost to lasts ...
    assert answers(after, [loser]) == [after]
    tomb = step(DeleteIf(1), after)
    assert step(loser, tomb) == tomb  # it lost once: it never wins later
    assert answers(tomb, [loser]) == [None]  # ... and is unknown once that one ended
    newer = step(PutIfAbsent("third"), tomb)
    assert answers(newer, [loser]) == [None]  # ... even once another generation is live


def test_put_ids_tokens_and_deadlines_from_the_wire_are_recognised() -> None:
    # States and changes arrive decoded from JSON: equal to the sender's, never the same
    # objects. Tokens grow without bound (past the small ints Python shares).
    held = KeyState(1001, True, "held", {UNTIL: 5_000})
    loser = PutIfAbsent("mine", {}, "id-1", 60_000)
    after = state_from_disk(step(loser, held))
    again = change_from_wire(loser)
    assert isinstance(again, PutIfAbsent) and again.repeated(after)
    assert step(again, after) == after
    assert answers(after, [again]) == [after]
    assert step(change_from_wire(Renew(1001, 9_000)), after).bindings[UNTIL] == 9_000
    assert step(change_from_wire(DeleteIf(1001)), after).generation() == (1002, False, None)
    ended = step(change_from_wire(DeleteIf(1001, not_before=5_000)), after)
    assert ended == KeyState(1002, False, None, {NOT_BEFORE: 5_000}, after.applied)


def test_forgotten_ids_raise_the_horizon_and_older_puts_are_refused() -> None:
    state = EMPTY
    state = step(PutIfAbsent("a", {}, "old", expires=1_000), state)
    state = step(PutIfAbsent("b", {}, "new", expires=1_000 + FORGET_AFTER_MS + 1), state)
    assert [a[0] for a in state.applied] == ["new"]
    assert state.horizon == 1_000
    stale = PutIfAbsent("c", {}, "never-seen", expires=999)
    assert stale.repeated(state) and step(stale, state) == state
    assert answers(state, [stale]) == [None]  # it may have run: its outcome is unknown


def test_ids_are_forgotten_oldest_expiry_first_and_only_past_the_window() -> None:
    now = 1_760_000_000_000  # expiries are clock times, in ms since the epoch
    state = step(PutIfAbsent("x", {}, "x", expires=now + 50_000), EMPTY)  # generation 1
    state = step(DeleteIf(1), state)
    # A put with an earlier expiry that runs later wins generation 3 ...
    state = step(PutIfAbsent("y", {}, "y", expires=now + 30_000), state)
    # ... and is still remembered after a put exactly FORGET_AFTER_MS newer ...
    state = step(PutIfAbsent("z", {}, "z", expires=now + 30_000 + FORGET_AFTER_MS), state)
    assert sorted(a[0] for a in state.applied) == ["x", "y", "z"]
    assert state.horizon == 0
    # ... but not after one a millisecond newer still: only it is forgotten.
    state = step(PutIfAbsent("w", {}, "w", expires=now + 30_001 + FORGET_AFTER_MS), state)
    assert sorted(a[0] for a in state.applied) == ["w", "x", "z"]
    assert state.horizon == now + 30_000
    assert state.generation() == (3, True, "y")


def test_a_repeat_of_the_last_forgotten_put_is_refused() -> None:
    # Found by mutation testing: `repeated` compared with `<`, so the last put
    # forgotten (whose expiry is the horizon) could run twice.
    old = PutIfAbsent("a", {}, "old", expires=1_000)
    state = step(DeleteIf(1), step(old, EMPTY))
    state = step(PutIfAbsent("b", {}, "new", expires=1_000 + FORGET_AFTER_MS + 1), state)
    state = step(DeleteIf(3), state)
    assert state.horizon == 1_000 and not any(a[0] == "old" for a in state.applied)
    # A retry of "old" arriving now may be a repeat: it must not bring "a" back.
    assert step(old, state) == state


def test_the_id_table_is_bounded() -> None:
    state = EMPTY
    for n in range(MAX_APPLIED + 5):
        state = step(PutIfAbsent(n, {}, f"id-{n}", expires=5_000 + n), state)
    assert len(state.applied) == MAX_APPLIED
    assert state.horizon == 5_004
    assert state.generation() == (1, True, 0)


def test_renew_never_moves_a_deadline_back() -> None:
    # Regression (issue 8, violation 5): a stale keep-alive landing last shortened it.
    live = KeyState(1, True, "s", {UNTIL: 1_000})
    later = Renew(1, 5_000).apply(live)
    assert later.bindings[UNTIL] == 5_000
    assert Renew(1, 4_000).apply(later) is later
    assert Renew(3, 9_000).apply(later) is later  # another generation: untouched
    current = KeyState(3, True, "s", {UNTIL: 1_000})
    assert Renew(1, 9_000).apply(current) is current  # a stale one for an older generation


def test_every_change_keeps_the_deadline_guard_it_builds_on() -> None:
    # Regression (issue 8, violation 4): a delete built on a deadline tombstone that
    # was not yet chosen dropped the guard, so a fast clock could end the key early.
    tomb = KeyState(2, False, None, {NOT_BEFORE: 7_000})
    put = step(PutIfAbsent("v", {UNTIL: 8_000}), tomb)
    assert put.bindings[NOT_BEFORE] == 7_000
    for change in (DeleteIf(3), Renew(3, 9_000), DeleteIf(3, not_before=6_000)):
        assert not_before(step(change, put)) == 7_000, change
    assert not_before(step(DeleteIf(3, not_before=8_000), put)) == 8_000  # the larger one
    # A deadline that ends the key before the guard it builds on keeps the guard.
    early = step(PutIfAbsent("v", {UNTIL: 5_000}), tomb)
    ended = step(DeleteIf(3, not_before=6_000), early)
    assert not ended.live and not_before(ended) == 7_000
    # ... and where there is no guard, none is added.
    assert step(PutIfAbsent("v", {UNTIL: 8_000}), EMPTY) == KeyState(1, True, "v", {UNTIL: 8_000})


def test_a_swap_gives_the_live_generation_a_new_value_as_a_new_generation() -> None:
    bound = {UNTIL: 9_000, "pid": "s1", "key": {"name": "p", "token": 3}}
    live = KeyState(5, True, "a", bound, (("put-1", 4_000, 5, True),), 1_000)
    swapped = SwapIf(5, "b").apply(live)
    # The lifetime stays: bindings, remembered put ids and horizon are kept.
    assert swapped == KeyState(6, True, "b", bound, live.applied, 1_000)
    assert SwapIf(4, "b").apply(live) is live  # another generation: untouched
    assert SwapIf(6, "b").apply(live) is live
    for dead in (EMPTY, KeyState(6, False), KeyState(6, False, None, {NOT_BEFORE: 5})):
        assert SwapIf(dead.token, "b").apply(dead) is dead  # an absent key never matches


def test_a_swap_takes_effect_at_most_once_even_after_its_value_came_back() -> None:
    # A, B, A: a replay of the first swap must not find "its" generation again.
    swap = SwapIf(1, "b", "id-1", 10_000)
    state = step(swap, step(PutIfAbsent("a"), EMPTY))
    assert state.generation() == (2, True, "b") and swap.swapped(state)
    back = step(SwapIf(2, "a", "id-2", 10_000), state)
    assert back.generation() == (3, True, "a")
    assert step(swap, back) == back  # the replay does nothing ...
    assert swap.swapped(back) is True  # ... and still knows it took effect
    assert answers(back, [swap]) == [back]


def test_a_swap_knows_whether_it_took_effect_whichever_run_answers() -> None:
    held = KeyState(1, True, 5)
    mine = SwapIf(1, 6, "mine", 10_000)
    theirs = SwapIf(1, 6, "theirs", 10_000)  # the same increment by another client
    after_mine, after_theirs, again = answers(held, [mine, theirs, mine])
    assert after_mine is not None and after_mine.generation() == (2, True, 6)
    assert after_theirs == after_mine and after_theirs is not None
    assert mine.swapped(after_mine) and not theirs.swapped(after_theirs), \
        "only one of two swaps from the same generation took effect"
    assert again is not None and mine.swapped(again)
    ended = step(DeleteIf(2), after_mine)  # the id outlives the generation it made
    assert mine.swapped(ended) and not theirs.swapped(ended)
    # Once its id may have been forgotten, it cannot tell.
    late = step(PutIfAbsent("x", {}, "later", 10_000 + FORGET_AFTER_MS + 1), ended)
    assert late.horizon == 10_000 and mine.swapped(late) is None
    assert theirs.swapped(late) is None
    # The swaps' ids are forgotten as puts' are: the table stays bounded.
    for n in range(MAX_APPLIED + 5):
        late = step(SwapIf(late.token, n, f"s{n}", 30_000 + n), late)
    assert len(late.applied) == MAX_APPLIED and late.generation()[2] == MAX_APPLIED + 4


def test_a_swap_keeps_the_deadline_guard_and_its_wire_form() -> None:
    put = step(PutIfAbsent("v", {UNTIL: 8_000}), KeyState(2, False, None, {NOT_BEFORE: 7_000}))
    swapped = step(change_from_wire(SwapIf(3, "w", "id", 9_000)), put)
    assert swapped.generation() == (4, True, "w") and not_before(swapped) == 7_000
    assert public_bindings(swapped) == {UNTIL: 8_000}
    assert state_from_disk(swapped) == swapped
    assert SwapIf(3, "w", "id", 9_000).swapped(state_from_disk(swapped))


def test_values_compare_as_json() -> None:
    assert same_json({"a": 1, "b": [True, None]}, {"b": [True, None], "a": 1})
    assert same_json("x", "x") and same_json(2**64 - 1, 2**64 - 1)
    for a, b in ((True, 1), (1, 1.0), (0, False), ("1", 1), ([1, 2], [2, 1]), ({}, [])):
        assert not same_json(a, b), (a, b)


def test_local_reads_serve_only_chosen_states() -> None:
    acc = Acceptor()
    first = KeyState(1, True, "v1")
    acc.handle(Accept(K, b(1), first))
    assert acc.chosen_state(K) == EMPTY  # accepted here, not known chosen
    assert acc.handle(Commit(K, b(1)))[0] == Learned(K, b(1))
    assert acc.chosen_state(K) == first
    second = KeyState(2, False)
    acc.handle(Accept(K, b(2), second))
    assert acc.chosen_state(K) == first  # the newer one is not known chosen yet
    acc.handle(Commit(K, b(2)))
    assert acc.chosen_state(K) == second


def test_a_commit_with_the_state_catches_a_lagging_acceptor_up() -> None:
    acc = Acceptor()
    acc.handle(Prepare(K, b(5)))
    state = KeyState(1, True, "v")
    _, write = acc.handle(Commit(K, b(3), state))
    assert write is not None and write[1] == Record(b(5), b(3), state, True)
    assert acc.chosen_state(K) == state
    newer = KeyState(3, True, "w")
    acc.handle(Accept(K, b(6), newer))
    assert acc.handle(Commit(K, b(3), state))[1] is None  # older than what it holds
    assert acc.record(K).state == newer


def test_a_commit_catches_up_an_acceptor_that_accepted_an_older_ballot() -> None:
    acc = Acceptor()
    acc.handle(Accept(K, b(1), KeyState(1, True, "old")))
    chosen = KeyState(2, False)
    assert acc.handle(Commit(K, b(3), chosen)) == (
        Learned(K, b(3)), (K, Record(b(3), b(3), chosen, True)))
    assert acc.chosen_state(K) == chosen


def test_a_state_only_accepted_is_never_served_even_once_replaced() -> None:
    acc = Acceptor()
    acc.handle(Accept(K, b(1), KeyState(1, True, "v1")))
    acc.handle(Accept(K, b(2), KeyState(2, False)))
    assert acc.chosen_state(K) == EMPTY


def test_a_retransmitted_accept_of_the_chosen_ballot_keeps_it_chosen() -> None:
    acc = Acceptor()
    state = KeyState(1, True, "v")
    msg = Accept(K, b(1), state)
    acc.handle(msg)
    acc.handle(Commit(K, b(1)))
    assert acc.handle(msg) == (Accepted(K, b(1)), None)
    assert acc.chosen_state(K) == state
    assert acc.record(K) == Record(b(1), b(1), state, True)


def test_a_new_ballot_is_not_known_chosen_until_its_commit_even_with_the_same_state() -> None:
    acc = Acceptor()
    state = KeyState(1, True, "v")
    acc.handle(Accept(K, b(1), state))
    acc.handle(Commit(K, b(1)))
    # A read re-proposes the same state at b(2): chosen at b(1), not (yet) at b(2).
    assert acc.handle(Accept(K, b(2), state))[1] == (K, Record(b(2), b(2), state, False))
    assert acc.chosen_state(K) == state  # what it knows chosen, at b(1)
    assert acc.handle(Commit(K, b(2)))[1] == (K, Record(b(2), b(2), state, True))
    assert acc.chosen_state(K) == state


def test_commits_older_than_the_accepted_ballot_teach_only_the_latest_chosen_state() -> None:
    acc = Acceptor()
    pending = KeyState(4, True, "pending")
    acc.handle(Accept(K, b(9), pending))  # accepted here, not known chosen
    s3, s5, s7 = KeyState(1, True, "s3"), KeyState(2, False), KeyState(3, True, "s7")
    assert acc.handle(Commit(K, b(5), s5)) == (Learned(K, b(5)), None)
    assert acc.chosen_state(K) == s5
    acc.handle(Commit(K, b(3), s3))  # a late commit of an older round
    assert acc.chosen_state(K) == s5
    acc.handle(Commit(K, b(7), s7))
    assert acc.chosen_state(K) == s7
    acc.handle(Commit(K, b(9)))
    assert acc.chosen_state(K) == pending
    acc.handle(Commit(K, b(8), s7))  # older than the chosen record: changes nothing
    assert acc.chosen_state(K) == pending
    assert acc.record(K) == Record(b(9), b(9), pending, True)


def test_a_commit_mark_marks_only_the_ballot_this_acceptor_accepted() -> None:
    """A bare mark (no state) names a ballot: it may mark chosen only the state this
    acceptor accepted at that very ballot. A late mark of an older round, or the mark
    of a round this acceptor missed, must not make a merely accepted state servable."""
    acc = Acceptor()
    assert acc.mark_chosen(K, b(1)) is False  # nothing held: nothing to mark or persist
    assert acc.handle(Commit(K, b(1))) == (Learned(K, b(1)), None)
    assert not acc.has_record(K)
    acc.handle(Accept(K, b(1), KeyState(1, True, "v1")))
    pending = KeyState(2, False)
    acc.handle(Accept(K, b(3), pending))
    for other in (b(1), b(2), b(4)):  # older than what it holds, and rounds it missed
        assert acc.mark_chosen(K, other) is False, other
        assert acc.handle(Commit(K, other)) == (Learned(K, other), None), other
    assert acc.chosen_state(K) == EMPTY
    assert acc.record(K) == Record(b(3), b(3), pending, False)


def test_a_commit_mark_after_a_higher_promise_marks_the_record_once() -> None:
    acc = Acceptor()
    state = KeyState(1, True, "v")
    acc.handle(Accept(K, b(1), state))
    acc.handle(Prepare(K, b(2)))  # promised higher, accepted nothing at it
    assert acc.handle(Commit(K, b(1))) == (Learned(K, b(1)), (K, Record(b(2), b(1), state, True)))
    assert acc.chosen_state(K) == state
    # Marked already: a repeated mark changes nothing and has nothing to persist.
    assert acc.mark_chosen(K, b(1)) is False
    assert acc.handle(Commit(K, b(1))) == (Learned(K, b(1)), None)
    acc2 = Acceptor()
    acc2.handle(Accept(K, b(1), state))
    assert acc2.mark_chosen(K, b(1)) is True  # the node's own path to the same mark
    assert acc2.mark_chosen(K, b(1)) is False
    assert acc2.record(K) == Record(b(1), b(1), state, True)


def test_a_commit_with_the_state_an_acceptor_already_accepted_marks_its_record_chosen() -> None:
    """A commit carries the state to acceptors the proposer did not hear accept; one
    whose Accepted reply was lost holds it already, and must mark it chosen durably."""
    acc = Acceptor()
    state = KeyState(1, True, "v")
    acc.handle(Accept(K, b(1), state))
    commit = decode(encode(Commit(K, b(1), state)))  # as it arrives from the wire
    assert isinstance(commit, Commit)
    assert acc.handle(commit) == (Learned(K, b(1)), (K, Record(b(1), b(1), state, True)))
    assert acc.chosen_state(K) == state
    assert acc.handle(commit) == (Learned(K, b(1)), None)  # a repeat: nothing new
