"""The history checker finds planted anomalies and passes correct histories."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from tests.faults.checker import Kind, Op, SessionLog, check, sessions_live_while_promised


def put(p: int, t0: float, t1: float, value: str, seen: str, token: int, **kw: object) -> Op:
    return Op(p, "put", "k", t0, t1, "ok", value=value, found=True, seen_value=seen,
              token=token, **kw)  # type: ignore[arg-type]


def get(p: int, t0: float, t1: float, seen: str | None, token: int) -> Op:
    return Op(p, "get", "k", t0, t1, "ok", found=seen is not None, seen_value=seen,
              token=token)


def delete(p: int, t0: float, t1: float, token_arg: int, token: int) -> Op:
    return Op(p, "delete", "k", t0, t1, "ok", token_arg=token_arg, token=token,
              deleted=True)


def swap(p: int, t0: float, t1: float, expected: str, value: str, seen: str | None,
         token: int, swapped: bool = True, token_arg: int = 0) -> Op:
    return Op(p, "swap", "k", t0, t1, "ok", value=value, expected=expected,
              token_arg=token_arg, found=seen is not None, seen_value=seen, token=token,
              swapped=swapped)


def test_a_correct_history_with_concurrency_and_unknowns_passes() -> None:
    history = [
        put(1, 0.0, 1.0, "a", "a", 1),
        put(2, 0.5, 1.5, "b", "a", 1),  # first write wins
        get(3, 0.2, 0.3, None, 0),  # before the put took effect: fine, it overlaps
        delete(1, 2.0, 2.5, 1, 2),
        Op(2, "put", "k", 3.0, math.inf, "unknown", value="c"),  # outcome unknown
        get(3, 4.0, 4.1, "c", 3),  # ... but it happened
        get(1, 5.0, 5.1, "c", 3),
    ]
    report = check(history)
    assert report.ok, report.anomalies
    assert report.operations == 7


def test_lost_acknowledged_put_is_found() -> None:
    history = [put(1, 0.0, 1.0, "a", "a", 1), get(2, 2.0, 2.1, None, 0)]
    anomalies = check(history).anomalies
    assert any("acknowledged state lost" in a for a in anomalies)


def test_two_values_for_one_generation_are_found() -> None:
    history = [put(1, 0.0, 1.0, "a", "a", 1), put(2, 0.0, 1.0, "b", "b", 1)]
    assert any("decided twice" in a for a in check(history).anomalies)


def test_a_value_from_nowhere_is_found() -> None:
    history = [get(1, 0.0, 1.0, "ghost", 1)]
    assert any("could have created" in a for a in check(history).anomalies)


def test_a_read_of_a_future_write_is_found() -> None:
    history = [get(1, 0.0, 1.0, "a", 1), put(2, 2.0, 3.0, "a", "a", 1)]
    assert any("could have created" in a for a in check(history).anomalies)


def test_a_deleted_value_coming_back_is_found() -> None:
    history = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
               get(2, 4.0, 5.0, "a", 1)]
    assert any("acknowledged state lost" in a for a in check(history).anomalies)


def test_failed_operations_create_nothing() -> None:
    history = [Op(1, "put", "k", 0.0, 1.0, "fail", value="a"), get(2, 2.0, 3.0, "a", 1)]
    assert any("could have created" in a for a in check(history).anomalies)


def test_a_key_gone_before_its_deadline_is_found() -> None:
    until_ms = 10_000
    history = [put(1, 0.0, 1.0, "a", "a", 1, until=until_ms), get(2, 5.0, 6.0, None, 2)]
    assert any("while its bindings lived" in a
               for a in check(history, bindings_end_keys=True).anomalies)
    after = [put(1, 0.0, 1.0, "a", "a", 1, until=until_ms), get(2, 11.0, 12.0, None, 2)]
    assert check(after, bindings_end_keys=True).ok


def test_tombstones_need_a_delete_unless_bindings_end_keys() -> None:
    for binding in ({"until": 1500}, {"session": "s1"}, {"bound": True}):
        history = [put(1, 0.0, 1.0, "a", "a", 1, **binding), get(2, 2.0, 3.0, None, 2)]
        assert not check(history).ok
        assert check(history, bindings_end_keys=True, sessions_alive_until={}).ok
    # Where bindings end keys, an unbound generation still needs a delete to end: seen
    # directly, or as a gap below a later generation (a fault run's anomaly, issue 8).
    unbound = [put(1, 0.0, 1.0, "a", "a", 1), get(2, 2.0, 3.0, None, 2)]
    assert "no delete invoked before it could have ended generation 1" in " ".join(
        check(unbound, bindings_end_keys=True).anomalies)
    gap = [put(1, 0.0, 1.0, "a", "a", 1), put(2, 2.0, 3.0, "b", "b", 3, until=9000)]
    assert any("could have ended generation 1" in a
               for a in check(gap, bindings_end_keys=True).anomalies)


def test_live_and_tombstone_tokens_must_match_found() -> None:
    history = [get(1, 0.0, 1.0, None, 1)]
    assert any("odd tokens are live" in a for a in check(history).anomalies)


def test_swaps_decide_live_generations_from_live_ones() -> None:
    history = [
        put(1, 0.0, 1.0, "a", "a", 1),
        swap(2, 2.0, 3.0, "a", "b", "b", 2),
        swap(3, 2.5, 3.5, "a", "c", "b", 2, swapped=False),  # lost to p2's
        get(1, 4.0, 4.1, "b", 2),  # a live token may be even now
        swap(1, 5.0, 6.0, "b", "d", "d", 3, token_arg=2),
        Op(2, "swap", "k", 6.5, math.inf, "unknown", value="e", expected="d"),
        delete(3, 7.0, 8.0, 4, 5),  # the unknown swap took effect: generation 4
        get(2, 9.0, 9.1, None, 5),
        put(1, 10.0, 11.0, "f", "f", 6),
    ]
    for ends in (False, True):
        report = check(history, bindings_end_keys=ends)
        assert report.ok, report.anomalies
    # A swap answered swapped=false decided nothing: its value is an anomaly.
    lost = [*history[:2], swap(3, 2.5, 3.5, "a", "c", "b", 2, swapped=False),
            get(1, 4.0, 4.1, "c", 3)]
    assert any("answered swapped=false, yet" in a for a in check(lost).anomalies)


def test_a_lifetime_goes_on_through_swaps() -> None:
    until_ms = 10_000
    history = [put(1, 0.0, 1.0, "a", "a", 1, until=until_ms),
               swap(2, 2.0, 3.0, "a", "b", "b", 2), get(1, 4.0, 5.0, "b", 2)]
    assert check(history, bindings_end_keys=True).ok
    gone = [*history, get(2, 6.0, 7.0, None, 3)]
    assert any("while its bindings lived" in a
               for a in check(gone, bindings_end_keys=True).anomalies)
    deleted = [*history, delete(2, 5.5, 5.6, 2, 3), get(1, 6.0, 7.0, None, 3)]
    assert check(deleted, bindings_end_keys=True).ok


def test_a_key_gone_while_its_session_lived_is_found() -> None:
    history = [put(1, 0.0, 1.0, "a", "a", 1, session="s1"), get(2, 5.0, 6.0, None, 2)]
    early = check(history, bindings_end_keys=True, sessions_alive_until={"s1": 8.0})
    assert any("while its bindings lived" in a for a in early.anomalies)
    later = check(history, bindings_end_keys=True, sessions_alive_until={"s1": 4.0})
    assert later.ok, later.anomalies


def test_a_generation_skipped_without_a_delete_is_found() -> None:
    # put a -> token 1, then put b -> token 3 with nothing deleted in between.
    history = [put(1, 0.0, 1.0, "a", "a", 1), put(2, 2.0, 3.0, "b", "b", 3)]
    assert any("could have ended generation 1" in a for a in check(history).anomalies)


def test_a_tombstone_is_not_explained_by_a_failed_or_refused_delete() -> None:
    refused = Op(3, "delete", "k", 1.5, 1.6, "ok", token_arg=1, token=1, found=True,
                 seen_value="a", deleted=False)
    failed = Op(4, "delete", "k", 1.5, 1.6, "fail", token_arg=1)
    for delete_op in (refused, failed):
        history = [put(1, 0.0, 1.0, "a", "a", 1), delete_op, get(2, 2.0, 2.1, None, 2)]
        assert any("could have created" in a for a in check(history).anomalies), delete_op


def test_a_delete_answer_that_contradicts_itself_is_found() -> None:
    lying = Op(1, "delete", "k", 1.5, 1.6, "ok", token_arg=1, token=1, found=True,
               seen_value="a", deleted=True)
    history = [put(1, 0.0, 1.0, "a", "a", 1), lying]
    assert any("answered deleted=True" in a for a in check(history).anomalies)


def test_a_session_found_gone_while_it_surely_lived_or_renewed_after_is_an_anomaly() -> None:
    clean = SessionLog("s1", 3000, 13_000, keep_alives=[(1.0, 1.1, 4_000), (9.0, 9.1, None)])
    early = SessionLog("s2", 3000, 13_000, keep_alives=[(1.0, 1.1, 4_000), (3.0, 3.1, None)])
    back = SessionLog("s3", 3000, 13_000, keep_alives=[(9.0, 9.1, None), (9.5, 9.6, 12_500)])
    alive_until = {"s1": 4.0, "s2": 4.0, "s3": 4.0}
    assert sessions_live_while_promised({"s1": clean}, alive_until) == []
    assert ["surely lived until 4.000" in a
            for a in sessions_live_while_promised({"s2": early}, alive_until)] == [True]
    assert ["then renewed" in a
            for a in sessions_live_while_promised({"s3": back}, alive_until)] == [True]


# -- Issue 14: histories that each mutant of the checker in tests/mutants/report.md
# -- misjudged while every test above passed. Each test names the rule it pins.

INF = math.inf


def unknown(p: int, kind: Kind, t0: float, value: str | None = None, token_arg: int = 0,
            **kw: object) -> Op:
    """An operation that got no answer: it may or may not have taken effect."""
    return Op(p, kind, "k", t0, INF, "unknown", value=value, token_arg=token_arg,
              **kw)  # type: ignore[arg-type]


def failed(p: int, kind: Kind, t0: float, t1: float, value: str | None = None,
           token_arg: int = 0) -> Op:
    """An operation refused with a 4xx: it took no effect."""
    return Op(p, kind, "k", t0, t1, "fail", value=value, token_arg=token_arg,
              error="invalid_value")


def refused(p: int, t0: float, t1: float, token_arg: int, token: int,
            seen: str | None = None) -> Op:
    """A delete answered `deleted: false` with the key's state at `token`."""
    return Op(p, "delete", "k", t0, t1, "ok", token_arg=token_arg, token=token,
              found=seen is not None, seen_value=seen, deleted=False)


