"""Multi-process tests: real node processes on loopback with real data directories."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from paxoskv.client import Entry, NoQuorum
from tests.harness import LocalCluster, wait_until


async def _race(cluster: LocalCluster, key: str) -> list[Entry]:
    """Three clients, one per node, put different values to `key` at once."""
    clients = [cluster.async_client(i) for i in range(3)]
    try:
        return list(await asyncio.gather(
            *(c.put(key, f"client-{i}") for i, c in enumerate(clients))))
    finally:
        for c in clients:
            await c.close()


def test_concurrent_puts_agree_on_one_value(cluster3: LocalCluster) -> None:
    for k in range(20):
        key = f"race-{k}"
        results = asyncio.run(_race(cluster3, key))
        assert all(r.ok and r.found for r in results)
        decided = {r.value for r in results}
        assert len(decided) == 1, f"{key}: clients saw {decided}"
        assert {r.token for r in results} == {1}
        for i in range(3):
            with cluster3.client(i) as kv:
                assert kv.get(key).value in decided
                assert kv.get(key).value == results[0].value


async def _writers(cluster: LocalCluster, count: int) -> list[Entry]:
    clients = [cluster.async_client(i, timeout=30.0) for i in range(len(cluster.members))]
    try:
        return list(await asyncio.gather(
            *(clients[w % len(clients)].put("contended", f"writer-{w}") for w in range(count))))
    finally:
        for c in clients:
            await c.close()


def test_600_writers_on_one_key_get_one_value(cluster5: LocalCluster) -> None:
    results = asyncio.run(_writers(cluster5, 600))
    assert len(results) == 600
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert len({r.value for r in results}) == 1
    assert {r.token for r in results} == {1}


def test_kill_9_one_node_then_restart_serves_earlier_keys(cluster3: LocalCluster) -> None:
    with cluster3.client() as kv:
        before = {f"k{i}": kv.put(f"k{i}", i).value for i in range(30)}
    cluster3.kill(2)
    with cluster3.client(0) as kv:
        during = {f"d{i}": kv.put(f"d{i}", i).value for i in range(30)}
        assert all(kv.get(k).value == v for k, v in {**before, **during}.items())
    cluster3.start(2)
    cluster3.wait_ready([2])
    with cluster3.client(2) as kv:
        for key, value in {**before, **during}.items():
            assert kv.get(key).value == value
        # Its own copy (from its disk, or caught up since) never holds another value.
        assert all(kv.get(k, local=True).value in (v, None) for k, v in before.items())


def test_no_quorum_policies(cluster3: LocalCluster) -> None:
    with cluster3.client(0) as kv:
        assert kv.put("before", 1).ok
        # Node 0's own copy may lag the decision (the key's home may be another member,
        # whose commit notice is on its way): wait for it, for the local read below.
        wait_until(lambda: kv.get("before", local=True).value == 1, 5,
                   "node 0 never learned that 'before' was chosen")
    cluster3.stop(1)
    cluster3.stop(2)
    # /readyz says so: 503 with the no_quorum error, once node 0 has seen both go.
    deadline = time.monotonic() + 10
    while (ready := httpx.get(cluster3.url(0) + "/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "readyz still 200 without a quorum"
        time.sleep(0.05)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "no_quorum"
    with cluster3.client(0, timeout=2.0) as kv:
        started = time.monotonic()
        entry = kv.put("x", 1)  # "return" is the default
        assert entry.error == "no_quorum" and not entry.ok
        assert time.monotonic() - started < 1.5, "return must not wait for the deadline"
        assert kv.get("before").error == "no_quorum"
        with pytest.raises(NoQuorum):
            kv.put("x", 1, no_quorum="fail")
        with pytest.raises(NoQuorum):
            kv.get("before", no_quorum="fail")
        # Still readable as a local, possibly stale read.
        assert kv.get("before", local=True).value == 1

    results: list[Entry] = []

    def retrying_put() -> None:
        with cluster3.client(0, timeout=20.0) as kv:
            results.append(kv.put("x", "after-retry", no_quorum="retry"))

    writer = threading.Thread(target=retrying_put)
    writer.start()
    time.sleep(1.0)
    assert not results, "retry must wait for a quorum"
    cluster3.start(1)
    writer.join(timeout=25)
    assert results and results[0].ok and results[0].value == "after-retry"
    with cluster3.client(1) as kv:
        assert kv.get("x").value == "after-retry"


def test_full_restart_keeps_every_acknowledged_key(cluster3: LocalCluster) -> None:
    with cluster3.client() as kv:
        acked = {f"k{i}": kv.put(f"k{i}", {"n": i}) for i in range(50)}
        deleted = kv.delete("k0", acked["k0"].token)
        assert deleted.deleted
    for i in range(3):
        cluster3.kill(i)  # no graceful flush for anyone
    cluster3.start_all()
    with cluster3.client() as kv:
        assert not kv.get("k0").found
        assert kv.get("k0").token == 2
        for i in range(1, 50):
            entry = kv.get(f"k{i}")
            assert entry.value == {"n": i} and entry.token == 1
        # A new generation after the tombstone gets a larger fencing token.
        assert kv.put("k0", "again").token == 3


def test_sigterm_under_load_stops_every_node_promptly(cluster3: LocalCluster) -> None:
    stop = threading.Event()
    acknowledged: dict[str, int] = {}

    async def load() -> None:
        async def writer(w: int) -> None:
            async with cluster3.async_client(w % 3, timeout=2.0) as kv:
                n = 0
                while not stop.is_set():
                    try:
                        entry = await kv.put(f"load-{w}-{n}", n)
                    except Exception:
                        break
                    if entry.ok:
                        acknowledged[entry.key] = entry.token
                    n += 1

        await asyncio.gather(*(writer(w) for w in range(48)))

    loader = threading.Thread(target=lambda: asyncio.run(load()))
    loader.start()
    try:
        # Requests, peer frames and commits are in flight once puts are answered.
        deadline = time.monotonic() + 20
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 200, "the load did not run"
        for i in range(3):
            started = time.monotonic()
            assert cluster3.stop(i) == 0
            assert time.monotonic() - started < 5.0
    finally:
        stop.set()
        loader.join(timeout=30)
    # Every acknowledged put survived the graceful stop.
    cluster3.start_all()
    with cluster3.client() as kv:
        for key, token in sorted(acknowledged.items()):
            entry = kv.get(key)
            assert entry.found and entry.token == token, (key, entry)


def _tcp_connections() -> set[tuple[str, int, str, int]]:
    """Established IPv4 TCP connections as (local ip, port, remote ip, port)."""
    def address(raw: str) -> tuple[str, int]:
        ip_hex, port_hex = raw.split(":")
        ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip_hex)))
        return ip, int(port_hex, 16)

    found = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if fields[3] == "01":  # ESTABLISHED
                found.add((*address(fields[1]), *address(fields[2])))
    return found


def _members_seen(cluster: LocalCluster) -> list[dict[str, object]]:
    seen = []
    for i in range(len(cluster.members)):
        with cluster.client(i) as kv:  # closed: no client connection stays open
            seen.extend(kv.status()["members"])
    return seen


def test_peer_connections_leave_from_each_nodes_own_address(tmp_path: Path) -> None:
    hosts = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
    cluster = LocalCluster(tmp_path, 3, hosts=hosts)
    try:
        cluster.start_all()
        deadline = time.monotonic() + 10
        while not all(m["connected"] for m in _members_seen(cluster)):
            assert time.monotonic() < deadline, "peers never all connected"
            time.sleep(0.1)
        listening = {(m.host, m.port) for m in cluster.members}
        peer_links = {(src, dst) for src, _, dst, dport in _tcp_connections()
                      if (dst, dport) in listening}
        # Every node dials every other one from its own address, never from 127.0.0.1.
        assert {(a, b) for a in hosts for b in hosts if a != b} <= peer_links
        assert not any(src == "127.0.0.1" for src, _ in peer_links)
    finally:
        cluster.close()
