"""Listings (server/listing.py) on a real 3-node cluster. A bucket's keys by prefix
(POST /v1/list): pages in key order, live keys only, one bucket; a linearizable listing
finds a key its node never saw, a local one does not. The buckets (/v1/buckets): listed
while they hold a live key, gone with their last one. The sessions (/v1/sessions): with
their TTL and bound keys, gone once closed or expired. The node incarnations
(/v1/nodes): a restarted node's token grows. Bad input is a 4xx naming the field;
without a quorum a linearizable listing is refused. The clients and the CLI."""

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
    for started in running(tmp_path, 3):
        # Ready is a quorum; the local listings below need every link up too, as a
        # commit notice to a member whose link is not up yet is lost (and nothing
        # else catches it up until the key is decided again).
        wait_until(lambda c=started: all(  # type: ignore[misc]
            m["connected"] for url in c.urls
            for m in httpx.get(url + "/v1/status", timeout=2).json()["members"]), 10,
            "the members never all linked")
        yield started


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


# -- buckets, sessions, node incarnations (issue 13) ----------------------------------------


def listing(url: str, what: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{url}/v1/{what}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bucket_names(url: str, **body: Any) -> list[str]:
    return [b["bucket"] for b in listing(url, "buckets", **body)["buckets"]]


def test_a_bucket_is_listed_while_it_holds_a_live_key(cluster: LocalCluster) -> None:
    assert bucket_names(cluster.url(0)) == []
    with cluster.client() as kv:
        first = kv.put("a", 1, bucket="orders")
        kv.put("b", 2, bucket="orders")
        kv.put("x", 3, bucket="zeta")
        kv.put("x", 4, bucket="emptied")
        assert kv.delete("x", bucket="emptied").deleted
        sid = kv.open_session(30)  # its key lives in a reserved bucket: never listed
        kv.put("lock", "me", session=sid, bucket="zeta")
    answer = listing(cluster.url(1), "buckets")
    assert answer == {"buckets": [{"bucket": "orders", "keys": None},
                                  {"bucket": "zeta", "keys": None}],
                      "next": None, "consistency": "linearizable"}
    wait_until(lambda: listing(cluster.url(2), "buckets", consistency="local")["buckets"]
               == [{"bucket": "orders", "keys": 2}, {"bucket": "zeta", "keys": 2}], 5,
               "n3 never learned the buckets' keys were chosen")
    page = listing(cluster.url(0), "buckets", limit=1)
    assert (bucket_names(cluster.url(0), limit=1), page["next"]) == (["orders"], "orders")
    assert bucket_names(cluster.url(0), after="orders") == ["zeta"]
    with cluster.client() as kv:
        assert kv.delete("a", first.token, bucket="orders").deleted
        assert bucket_names(cluster.url(0)) == ["orders", "zeta"]  # b is still live
        assert kv.delete("b", bucket="orders").deleted
    assert bucket_names(cluster.url(0)) == ["zeta"]  # its last key gone: so is the bucket
    with cluster.client() as kv:
        kv.put("again", 1, bucket="orders")
    assert bucket_names(cluster.url(2)) == ["orders", "zeta"]


def test_a_session_is_listed_with_its_keys_until_it_closes(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        kept = kv.open_session(30)
        other = kv.open_session(5)
        kv.put("lock", "me", session=kept)
        kv.put("shard-1", "me", session=kept, bucket="shards")
        kv.put("plain", "no session")
        kv.put("theirs", "x", session=other)
    def sessions() -> dict[str, dict[str, Any]]:
        return {s["session"]: s for s in listing(cluster.url(1), "sessions")["sessions"]}

    def keys(session: str) -> list[str]:
        return [k["key"] for k in sessions().get(session, {}).get("keys", [])]

    # n1 lists the keys its lifetimes index holds: a put decided without it reaches it
    # with the proposer's commit notice, a moment later.
    wait_until(lambda: keys(kept) == ["lock", "shard-1"] and keys(other) == ["theirs"], 10,
               lambda: f"the sessions' keys were not all listed: {sessions()}")
    by_id = sessions()
    assert set(by_id) == {kept, other}
    mine = by_id[kept]
    assert mine["ttl_ms"] == 30_000 and 25_000 < mine["remaining_ms"] <= 30_000
    assert mine["until"] > 1_700_000_000_000
    assert mine["keys"] == [{"bucket": "default", "key": "lock"},
                            {"bucket": "shards", "key": "shard-1"}]
    assert by_id[other]["keys"] == [{"bucket": "default", "key": "theirs"}]
    with cluster.client() as kv:
        assert kv.delete("lock").deleted  # no longer bound: no longer listed with it
        assert listing(cluster.url(0), "sessions", after=min(kept, other), limit=1)[
            "sessions"][0]["session"] == max(kept, other)
        assert [k["key"] for k in {s["session"]: s for s in listing(
            cluster.url(2), "sessions")["sessions"]}[kept]["keys"]] == ["shard-1"]
        assert kv.close_session(kept)
    assert [s["session"] for s in listing(cluster.url(0), "sessions")["sessions"]] == [other]
    # The other one is not kept alive: it ends within its TTL (and a sweep).
    wait_until(lambda: listing(cluster.url(0), "sessions")["sessions"] == [], 10,
               "an expired session stayed listed")


def test_a_node_that_restarts_is_listed_with_a_new_incarnation(cluster: LocalCluster) -> None:
    def n2() -> dict[str, Any]:
        nodes = listing(cluster.url(0), "nodes")["nodes"]
        assert [n["name"] for n in nodes] == ["n1", "n2", "n3"]
        return next(n for n in nodes if n["name"] == "n2")

    wait_until(lambda: all(n["live"] for n in listing(cluster.url(0), "nodes")["nodes"])
               and len(listing(cluster.url(0), "nodes")["nodes"]) == 3, 10,
               "the members' incarnations never all started")
    before = n2()
    assert before["live"] and before["source"] == "member" and before["token"] % 2 == 1
    cluster.stop(1)
    wait_until(lambda: not n2()["live"], 15, "n2's incarnation was not ended while it was down")
    assert n2()["token"] == before["token"] + 1 and n2()["source"] is None
    cluster.start(1)
    cluster.wait_ready([1])
    wait_until(lambda: n2()["live"], 15, "n2 started no new incarnation")
    after = n2()
    assert after["token"] > before["token"] + 1 and after["source"] == "member"
    # A local listing pages too (at n1, which stayed up: the restarted n2 may not hold
    # n3's node key yet, and a local listing may be incomplete).
    local = listing(cluster.url(0), "nodes", consistency="local", after="n1", limit=1)
    assert local["nodes"][0]["name"] == "n2" and local["next"] == "n2", local


@pytest.mark.parametrize("what", ["buckets", "sessions", "nodes"])
def test_bad_listings_of_buckets_sessions_and_nodes_are_refused(cluster: LocalCluster,
                                                                what: str) -> None:
    cases = [({"limit": 0}, "limit"), ({"limit": "5"}, "limit"), ({"after": ""}, "after"),
             ({"after": 7}, "after"), ({"after": "no/slash"}, "after"),
             ({"consistency": "stale"}, "consistency"), ({"prefix": "x"}, "prefix"),
             ({"timeout_ms": 0}, "timeout_ms")]
    for body, field in cases:
        answer = httpx.post(f"{cluster.url(0)}/v1/{what}", json=body, timeout=10)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["field"] == field, (body, answer.text)
    cluster.stop(1)
    cluster.stop(2)
    refused = httpx.post(f"{cluster.url(0)}/v1/{what}", json={"timeout_ms": 500}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_quorum"
    assert listing(cluster.url(0), what, consistency="local")["consistency"] == "local"


def test_the_clients_and_the_cli_list_buckets_sessions_and_nodes(
        cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    # Each member starts its incarnation once it is up: wait for the three.
    wait_until(lambda: [n["live"] for n in listing(cluster.url(0), "nodes")["nodes"]]
               == [True] * 3, 10, "the members' incarnations never all started")
    with cluster.client() as kv:
        for bucket in ("b1", "b2", "b3"):
            kv.put("k", bucket, bucket=bucket)
        sid = kv.open_session(30)
        kv.put("held", "me", session=sid, bucket="b2")
        first = kv.list_buckets(limit=2)
        assert ([b.name for b in first.entries], first.next) == (["b1", "b2"], "b2")
        assert [(b.name, b.keys) for b in kv.list_buckets(after="b2").entries] == [("b3", None)]
        (session,) = kv.list_sessions().entries
        assert (session.id, session.ttl_ms, session.keys) == (sid, 30_000, [("b2", "held")])
        nodes = kv.list_nodes()
        assert [(n.name, n.live) for n in nodes.entries] == [("n1", True), ("n2", True),
                                                            ("n3", True)]
        # A local listing shows what the member holds chosen: maybe not every
        # incarnation (no background catch-up), never one that is not.
        local = [n.name for n in kv.list_nodes(local=True).entries]
        assert local == sorted(set(local)) and set(local) <= {"n1", "n2", "n3"}

    async def from_async() -> tuple[list[str], list[str], list[str]]:
        async with cluster.async_client() as akv:
            buckets = await akv.list_buckets(local=True)
            sessions = await akv.list_sessions()
            nodes = await akv.list_nodes(limit=1)
            return ([b.name for b in buckets.entries], [s.id for s in sessions.entries],
                    [n.name for n in nodes.entries])

    assert asyncio.run(from_async()) == (["b1", "b2", "b3"], [sid], ["n1"])

    endpoints = ["--endpoints", ",".join(cluster.urls)]
    assert cli.main(["buckets", "--limit", "2", *endpoints]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"bucket": "b1", "keys": None}, {"bucket": "b2", "keys": None}]
    assert "more buckets follow: --after b2 (or --all)" in err
    assert cli.main(["buckets", "--all", "--limit", "2", "-o", "value", *endpoints]) == 0
    assert capsys.readouterr().out.split() == ["b1", "b2", "b3"]
    assert cli.main(["session", "list", *endpoints]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["keys"] == ["b2/held"] and json.loads(line)["session"] == sid
    assert cli.main(["nodes", "-o", "table", *endpoints]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "LIVE", "TOKEN", "SOURCE"]
    assert [row.split()[:2] for row in table[1:]] == [["n1", "true"], ["n2", "true"],
                                                      ["n3", "true"]]
    assert cli.main(["nodes", "--after", "bad name", *endpoints]) == 1
    assert "invalid_request (--after)" in capsys.readouterr().err
    assert cli.main(["session", "list", "--limit", "5000", *endpoints]) == 2
    assert "--limit must be from 1 to 1000" in capsys.readouterr().err
    assert cli.main(["buckets", "-o", "table", "--after", "b3", *endpoints]) == 0
    assert capsys.readouterr().out == "(no buckets)\n"
    cluster.stop(1)
    cluster.stop(2)
    assert cli.main(["nodes", "--endpoints", cluster.url(0), "--timeout", "0.5"]) == 3
    assert "no_quorum" in capsys.readouterr().err