def messages(history: list[Op], **kw: Any) -> list[str]:
    return check(history, **kw).anomalies


def test_failed_operations_are_not_observations() -> None:
    # A 4xx answer carries no state: its token 0 is no read of the key.
    history = [put(1, 0.0, 1.0, "a", "a", 1), failed(2, "put", 2.0, 3.0, "b"),
               failed(3, "delete", 2.0, 3.0, token_arg=1), failed(3, "get", 4.0, 5.0)]
    assert messages(history) == []


def test_a_live_answer_with_a_tombstone_token_is_found() -> None:
    # The other direction of test_live_and_tombstone_tokens_must_match_found.
    history = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
               Op(2, "get", "k", 4.0, 5.0, "ok", found=True, seen_value="a", token=2)]
    assert messages(history) == ["k: get by p2 saw token 2 with found=True: odd tokens "
                                 "are live, even ones tombstones"]


def test_two_values_for_one_generation_are_found_in_either_order() -> None:
    for first, second in (("a", "b"), ("b", "a")):
        history = [put(1, 0.0, 1.0, first, first, 1), put(2, 0.0, 1.0, second, second, 1)]
        assert messages(history) == [f"k: generation 1 decided twice: {first!r} and "
                                     f"{second!r}"]


GHOSTS: dict[str, list[Op]] = {
    # A live null nobody put: gets carry no value to write (they are no creators).
    "null": [Op(2, "get", "k", 0.0, 1.0, "ok"),
             Op(1, "get", "k", 2.0, 3.0, "ok", found=True, seen_value=None, token=1)],
    # Puts of other values create nothing, whatever they sort like.
    "between": [unknown(1, "put", 0.0, "a"), unknown(2, "put", 0.0, "z"),
                get(3, 1.0, 2.0, "m", 1)],
    # A delete of a tombstone (the workload sends such) creates no live generation.
    "after a tombstone's delete": [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                                   unknown(2, "delete", 4.0, token_arg=2),
                                   get(3, 5.0, 6.0, "ghost", 3)],
    # No token below 0 is a generation.
    "negative": [Op(1, "get", "k", 0.0, 1.0, "ok", found=True, seen_value="a", token=-1)],
    # Invoked the instant the read completed is not invoked before it completed.
    "same instant": [get(1, 0.0, 1.0, "a", 1), put(2, 1.0, 2.0, "a", "a", 1)],
}


