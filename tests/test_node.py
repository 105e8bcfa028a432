"""The node driver's pure helpers, tested without sockets."""

from __future__ import annotations

from paxoskv.core.ballot import Ballot
from paxoskv.core.state import KeyState
from paxoskv.server.node import Attempt, _base

LIVE = KeyState(1, True, "v")
TOMB = KeyState(2, False)


def b(round_: int, node: str = "a") -> Ballot:
    return Ballot(round_, 1, node)


def test_a_batch_answers_from_the_deciding_attempts_prior() -> None:
    assert _base([Attempt(b(1), None, LIVE)]) == LIVE


def test_an_earlier_attempt_found_accepted_at_its_own_ballot_is_where_the_batch_ran() -> None:
    # Attempt 1 (a delete of generation 1) proposed TOMB at b(1); its outcome was unknown.
    # Attempt 2's prepare found TOMB accepted at b(1): attempt 1 was chosen.
    attempts = [Attempt(b(1), b(0, "z"), LIVE), Attempt(b(3), b(1), TOMB)]
    assert _base(attempts) == LIVE


def test_an_equal_state_from_someone_else_is_not_the_batchs_own() -> None:
    # Regression (simulator seed 4348): attempt 1 proposed TOMB but was not chosen; another
    # node's delete of the same generation made the same TOMB at its own ballot. A read in
    # the batch must answer the tombstone, not the live value attempt 1 started from.
    attempts = [Attempt(b(1), b(0, "z"), LIVE), Attempt(b(3), b(2, "c"), TOMB)]
    assert _base(attempts) == TOMB


def test_a_chain_of_own_attempts_leads_back_to_the_first() -> None:
    attempts = [Attempt(b(1), None, LIVE), Attempt(b(2), b(1), TOMB), Attempt(b(4), b(2), TOMB)]
    assert _base(attempts) == LIVE
