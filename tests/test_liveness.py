"""The `node` binding: members judged by their peer links, and external reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv.client import Client, PaxosKVError
from tests.harness import LocalCluster, wait_until

# Documented bound (README): keys bound to a member are gone within this long after
# the member becomes unreachable (2 s to judge it down, then one sweep and round).
MEMBER_BOUND_S = 4.0
TOKEN = "s3cret-admin-token"


def found_on(cluster: LocalCluster, nodes: list[int], key: str) -> list[bool]:
    results = []
    for i in nodes:
        with cluster.client(i) as kv:
            results.append(kv.get(key).found)
    return results


def report(cluster: LocalCluster, nodes: dict[str, bool], token: str = TOKEN
           ) -> httpx.Response:
    return httpx.post(cluster.url(0) + "/v1/admin/nodes", timeout=10,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"source": "operator", "nodes": nodes})


def test_keys_bound_to_a_killed_member_end_and_others_stay(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3)
    try:
        cluster.start_all()
        with cluster.client(0) as kv:
            wait_until(lambda: all(_alive(kv, n) for n in ("n1", "n2", "n3")), 10,
                     "members never registered")
            for i in range(10):
                assert kv.put(f"on-n3-{i}", i, node="n3").bindings["node"]["name"] == "n3"
                kv.put(f"on-n2-{i}", i, node="n2")
            assert kv.node("on-n3-0") == "n3"
        cluster.kill(2)
        took = wait_until(lambda: not any(found_on(cluster, [0, 1], "on-n3-9")),
                        MEMBER_BOUND_S, "keys bound to the killed member stayed")
        assert took > 1.0, "ended before the member was judged down"
        with cluster.client(0) as kv:
            assert not any(kv.get(f"on-n3-{i}").found for i in range(10))
            assert all(kv.get(f"on-n2-{i}").found for i in range(10))
            with pytest.raises(PaxosKVError) as caught:
                kv.put("late", 1, node="n3")
            assert caught.value.code == "invalid_value"
        # Back again: a new incarnation, and new keys may bind to it.
        cluster.start(2)
        cluster.wait_ready([2])
        with cluster.client(0) as kv:
            wait_until(lambda: _alive(kv, "n3"), 10, "n3 did not come back")
            assert kv.put("on-n3-0", "again", node="n3").token == 3
    finally:
        cluster.close()


def _alive(kv: Client, name: str) -> bool:
    try:
        kv.put(f"liveness-probe-{name}-{time.monotonic_ns()}", 1, node=name,
               until=int(time.time() * 1000) + 1000)
    except PaxosKVError:
        return False
    return True


def test_external_reports_are_level_triggered_and_authenticated(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3)
    try:
        cluster.start_all(env={"PAXOSKV_ADMIN_TOKEN": TOKEN})
        assert report(cluster, {"pod-a": True}, token="wrong").status_code == 401
        first = report(cluster, {"pod-a": True, "pod-b": True}).json()
        assert first["started"] == ["pod-a", "pod-b"]
        with cluster.client(1) as kv:
            for pod in ("pod-a", "pod-b"):
                for i in range(5):
                    kv.put(f"{pod}-{i}", i, node=pod)
        # pod-b is not Ready any more: its keys end; pod-a's stay.
        second = report(cluster, {"pod-a": True, "pod-b": False}).json()
        assert second == {"source": "operator", "started": [], "ended": ["pod-b"]}
        wait_until(lambda: not any(found_on(cluster, [0, 1, 2], "pod-b-4")), 2.0,
                 "pod-b's keys stayed")
        # The same report again changes nothing.
        again = report(cluster, {"pod-a": True, "pod-b": False}).json()
        assert again == {"source": "operator", "started": [], "ended": []}
        with cluster.client(2) as kv:
            assert all(kv.get(f"pod-a-{i}").found for i in range(5))
            assert kv.node("pod-a-0") == "pod-a"
        # pod-a left out of a full report: deleted, so its keys end too.
        third = report(cluster, {"pod-b": False}).json()
        assert third["ended"] == ["pod-a"]
        wait_until(lambda: not any(found_on(cluster, [0, 1, 2], "pod-a-4")), 2.0,
                 "pod-a's keys stayed")
    finally:
        cluster.close()


def test_admin_endpoint_is_off_without_a_token(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3)
    try:
        cluster.start_all()
        response = report(cluster, {"pod-a": True})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    finally:
        cluster.close()


@pytest.mark.parametrize(("body", "field"), [
    ({"nodes": {"a": True}}, "source"),
    ({"source": "operator"}, "nodes"),
    ({"source": "operator", "nodes": {"a": "yes"}}, "nodes.a"),
    ({"source": "operator", "nodes": {"bad name": True}}, "nodes.bad name"),
])
def test_bad_reports_name_the_field(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    cluster = LocalCluster(tmp_path, 1)
    try:
        cluster.start_all(env={"PAXOSKV_ADMIN_TOKEN": TOKEN})
        response = httpx.post(cluster.url(0) + "/v1/admin/nodes", json=body,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 400
        assert response.json()["error"]["field"] == field
    finally:
        cluster.close()