def test_values_and_generations_from_nowhere_are_found() -> None:
    for name, history in GHOSTS.items():
        found = messages(history)
        assert found and all("could have created" in a for a in found), (name, found)


def test_a_long_chain_with_an_unanswered_delete_passes() -> None:
    # Generation 3 ends by a delete that got no answer; tokens past 3 need token_arg + 1.
    history = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
               put(2, 4.0, 5.0, "b", "b", 3), unknown(2, "delete", 6.0, token_arg=3),
               get(3, 7.0, 8.0, None, 4), put(3, 9.0, 10.0, "c", "c", 5),
               delete(1, 11.0, 12.0, 5, 6), get(2, 13.0, 14.0, None, 6)]
    assert messages(history) == []


def test_blind_deletes_pass() -> None:
    # The workloads delete generation 1 of a key they never read: on a key never
    # written it is refused with token 0; after an unanswered put it ends a generation
    # that no answer ever showed.
    history = [refused(2, 0.0, 0.5, 1, 0), unknown(1, "put", 1.0, "a"),
               delete(2, 2.0, 3.0, 1, 2), get(3, 4.0, 5.0, None, 2)]
    assert messages(history) == []


def test_only_deletes_end_generations() -> None:
    # The fault workload records its last token as token_arg on every operation:
    # an unanswered get or put still ends nothing.
    for op in (unknown(2, "get", 2.0, token_arg=1), unknown(2, "put", 2.0, "b", token_arg=1)):
        history = [put(1, 0.0, 1.0, "a", "a", 1), op, get(3, 4.0, 5.0, None, 2)]
        assert any("could have created" in a for a in messages(history)), op


