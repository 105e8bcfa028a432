"""The history checker finds planted anomalies and passes correct histories."""

from __future__ import annotations

import math

from tests.faults.checker import Op, SessionLog, check, sessions_live_while_promised


def put(p: int, t0: float, t1: float, value: str, seen: str, token: int, **kw: object) -> Op:
    return Op(p, "put", "k", t0, t1, "ok", value=value, found=True, seen_value=seen,
              token=token, **kw)  # type: ignore[arg-type]


def get(p: int, t0: float, t1: float, seen: str | None, token: int) -> Op:
    return Op(p, "get", "k", t0, t1, "ok", found=seen is not None, seen_value=seen,
              token=token)


def delete(p: int, t0: float, t1: float, token_arg: int, token: int) -> Op:
    return Op(p, "delete", "k", t0, t1, "ok", token_arg=token_arg, token=token,
              deleted=True)


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
    history = [put(1, 0.0, 1.0, "a", "a", 1), get(2, 2.0, 3.0, None, 2)]
    assert not check(history).ok
    assert check(history, bindings_end_keys=True).ok


def test_live_and_tombstone_tokens_must_match_found() -> None:
    history = [get(1, 0.0, 1.0, None, 1)]
    assert any("odd tokens are live" in a for a in check(history).anomalies)


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
