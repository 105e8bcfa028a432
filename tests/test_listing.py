"""Listing a bucket's keys by prefix (POST /v1/list, server/listing.py) on a real
3-node cluster: pages in key order, live keys only, one bucket; a linearizable
listing finds a key its node never saw, a local one does not; bad input is a 4xx
naming the field; without a quorum a linearizable listing is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv import cli
from tests.harness import LocalCluster, running, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3)


def listed(url: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(url + "/v1/list", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_pages_list_live_keys_of_one_bucket_in_order(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        for i in range(25):
            kv.put(f"pod-{i:02}", {"n": i})
        kv.put("other", 1)
        kv.put("pod-99", "elsewhere", bucket="shards")
        assert kv.delete("pod-07").deleted
    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        page = listed(cluster.url(1), prefix="pod-", limit=10, after=after)
        assert page["bucket"] == "default" and page["consistency"] == "linearizable"
        seen += page["entries"]
        pages += 1
        after = page["next"]
        if after is None:
            break
        assert after == page["entries"][-1]["key"]
    assert pages == 3
    assert [e["key"] for e in seen] == [f"pod-{i:02}" for i in range(25) if i != 7]
    assert all(e["value"] == {"n": int(e["key"][4:])} and e["token"] == 1 for e in seen)
    everything = listed(cluster.url(2), limit=1000)
    assert "other" in [e["key"] for e in everything["entries"]]
    assert everything["next"] is None and len(everything["entries"]) == 25
    assert [e["key"] for e in listed(cluster.url(0), bucket="shards")["entries"]] == ["pod-99"]


def test_a_linearizable_listing_finds_keys_its_node_never_saw(cluster: LocalCluster) -> None:
    cluster.stop(0)
    with cluster.client(1) as kv:
        kv.put("late", "while n1 was down")
    cluster.start(0)
    cluster.wait_ready([0])
    local = listed(cluster.url(0), consistency="local")
    assert local["consistency"] == "local" and local["entries"] == []
    full = listed(cluster.url(0))
    assert [(e["key"], e["value"]) for e in full["entries"]] == [("late", "while n1 was down")]


def test_bad_listings_are_refused_naming_the_field(cluster: LocalCluster) -> None:
    cases = [({"limit": 0}, 400, "limit"), ({"limit": 1001}, 400, "limit"),
             ({"limit": 2.5}, 400, "limit"), ({"after": ""}, 400, "after"),
             ({"prefix": 3}, 400, "prefix"), ({"bucket": "_nodes"}, 400, "bucket"),
             ({"prefix": "x" * 1025}, 413, "prefix"), ({"key": "k"}, 400, "key"),
             ({"consistency": "stale"}, 400, "consistency")]
    for body, status, field in cases:
        answer = httpx.post(cluster.url(0) + "/v1/list", json=body, timeout=10)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["field"] == field, (body, answer.text)


def test_without_a_quorum_only_the_local_listing_answers(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        kv.put("k", "v")
    wait_until(lambda: len(listed(cluster.url(0), consistency="local")["entries"]) == 1, 5,
               "n1 never learned that k was chosen")
    cluster.stop(1)
    cluster.stop(2)
    refused = httpx.post(cluster.url(0) + "/v1/list", json={"timeout_ms": 500}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_quorum"
    local = listed(cluster.url(0), consistency="local")
    assert [(e["key"], e["value"]) for e in local["entries"]] == [("k", "v")]


def test_the_clients_and_the_cli_list_page_by_page(
        cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.client() as kv:
        for name in ("a", "b", "c", "d", "e"):
            kv.put(f"w/{name}", name.upper())
        first = kv.list_keys("w/", limit=2)
        assert [(e.key, e.value, e.found) for e in first.entries] == [("w/a", "A", True),
                                                                      ("w/b", "B", True)]
        assert first.next == "w/b"
        rest = kv.list_keys("w/", after=first.next)
        assert [e.key for e in rest.entries] == ["w/c", "w/d", "w/e"] and rest.next is None

    async def from_async() -> list[str]:
        async with cluster.async_client() as akv:
            return [e.key for e in (await akv.list_keys("w/", limit=10)).entries]

    assert asyncio.run(from_async()) == ["w/a", "w/b", "w/c", "w/d", "w/e"]

    endpoints = ["--endpoints", ",".join(cluster.urls)]
    assert cli.main(["list", "w/", "--limit", "2", *endpoints]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["key"] for line in out.splitlines()] == ["w/a", "w/b"]
    assert "more keys follow: --after w/b (or --all)" in err
    assert cli.main(["list", "w/", "--all", "--limit", "2", "-o", "value", *endpoints]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["A", "B", "C", "D", "E"] and err == ""
    assert cli.main(["list", "w/", "--after", "w/d", "-o", "table", *endpoints]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].split() == ["KEY", "VALUE", "TOKEN", "BINDINGS"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["w/e"]
    assert cli.main(["list", "--limit", "5000", *endpoints]) == 2
    assert "--limit must be from 1 to 1000" in capsys.readouterr().err
    cluster.stop(1)
    cluster.stop(2)
    assert cli.main(["list", "--endpoints", cluster.url(0), "--timeout", "0.5"]) == 3
    assert "no_quorum" in capsys.readouterr().err