def test_generations_that_bindings_end_need_no_delete_but_live_ones_need_a_put() -> None:
    chain = [put(1, 0.0, 1.0, "a", "a", 1, bound=True), get(2, 2.0, 3.0, None, 2),
             put(2, 4.0, 5.0, "b", "b", 3, bound=True), get(3, 6.0, 7.0, None, 4)]
    assert messages(chain, bindings_end_keys=True) == []
    ghost = [get(1, 0.0, 1.0, "ghost", 1)]
    assert any("could have created" in a for a in messages(ghost, bindings_end_keys=True))


def test_the_first_missing_tombstone_is_reported_once() -> None:
    gap_at_3 = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                put(2, 4.0, 5.0, "b", "b", 3), put(3, 6.0, 7.0, "c", "c", 5)]
    assert messages(gap_at_3) == ["k: put by p3 saw token 5, but no delete invoked before "
                                  "it could have ended generation 3"]
    gaps_at_1_and_3 = [put(1, 0.0, 1.0, "a", "a", 1), put(3, 6.0, 7.0, "c", "c", 5)]
    assert messages(gaps_at_1_and_3) == ["k: put by p3 saw token 5, but no delete invoked "
                                         "before it could have ended generation 1"]


def test_an_instant_shared_by_two_operations_orders_neither() -> None:
    # Rule 3: a read invoked the instant a put completed may precede it.
    assert messages([put(1, 0.0, 1.0, "a", "a", 1), get(2, 1.0, 2.0, None, 0)]) == []
    # Rule 4: a delete invoked the instant a read completed did not precede it.
    late_delete = [put(1, 0.0, 1.0, "a", "a", 1), unknown(2, "delete", 5.0, token_arg=1),
                   put(3, 2.0, 5.0, "b", "b", 3)]
    assert messages(late_delete) == ["k: put by p3 saw token 3, but no delete invoked "
                                     "before it could have ended generation 1"]


