"""Compare-and-swap (POST /v1/swap, Client.swap, `paxoskv swap`) on a real 3-node
cluster: a swap decides a new generation with the new value and keeps the key's
bindings; a wrong value, a wrong token or an absent key swap nothing; concurrent
increments lose no update, even when two clients swap in the same value; children
bound to the swapped generation end; bad input is a 4xx naming the field."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from paxoskv import cli
from paxoskv.client import Client
from tests.harness import LocalCluster, running, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("swap"), 3)


def swap(cluster: LocalCluster, node: int = 0, **body: Any) -> httpx.Response:
    return httpx.post(cluster.url(node) + "/v1/swap", json=body, timeout=10)


def test_a_swap_with_the_value_held_decides_a_new_generation(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        assert kv.put("leader", "pod-a").token == 1
    done = swap(cluster, 1, key="leader", expected="pod-a", value="pod-b")
    assert done.status_code == 200, done.text
    assert done.json() == {"bucket": "default", "key": "leader", "found": True,
                           "value": "pod-b", "token": 2, "bindings": {}, "swapped": True}
    # The same request again finds another value: nothing more happens.
    again = swap(cluster, 2, key="leader", expected="pod-a", value="pod-b").json()
    assert (again["swapped"], again["value"], again["token"]) == (False, "pod-b", 2)
    with cluster.client() as kv:
        assert (kv.get("leader").value, kv.get("leader").token) == ("pod-b", 2)


def test_a_wrong_value_token_or_an_absent_key_swaps_nothing(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        kv.put("cfg", {"replicas": 3, "image": "v1"})
    wrong = swap(cluster, key="cfg", expected={"replicas": 2, "image": "v1"},
                 value={"replicas": 5}).json()
    assert (wrong["swapped"], wrong["value"], wrong["token"]) == (
        False, {"replicas": 3, "image": "v1"}, 1)
    # The value matches, the token does not.
    stale = swap(cluster, key="cfg", expected={"replicas": 3, "image": "v1"},
                 value={"replicas": 5}, token=7).json()
    assert (stale["swapped"], stale["token"]) == (False, 1)
    # Values compare as JSON: another key order is the same object, 3.0 is not 3.
    assert not swap(cluster, key="cfg", expected={"image": "v1", "replicas": 3.0},
                    value="x").json()["swapped"]
    done = swap(cluster, key="cfg", expected={"image": "v1", "replicas": 3},
                value={"replicas": 5}, token=1).json()
    assert (done["swapped"], done["value"], done["token"]) == (True, {"replicas": 5}, 2)
    absent = swap(cluster, key="never-put", expected="x", value="y").json()
    assert (absent["swapped"], absent["found"], absent["token"]) == (False, False, 0)
    with cluster.client() as kv:
        assert kv.delete("cfg").deleted
    gone = swap(cluster, key="cfg", expected={"replicas": 5}, value="z").json()
    assert (gone["swapped"], gone["found"], gone["token"]) == (False, False, 3)


def test_a_swap_keeps_the_bindings_and_ends_the_children(cluster: LocalCluster) -> None:
    with cluster.client() as kv, kv.session(ttl=30) as session:
        lock = kv.put("lock", "holder-1", session=session.id)
        child = kv.put("lock-data", "d", parent="lock")
        assert child.created
        done = kv.swap("lock", "holder-1", "holder-2")
        assert done.swapped and done.token == lock.token + 1
        assert done.bindings == {"pid": session.id}
        assert kv.pid("lock") == session.id  # still bound: it ends with the session
        # A child is pinned to the parent's generation: the swap ended it.
        wait_until(lambda: not kv.get("lock-data").found, 5,
                   "a key bound to the swapped generation outlived it")
    # The session closed: the swapped key ended with it.
    with cluster.client() as kv:
        wait_until(lambda: not kv.get("lock").found, 5, "the swapped key outlived its session")
        # A deadline stays too: the new generation ends when the old one would have.
        until = int(time.time() * 1000) + 2_000
        kv.put("lease", "a", until=until)
        swapped = kv.swap("lease", "a", "b")
        assert swapped.swapped and swapped.bindings == {"until": until}
        assert kv.get("lease").found
        wait_until(lambda: not kv.get("lease").found, 6, "the swapped key outlived its deadline")
        assert time.time() * 1000 >= until


def test_concurrent_increments_lose_no_update(cluster: LocalCluster) -> None:
    """Compare-and-swap loops from several clients: two of them often swap the same
    number into the same generation, and only one of them may hear that it did."""
    with cluster.client() as kv:
        kv.put("counter", 0)
    rounds, workers = 15, 4
    won: list[int] = []
    failures: list[BaseException] = []

    def increment(node: int) -> None:
        try:
            with cluster.client(node, no_quorum="retry", timeout=20) as kv:
                for _ in range(rounds):
                    seen = kv.get("counter")
                    while not (done := kv.swap("counter", seen.value, seen.value + 1)).swapped:
                        seen = done  # another client won: try on what it decided
                    won.append(done.value)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=increment, args=(i % 3,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert sorted(won) == list(range(1, rounds * workers + 1))
    with cluster.client() as kv:
        final = kv.get("counter")
        assert (final.value, final.token) == (rounds * workers, rounds * workers + 1)


BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"value": "v", "expected": "e"}, 400, "key"),
    ({"key": "k", "value": "v"}, 400, "expected"),
    ({"key": "k", "expected": "e"}, 400, "value"),
    ({"key": "k", "expected": None, "value": "v"}, 400, "expected"),
    ({"key": "k", "expected": "e", "value": None}, 400, "value"),
    ({"key": "k", "expected": "e", "value": "v", "token": 0}, 400, "token"),
    ({"key": "k", "expected": "e", "value": "v", "token": "1"}, 400, "token"),
    ({"key": "k", "expected": "e", "value": "v", "token": True}, 400, "token"),
    ({"key": "k", "expected": "e", "value": "v", "bindings": {}}, 400, "bindings"),
    ({"key": "k", "expected": "e", "value": "v", "bucket": "_nodes"}, 400, "bucket"),
    ({"key": "k", "expected": "e", "value": "v", "timeout_ms": 0}, 400, "timeout_ms"),
    ({"key": "k", "expected": "x" * 70_000, "value": "v"}, 413, "expected"),
    ({"key": "k", "expected": "e", "value": 2**64}, 400, "value"),
    ({"key": "k", "expected": "e", "value": "v", "no_quorum": "x"}, 400, "no_quorum"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_swaps_are_refused_naming_the_field(cluster: LocalCluster, body: dict[str, Any],
                                                status: int, field: str) -> None:
    answer = swap(cluster, **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field, answer.text


def test_the_clients_and_the_cli_swap(cluster: LocalCluster,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    endpoints = ["--endpoints", ",".join(cluster.urls)]
    assert cli.main(["put", "n", "41", "--json", *endpoints]) == 0
    capsys.readouterr()
    assert cli.main(["swap", "n", "41", "42", "--json", *endpoints]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {"bucket": "default", "key": "n", "found": True, "value": 42,
                               "token": 2, "bindings": {}, "swapped": True}
    # "41" as a string is not the number 41: not swapped, exit 1, one line on stderr.
    assert cli.main(["swap", "n", "42", "43", "-o", "value", *endpoints]) == 1
    out, err = capsys.readouterr()
    assert out == "42\n"
    assert err == "paxoskv: not swapped: key 'n' holds another value (token 2); nothing " \
                  "was written\n"
    assert cli.main(["swap", "n", "42", "43", "--json", "--token", "1", *endpoints]) == 1
    assert "is at token 2, not --token 1" in capsys.readouterr().err
    assert cli.main(["swap", "absent", "a", "b", *endpoints]) == 1
    assert "key 'absent' is absent" in capsys.readouterr().err
    assert cli.main(["swap", "n", "{", "43", "--json", *endpoints]) == 1
    assert "expected is not valid JSON" in capsys.readouterr().err
    assert cli.main(["swap", "n", "42", "null", "--json", *endpoints]) == 1
    assert "invalid_request (value): value must not be null" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["swap", "n", "42", "43", "--json", "--token", "0", *endpoints])
    assert usage.value.code == cli.USAGE and "--token" in capsys.readouterr().err
    assert cli.main(["swap", "n", "42", "43", "--json", "--token", "2", "-o", "table",
                     *endpoints]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["BUCKET", "KEY", "FOUND", "VALUE", "TOKEN", "BINDINGS",
                                "SWAPPED"]
    assert table[1].split() == ["default", "n", "true", "43", "3", "-", "true"]

    with Client(cluster.urls) as kv:
        entry = kv.swap("n", 43, 44, token=3, bucket="default")
        assert (entry.swapped, entry.value, entry.token) == (True, 44, 4)
        assert entry.to_dict()["swapped"] is True

    async def from_async() -> tuple[bool, bool]:
        async with cluster.async_client() as akv:
            lost = await akv.swap("n", 43, 45)
            won = await akv.swap("n", 44, 45)
            return lost.swapped, won.swapped

    assert asyncio.run(from_async()) == (False, True)
    cluster.stop(1)
    cluster.stop(2)
    try:
        with cluster.client(0, timeout=0.5) as kv:
            unknown = kv.swap("n", 45, 46)
            assert not unknown.ok and unknown.error == "no_quorum"
            with pytest.raises(Exception, match="no_quorum"):
                _ = unknown.swapped
        assert cli.main(["swap", "n", "45", "46", "--json", "--endpoints", cluster.url(0),
                         "--timeout", "0.5"]) == 3
        assert "no_quorum" in capsys.readouterr().err
    finally:
        cluster.start(1)
        cluster.start(2)
        cluster.wait_ready([0, 1, 2])
