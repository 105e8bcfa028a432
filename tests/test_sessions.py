"""Sessions (the `pid` binding), leader election and binding safety on a real cluster."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from paxoskv.client import Client, Election, PaxosKVError
from tests.harness import LocalCluster, running, wait_until

# Documented bound (README): keys bound to a session are gone within this long after
# the session is closed, or after its TTL has run out since the last keep-alive.
SESSION_BOUND_S = 1.0
# What a busy 2-core machine may add to it: the tests check the ending comes, with room.
SLACK_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("sessions"), 3)


def wait_gone(cluster: LocalCluster, keys: list[str], within: float) -> None:
    """Every key in `keys` is reported absent by every node within `within` seconds."""
    clients = [cluster.client(i) for i in range(3)]
    pending = list(keys)

    def all_gone() -> bool:
        pending[:] = [k for k in pending if any(c.get(k).found for c in clients)]
        return not pending

    try:
        wait_until(all_gone, within, lambda: f"still present: {pending[:5]}")
    finally:
        for c in clients:
            c.close()


def gone_everywhere(cluster: LocalCluster, key: str) -> bool:
    clients = [cluster.client(i) for i in range(3)]
    try:
        return not any(c.get(key).found for c in clients)
    finally:
        for c in clients:
            c.close()


def test_closing_a_session_ends_its_keys_and_they_can_be_put_again(
        cluster: LocalCluster) -> None:
    keys = [f"owned-{i}" for i in range(100)]
    with cluster.client() as kv:
        first = kv.session(ttl=10)
        for key in keys:
            entry = kv.put(key, "first", session=first.id)
            assert entry.bindings == {"pid": first.id}
            assert kv.pid(key) == first.id
        first.close()
        wait_gone(cluster, keys, SESSION_BOUND_S + 2.0)
        with kv.session(ttl=10) as second:
            for key in keys:
                entry = kv.put(key, "second", session=second.id)
                assert (entry.value, entry.token) == ("second", 3)
            assert kv.pid("owned-0") == second.id
        wait_gone(cluster, ["owned-0"], SESSION_BOUND_S + SLACK_S)
        assert kv.pid("owned-0", default="none") == "none"


def test_a_closed_or_unknown_session_is_invalid(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        session = kv.session(ttl=5)
        sent_ms = int(time.time() * 1000)
        until = kv.keep_alive(session.id)  # the new deadline: a TTL from the renewal
        assert until is not None and sent_ms + 5000 <= until <= time.time() * 1000 + 5000
        session.close()
        for sid in (session.id, "0" * 32):
            with pytest.raises(PaxosKVError) as caught:
                kv.put("never", 1, session=sid)
            assert caught.value.code == "invalid_value" and caught.value.field == "bindings.pid"
        assert kv.get("never").token == 0
        assert kv.keep_alive(session.id) is None


def test_ttl_is_a_lower_bound_and_the_key_goes_soon_after(cluster: LocalCluster) -> None:
    ttl = 1.5
    with cluster.client() as kv:
        session = kv.session(ttl=ttl)
        kv.put("leased", "v", session=session.id)
        time.sleep(ttl)  # keep-alives run meanwhile: the key stays past one TTL
        assert kv.get("leased").found
        session.stop_keep_alive()
        lives_until = session.renewed_at + ttl  # a TTL after the last keep-alive
        while time.monotonic() < lives_until:
            gone = gone_everywhere(cluster, "leased")
            assert not gone or time.monotonic() >= lives_until, "ended before its TTL"
            time.sleep(0.05)
        wait_gone(cluster, ["leased"], SESSION_BOUND_S + SLACK_S)


def test_leader_election_one_leader_at_a_time_and_fast_handover(
        cluster: LocalCluster) -> None:
    leaders: list[tuple[str, float]] = []  # (candidate, time it became leader)
    lock = threading.Lock()
    sessions = {}
    stop = threading.Event()

    def candidate(name: str) -> None:
        with Client(cluster.urls, timeout=5.0) as kv, kv.session(ttl=3) as session:
            sessions[name] = session
            election = Election(kv, "election", name, session)
            try:
                election.campaign(timeout=30)
            except TimeoutError:
                return
            with lock:
                leaders.append((name, time.monotonic()))
            stop.wait(30)

    threads = [threading.Thread(target=candidate, args=(f"c{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while not leaders:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert len(leaders) == 1, "two leaders at once"
        first, _ = leaders[0]
        with cluster.client() as kv:
            assert kv.get("election").value == first
        killed = time.monotonic()
        sessions[first].close()  # the leader's session dies
        while len(leaders) < 2:
            assert time.monotonic() - killed < SESSION_BOUND_S + SLACK_S
            time.sleep(0.02)
        second, became = leaders[1]
        assert second != first and became - killed < SESSION_BOUND_S + SLACK_S
        time.sleep(0.3)
        assert len(leaders) == 2, "more than one successor"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def test_a_binding_ended_during_a_partition_never_comes_back(tmp_path: object) -> None:
    from pathlib import Path

    cluster = LocalCluster(Path(str(tmp_path)), 3)
    try:
        cluster.start_all()
        with cluster.client(0) as kv:
            session = kv.session(ttl=10)
            keys = [f"p{i}" for i in range(20)]
            for key in keys:
                kv.put(key, "old", session=session.id)
            # Cut node 3 off (paused: it neither answers nor learns anything).
            cluster.procs["n3"].send_signal(signal.SIGSTOP)
            session.close()
            via = [cluster.client(i) for i in (0, 1)]
            try:
                wait_until(lambda: not any(c.get(k).found for c in via for k in keys), 5,
                           "keys outlived their closed session")
            finally:
                for c in via:
                    c.close()
            cluster.procs["n3"].send_signal(signal.SIGCONT)
            cluster.wait_ready([2])
            with cluster.client(2) as healed:
                for key in keys:
                    entry = healed.get(key)
                    assert not entry.found and entry.token == 2, entry
                    assert healed.put(key, "new").value == "new"
    finally:
        cluster.close()


def test_ending_a_session_cascades_through_a_key_chain(cluster: LocalCluster) -> None:
    with cluster.client() as kv:
        session = kv.session(ttl=10)
        kv.put("chain-1", 1, session=session.id)
        kv.put("chain-2", 2, parent="chain-1")
        kv.put("chain-3", 3, parent="chain-2")
        session.close()
        wait_gone(cluster, ["chain-1", "chain-2", "chain-3"], 3 * SESSION_BOUND_S + SLACK_S)
        again = kv.put("chain-3", "again")
        assert again.found and again.value == "again" and again.token == 3


def test_async_client_sessions(cluster: LocalCluster) -> None:
    async def scenario() -> tuple[str, str | None, bool, str | None]:
        async with cluster.async_client() as kv:
            async with await kv.session(ttl=3) as session:
                await kv.put("async-owned", 1, session=session.id)
                bound = await kv.pid("async-owned")
                await asyncio.sleep(1.5)  # the keep-alive task runs meanwhile
                alive = session.alive
            deadline = time.monotonic() + SESSION_BOUND_S + SLACK_S
            while (await kv.get("async-owned")).found:
                assert time.monotonic() < deadline, "key outlived its closed session"
                await asyncio.sleep(0.05)
            return session.id, bound, alive, await kv.pid("async-owned")

    session_id, bound, alive, after = asyncio.run(scenario())
    assert bound == session_id and alive and after is None


def test_is_leader_ends_with_resign_and_with_the_key_deleted_by_another(
        cluster: LocalCluster) -> None:
    with Client(cluster.urls) as kv, kv.session(ttl=5) as session:
        election = Election(kv, "is-leader", "me", session)
        assert not election.is_leader(), "leading before any campaign"
        election.campaign(timeout=10)
        assert election.is_leader()
        election.resign()
        assert not election.is_leader(), "still leading after resign"
        assert not kv.get("is-leader").found
        term = election.campaign(timeout=10)
        assert election.is_leader()
        with Client(cluster.urls) as other:
            assert other.delete("is-leader", term.token).deleted
        assert not election.is_leader(), "still leading after the key was deleted"
