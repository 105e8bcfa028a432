"""Key lifetimes on a real 3-node cluster: deadlines, parent keys, watch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import LocalCluster, running, wait_until

# Documented bound (README): a key bound to a deadline or to a parent is gone within
# this long after the deadline passes or the parent ends.
DEADLINE_BOUND_S = 1.0
# What a busy 2-core machine may add to it: the tests check the ending comes, with room.
SLACK_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("lifetimes"), 3)


def call(cluster: LocalCluster, op: str, body: dict[str, Any], node: int = 0
         ) -> httpx.Response:
    return httpx.post(f"{cluster.url(node)}/v1/{op}", content=json.dumps(body), timeout=30)


def now_ms() -> int:
    return int(time.time() * 1000)


def found_everywhere(cluster: LocalCluster, key: str) -> list[bool]:
    return [call(cluster, "get", {"key": key}, i).json()["found"] for i in range(3)]


def wait_gone(cluster: LocalCluster, key: str, within: float) -> float:
    """Seconds until no node reports `key`; fails after `within`."""
    return wait_until(lambda: not any(found_everywhere(cluster, key)), within,
                      f"{key} still present")


def test_until_readable_before_gone_after_and_put_again(cluster: LocalCluster) -> None:
    until = now_ms() + 300
    put = call(cluster, "put", {"key": "lease", "value": "a", "bindings": {"until": until}})
    assert put.json()["bindings"] == {"until": until}
    while now_ms() < until:
        seen = found_everywhere(cluster, "lease")
        assert seen == [True] * 3 or now_ms() >= until, "reported gone before its deadline"
        time.sleep(0.05)
    wait_gone(cluster, "lease", DEADLINE_BOUND_S + SLACK_S)
    assert now_ms() >= until, "reported gone before its deadline"
    again = call(cluster, "put", {"key": "lease", "value": "b"}).json()
    assert again["value"] == "b" and again["token"] == 3


def test_deadline_in_the_past_is_invalid_and_decides_nothing(cluster: LocalCluster) -> None:
    response = call(cluster, "put", {"key": "late", "value": 1,
                                     "bindings": {"until": now_ms() - 1}})
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "invalid_value", "field": "bindings.until",
                                        "message": "the deadline has already passed"}
    assert call(cluster, "get", {"key": "late"}).json()["token"] == 0


def test_parent_chain_cascades_and_children_can_be_put_again(cluster: LocalCluster) -> None:
    k1 = call(cluster, "put", {"key": "k1", "value": 1}).json()
    call(cluster, "put", {"key": "k2", "value": 2, "bindings": {"key": "k1"}}, node=1)
    k3 = call(cluster, "put", {"key": "k3", "value": 3, "bindings": {"key": "k2"}}, node=2)
    assert k3.json()["bindings"] == {"key": {"name": "k2", "token": 1}}
    call(cluster, "delete", {"key": "k1", "token": k1["token"]})
    for key in ("k2", "k3"):
        wait_gone(cluster, key, 2 * DEADLINE_BOUND_S + SLACK_S)
    again = call(cluster, "put", {"key": "k3", "value": "again"}).json()
    assert again["found"] and again["value"] == "again" and again["token"] == 3


def test_missing_parent_is_invalid(cluster: LocalCluster) -> None:
    response = call(cluster, "put", {"key": "orphan", "value": 1,
                                     "bindings": {"key": "no-such-parent"}})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "bindings.key"
    assert call(cluster, "get", {"key": "orphan"}).json()["token"] == 0


@pytest.mark.parametrize(("bindings", "field"), [
    ({"colour": "red"}, "bindings.colour"),
    ({"pid": "not-a-session-id"}, "bindings.pid"),
    ({"node": "bad name!"}, "bindings.node"),
    ({"until": "tomorrow"}, "bindings.until"),
    ({"key": ""}, "bindings.key"),
])
def test_malformed_bindings_are_refused_by_name(cluster: LocalCluster,
                                                bindings: dict[str, Any], field: str) -> None:
    response = call(cluster, "put", {"key": "x", "value": 1, "bindings": bindings})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert call(cluster, "get", {"key": "x"}).json()["token"] == 0


def test_watch_wakes_on_change_and_times_out_without(cluster: LocalCluster) -> None:
    start = call(cluster, "watch", {"key": "w", "token": 0, "timeout_ms": 300}).json()
    assert start["changed"] is False and start["token"] == 0

    woke: list[dict[str, Any]] = []
    watcher = threading.Thread(target=lambda: woke.append(
        call(cluster, "watch", {"key": "w", "token": 0, "timeout_ms": 10_000}, 2).json()))
    watcher.start()
    time.sleep(0.3)
    assert not woke
    put_at = time.monotonic()
    call(cluster, "put", {"key": "w", "value": "hello"}, node=1)
    watcher.join(timeout=10)
    assert woke and woke[0]["changed"] is True and woke[0]["value"] == "hello"
    assert time.monotonic() - put_at < 5.0
    # Already different from the token given: answers at once.
    assert call(cluster, "watch", {"key": "w", "token": 0}).json()["changed"] is True


def test_a_change_seen_by_the_local_acceptor_wakes_the_watcher(tmp_path: Any) -> None:
    """With the periodic re-read a minute apart, only the wake-up path can answer in
    time: every node's acceptor sees the put's accept (or its commit)."""
    slow = LocalCluster(tmp_path, 3, env={"PAXOSKV_TEST_WATCH_REREAD_S": "60"})
    try:
        slow.start_all()
        for node in range(3):
            key = f"woken-{node}"
            first = call(slow, "watch", {"key": key, "token": 0, "timeout_ms": 100}, node)
            assert first.json()["changed"] is False
            woke: list[dict[str, Any]] = []
            watcher = threading.Thread(target=lambda n=node, k=key, into=woke: into.append(
                call(slow, "watch", {"key": k, "token": 0, "timeout_ms": 30_000}, n).json()))
            watcher.start()
            time.sleep(0.2)
            put_at = time.monotonic()
            call(slow, "put", {"key": key, "value": node}, node=(node + 1) % 3)
            watcher.join(timeout=30)
            assert woke and woke[0]["changed"] is True and woke[0]["value"] == node
            assert time.monotonic() - put_at < 10.0, "woken only by the re-read"
    finally:
        slow.close()


def test_skewed_clock_on_one_node_never_ends_a_key_early(tmp_path: Any) -> None:
    skewed = LocalCluster(tmp_path, 3)
    try:
        skewed.start(0, env={"PAXOSKV_TEST_CLOCK_SKEW_MS": "5000"})  # 5 s fast
        skewed.start(1)
        skewed.start(2)
        skewed.wait_ready(range(3))
        # Keys homed everywhere, including on the fast node.
        keys = [f"skew-{i}" for i in range(12)]
        until = now_ms() + 2000
        for key in keys:  # through a node whose clock is right (node 0 would refuse)
            assert call(skewed, "put", {"key": key, "value": 1,
                                        "bindings": {"until": until}}, 1).status_code == 200
        while now_ms() < until:
            for key in keys:
                seen = found_everywhere(skewed, key)
                # A "gone" answer that arrived before the deadline would be early.
                assert seen == [True] * 3 or now_ms() >= until, f"{key} ended early"
            time.sleep(0.1)
        for key in keys:
            wait_gone(skewed, key, DEADLINE_BOUND_S + SLACK_S)
        assert now_ms() >= until
    finally:
        skewed.close()



def test_bindings_end_after_a_full_restart_even_when_due_while_down(tmp_path: Any) -> None:
    """A deadline and a session that pass while every node is down still end their keys
    once the cluster is back (lifetimes are rebuilt from the acceptors' records), and a
    key whose deadline is still ahead survives the restart."""
    restarted = LocalCluster(tmp_path, 3)
    try:
        restarted.start_all()
        session = call(restarted, "session/open", {"ttl_ms": 2000}).json()["session"]
        soon, later = now_ms() + 1500, now_ms() + 60_000
        for key, bindings in (("due-while-down", {"until": soon}),
                              ("bound-to-session", {"pid": session}),
                              ("still-ahead", {"until": later}),
                              ("child", {"key": "due-while-down"})):
            put = call(restarted, "put", {"key": key, "value": 1, "bindings": bindings})
            assert put.status_code == 200 and put.json()["token"] == 1, put.text
        for i in range(3):
            restarted.stop(i)
        time.sleep(2.5)  # the deadline and the session's TTL pass while all are down
        restarted.start_all()
        for key in ("due-while-down", "bound-to-session", "child"):
            wait_gone(restarted, key, 10.0)
        assert found_everywhere(restarted, "still-ahead") == [True] * 3
    finally:
        restarted.close()