def test_delete_answers_are_checked_both_ways() -> None:
    # Refused, yet the answer's token is past the generation named: generation 1 ended.
    lying = [put(1, 0.0, 1.0, "a", "a", 1), delete(2, 2.0, 3.0, 1, 2),
             refused(3, 2.5, 3.5, 1, 2)]
    assert messages(lying) == ["k: delete(1) by p3 answered deleted=False with token 2"]
    # Refused with a token below the generation named: that one never began.
    ahead = [put(1, 0.0, 1.0, "a", "a", 1), refused(2, 2.0, 3.0, 3, 1, "a")]
    assert messages(ahead) == []


def test_a_lost_put_is_found_past_a_later_stale_read() -> None:
    # The get by p2 overlaps the put and comes before it; the get by p3 does not.
    history = [put(1, 0.0, 1.0, "a", "a", 1), get(2, 0.5, 2.0, None, 0),
               get(3, 3.0, 4.0, None, 0)]
    found = messages(history)
    assert len(found) == 1 and "get by p3" in found[0] and "put by p1" in found[0], found


# Lifetimes: "no key gone before its deadline", and what may excuse it.

def test_a_deadline_holds_to_the_millisecond() -> None:
    bound = put(1, 0.0, 1.0, "a", "a", 1, until=10_500)
    history = [bound, get(2, 2.0, 10.495, None, 2), get(3, 2.0, 10.5, None, 2),
               get(4, 2.0, 10.505, None, 2)]
    assert messages(history, bindings_end_keys=True) == [
        "k: generation 1 reported gone by p2 while its bindings lived (until 10.500)"]


def test_every_bound_put_is_checked_whatever_comes_first() -> None:
    # A read (no binding) and an unbound put come first; later bound puts still count.
    read_first = [Op(2, "get", "k", 0.0, 0.5, "ok"), put(1, 0.1, 1.0, "a", "a", 1, until=10_000),
                  get(3, 5.0, 6.0, None, 2)]
    assert messages(read_first, bindings_end_keys=True) == [
        "k: generation 1 reported gone by p3 while its bindings lived (until 10.000)"]
    unbound_first = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                     put(2, 4.0, 5.0, "b", "b", 3, until=10_000), get(3, 6.0, 7.0, None, 4)]
    assert messages(unbound_first, bindings_end_keys=True) == [
        "k: generation 3 reported gone by p3 while its bindings lived (until 10.000)"]


