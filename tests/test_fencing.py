"""Fencing by configuration epoch (core.config, 2): acceptors refuse requests of
older epochs, durably per key, and proposers stop at the first refusal."""

from __future__ import annotations

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.ballot import Ballot, zero
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Commit,
    Fenced,
    Inspect,
    Observed,
    Prepare,
    Promise,
)
from paxoskv.core.proposer import Proposal, QuorumRead, Stale
from paxoskv.core.state import EMPTY, KeyState

K = "bucket/key"
V = KeyState(1, True, "v")


def b(round_: int, node: str = "p") -> Ballot:
    return Ballot(round_, 1, node)


def test_an_acceptor_refuses_every_request_older_than_its_nodes_epoch() -> None:
    acc = Acceptor(epoch=3)
    for request in (Prepare(K, b(1), 2), Accept(K, b(1), V, None, 2), Commit(K, b(1), V, 2)):
        assert acc.handle(request) == (Fenced(K, b(1), 3), None)
    assert acc.handle(Inspect(K, 2)) == (Fenced(K, None, 3), None)
    assert not acc.has_record(K)  # nothing written, nothing promised
    assert acc.handle(Prepare(K, b(1), 3))[0] == Promise(K, b(1), None, EMPTY)


def test_a_newer_epoch_is_written_with_the_promise_and_fences_the_key() -> None:
    """The rescan's case: a member that has not adopted epoch 5 yet promises an
    epoch-5 round; a late accept of an epoch-4 round with a higher ballot must
    not land, even after a restart from the written records."""
    acc = Acceptor(epoch=4)
    reply, write = acc.handle(Prepare(K, b(2, "rescan"), 5))
    assert reply == Promise(K, b(2, "rescan"), None, EMPTY)
    assert write == (K, Record(b(2, "rescan"), None, EMPTY, False, 5))
    late = Accept(K, b(9, "old"), V, None, 4)
    assert acc.handle(late) == (Fenced(K, b(9, "old"), 5), None)
    restarted = Acceptor({K: write[1]}, epoch=4)
    assert restarted.handle(late) == (Fenced(K, b(9, "old"), 5), None)
    assert restarted.handle(Accept(K, b(2, "rescan"), V, None, 5))[0] == Accepted(
        K, b(2, "rescan"))
    # Other keys are fenced only by the node's epoch.
    assert acc.handle(Accept("other", b(9, "old"), V, None, 4))[0] == Accepted(
        "other", b(9, "old"))


def test_the_key_epoch_survives_accepts_commits_and_marks() -> None:
    acc = Acceptor()
    acc.handle(Accept(K, b(1), V, None, 2))
    assert acc.record(K).epoch == 2
    acc.handle(Commit(K, b(1), None, 2))  # a bare commit mark
    assert acc.record(K) == Record(b(1), b(1), V, True, 2)
    _, caught_up = acc.handle(Commit("lagging", b(3), V, 6))
    assert caught_up == ("lagging", Record(b(3), b(3), V, True, 6))
    assert Record.from_json(acc.record(K).to_json()) == acc.record(K)
    assert Record.from_json([None, None, EMPTY.to_json(), False]).epoch == 0  # older records


def test_a_proposal_stops_at_the_first_fenced_reply_and_carries_its_epoch() -> None:
    proposal = Proposal(K, lambda s: V, b(1), ["a", "b", "c"], 2, epoch=4)
    assert [msg for _, msg in proposal.start()] == [Prepare(K, b(1), 4)] * 3
    proposal.receive("a", Promise(K, b(1), None, EMPTY))
    proposal.receive("b", Fenced(K, b(1), 5))
    assert proposal.outcome == Stale(5, "b")
    assert proposal.receive("c", Promise(K, b(1), None, EMPTY)) == []  # over
    fast = Proposal(K, lambda s: V, zero(4), ["a", "b", "c"], 2, prepared=EMPTY, epoch=4)
    assert [msg for _, msg in fast.start()] == [Accept(K, zero(4), V, None, 4)] * 3


def test_a_quorum_read_is_inconclusive_once_a_member_knows_a_newer_epoch() -> None:
    read = QuorumRead(K, ["a", "b", "c"], 2, epoch=4)
    assert [msg for _, msg in read.start()] == [Inspect(K, 4)] * 3
    read.receive("a", Observed(K, b(1), V))
    read.receive("b", Fenced(K, None, 5))
    assert (read.done, read.result, read.stale) == (True, None, Stale(5, "b"))
    read.receive("c", Observed(K, b(1), V))
    assert read.result is None