def test_a_put_that_lost_set_no_bindings() -> None:
    # "m" won generation 1 (bound to a node, say); the puts of "a" and "z", bound to a
    # deadline, lost to it: the deadline is not m's.
    history = [put(1, 0.0, 1.0, "m", "m", 1, bound=True),
               put(2, 0.5, 1.5, "a", "m", 1, until=5_000),
               put(3, 0.5, 1.5, "z", "m", 1, until=5_000), get(4, 2.0, 3.0, None, 2)]
    assert messages(history, bindings_end_keys=True) == []


def test_a_session_with_no_known_life_promises_nothing() -> None:
    # Bound to a deadline and to a session the test cannot vouch for: it may end first.
    history = [put(1, 0.0, 1.0, "a", "a", 1, until=10_000, session="s9"),
               get(2, 5.0, 6.0, None, 2)]
    assert messages(history, bindings_end_keys=True, sessions_alive_until={}) == []


def test_a_client_delete_of_that_generation_excuses_an_early_end() -> None:
    history = [put(1, 0.0, 1.0, "a", "a", 1, until=10_000), delete(2, 2.0, 3.0, 1, 2),
               get(3, 4.0, 5.0, None, 2)]
    assert messages(history) == []
    assert messages(history, bindings_end_keys=True) == []


def test_nothing_else_excuses_an_early_end() -> None:
    gone = "k: generation 1 reported gone by p3 while its bindings lived (until 10.000)"
    bound = put(1, 0.0, 1.0, "a", "a", 1, until=10_000)
    for excuse in (failed(2, "delete", 2.0, 3.0, token_arg=1),  # refused: ended nothing
                   # the fault workload's token_arg on a get or a put ends nothing
                   Op(2, "get", "k", 2.0, 3.0, "ok", found=True, seen_value="a", token=1,
                      token_arg=1),
                   unknown(2, "put", 2.0, "b", token_arg=1),
                   unknown(2, "delete", 5.0, token_arg=1),  # invoked as the read ended
                   unknown(2, "delete", 6.0, token_arg=1)):  # ... after it ended
        history = [bound, excuse, get(3, 4.0, 5.0, None, 2)]
        assert messages(history, bindings_end_keys=True) == [gone], excuse
    # A delete of a later generation does not excuse the early end of an earlier one.
    later = [bound, put(2, 2.0, 3.0, "b", "b", 3), delete(3, 2.5, 4.0, 3, 4)]
    assert messages(later, bindings_end_keys=True) == [
        "k: generation 1 reported gone by p2 while its bindings lived (until 10.000)",
        "k: generation 1 reported gone by p3 while its bindings lived (until 10.000)"]
    # Nor does a delete of an earlier one excuse a later one.
    earlier = [put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
               put(2, 4.0, 5.0, "b", "b", 3, until=10_000), get(3, 6.0, 7.0, None, 4)]
    assert messages(earlier, bindings_end_keys=True) == [
        "k: generation 3 reported gone by p3 while its bindings lived (until 10.000)"]


def test_reads_before_or_at_a_bound_generation_do_not_say_it_is_gone() -> None:
    history = [get(2, 0.0, 0.5, None, 0), put(1, 0.0, 1.0, "a", "a", 1, until=10_000),
               get(3, 2.0, 3.0, "a", 1)]
    assert messages(history, bindings_end_keys=True) == []


def test_sessions_are_each_checked_to_the_instant() -> None:
    clean = SessionLog("s1", 3000, 13_000, keep_alives=[(1.0, 1.1, 4_000), (9.0, 9.1, None)])
    early = SessionLog("s2", 3000, 13_000, keep_alives=[(1.0, 1.1, 4_000), (3.0, 3.1, None)])
    # Found gone the instant its promise ran out; renewed by a keep-alive invoked the
    # instant another found it gone (the two overlap): both fine.
    edge = SessionLog("s3", 3000, 13_000, keep_alives=[(1.0, 1.1, 4_000), (3.9, 4.0, None),
                                                        (4.0, 4.1, 7_000)])
    renewed = SessionLog("s0", 3000, 7_000, keep_alives=[(1.0, 1.1, 4_000)])  # never gone
    alive_until = {"s0": 4.0, "s1": 4.0, "s2": 4.0, "s3": 4.0}
    found = sessions_live_while_promised({"s0": renewed, "s1": clean, "s2": early, "s3": edge},
                                         alive_until)
    assert found == ["session s2: a keep-alive found it gone at 3.100, but it surely lived "
                     "until 4.000"]


# Histories read back from JSON (as tests/test_faults.py reads a fault run's) hold
# fresh str and int objects: the checker must compare them by value, not identity.

def _from_json(history: list[Op]) -> list[Op]:
    return [Op(**raw) for raw in json.loads(json.dumps([asdict(op) for op in history]))]


def _big_tokens() -> list[Op]:
    """Tokens past 256 (a key with many generations), where equal ints are distinct objects."""
    return [put(1, 0.0, 1.0, "v-301", "v-301", 301, until=20_000),
            get(2, 1.5, 2.0, "v-301", 301),
            delete(1, 3.0, 4.0, 301, 302), get(2, 5.0, 6.0, None, 302),
            refused(3, 7.0, 8.0, 302, 302),
            put(1, 9.0, 10.0, "v-303", "v-303", 303, until=20_000),
            get(2, 11.0, 12.0, None, 304)]  # gone early: no delete of 303


JSON_CASES: list[tuple[str, list[Op], dict[str, Any]]] = [
    ("clean", [put(1, 0.0, 1.0, "v-a", "v-a", 1), put(2, 0.5, 1.5, "v-b", "v-a", 1),
               get(3, 1.6, 1.7, "v-a", 1), delete(1, 2.0, 2.5, 1, 2),
               refused(3, 2.6, 2.7, 2, 2), unknown(2, "put", 3.0, "v-c"),
               get(3, 4.0, 4.1, "v-c", 3)], {}),
    ("failed put", [failed(1, "put", 0.0, 1.0, "v-a"), get(2, 2.0, 3.0, "v-a", 1)], {}),
    ("failed delete", [put(1, 0.0, 1.0, "v-a", "v-a", 1),
                       failed(2, "delete", 1.5, 1.6, token_arg=1),
                       get(3, 2.0, 2.1, None, 2)], {}),
    ("refused delete", [put(1, 0.0, 1.0, "v-a", "v-a", 1), refused(2, 1.5, 1.6, 1, 1, "v-a"),
                        get(3, 2.0, 2.1, None, 2)], {}),
    ("lying delete", [put(1, 0.0, 1.0, "v-a", "v-a", 1),
                      Op(2, "delete", "k", 1.5, 1.6, "ok", token_arg=1, token=1, found=True,
                         seen_value="v-a", deleted=True)], {}),
    ("gone early", [put(1, 0.0, 1.0, "v-a", "v-a", 1, until=10_000),
                    failed(2, "delete", 2.0, 3.0, token_arg=1),
                    get(3, 4.0, 5.0, None, 2)], {"bindings_end_keys": True}),
    ("deleted early", [put(1, 0.0, 1.0, "v-a", "v-a", 1, until=10_000),
                       delete(2, 2.0, 3.0, 1, 2), get(3, 4.0, 5.0, None, 2)], {}),
    ("big tokens", _big_tokens(), {"bindings_end_keys": True}),
]


def test_histories_read_back_from_json_check_the_same() -> None:
    for name, history, kw in JSON_CASES:
        expected = messages(history, **kw)
        assert (expected == []) == (name in ("clean", "deleted early")), (name, expected)
        assert messages(_from_json(history), **kw) == expected, name
    assert messages(_big_tokens(), bindings_end_keys=True) == [
        "k: generation 303 reported gone by p2 while its bindings lived (until 20.000)"]
