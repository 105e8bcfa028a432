"""Acceptor storage on a real disk: durability across reopen, group commit, boot counter."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.ballot import Ballot
from paxoskv.core.config import Config, Member
from paxoskv.core.messages import Accept, encode
from paxoskv.core.state import KeyState
from paxoskv.server.node import Node
from paxoskv.server.storage import (
    NO_FSYNC,
    REPLY_BEFORE_DURABLE,
    DataDirInUse,
    LaggingStorage,
    Storage,
)


def _record(n: int) -> Record:
    ballot = Ballot(n, 1, "n1")
    return Record(ballot, ballot, KeyState(n, True, {"n": n}))


async def _write_concurrently(storage: Storage, count: int) -> None:
    await asyncio.gather(*(storage.write([(f"b/k{i}", _record(i))]) for i in range(count)))


def test_writes_survive_reopen_and_are_group_committed(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    asyncio.run(_write_concurrently(storage, 200))
    # 200 concurrent writers shared a handful of commits (one fsync each).
    assert storage.commits < 20
    assert storage.records_written == 200
    asyncio.run(storage.close())

    reopened = Storage(tmp_path)
    records = reopened.load()
    assert len(records) == 200
    assert records["b/k7"] == _record(7)
    asyncio.run(reopened.close())


def test_later_write_of_a_key_wins(tmp_path: Path) -> None:
    async def scenario(storage: Storage) -> None:
        first = storage.write([("b/k", _record(1))])
        second = storage.write([("b/k", _record(2))])
        await asyncio.gather(first, second)
        await storage.close()

    asyncio.run(scenario(Storage(tmp_path)))
    reopened = Storage(tmp_path)
    assert reopened.load()["b/k"] == _record(2)
    asyncio.run(reopened.close())


def test_flushed_waits_for_pending_writes(tmp_path: Path) -> None:
    async def scenario(storage: Storage) -> bool:
        write = storage.write([("b/k", _record(1))])
        await storage.flushed()
        done = write.done()
        await storage.close()
        return done

    assert asyncio.run(scenario(Storage(tmp_path)))


def test_flushed_waits_for_a_commit_already_under_way(tmp_path: Path) -> None:
    async def scenario(storage: Storage) -> tuple[bool, bool, bool]:
        idle = storage.flushed().done()  # nothing written: nothing to wait for
        write = storage.write([("b/k", _record(1))])
        await asyncio.sleep(0)  # the commit starts: nothing is pending, one is in flight
        flushed = storage.flushed()
        waited = not flushed.done()
        await flushed
        durable = write.done() and _committed(storage.path, "b/k")
        await storage.close()
        return idle, waited, durable

    assert asyncio.run(scenario(Storage(tmp_path))) == (True, True, True)


def test_each_commit_is_counted_once_and_an_idle_storage_commits_nothing(tmp_path: Path) -> None:
    async def scenario(storage: Storage) -> None:
        await storage.write([("b/k1", _record(1)), ("b/k2", _record(2))])
        await storage.write([("b/k3", _record(3))])
        await storage.close()

    storage = Storage(tmp_path)
    asyncio.run(scenario(storage))
    assert (storage.commits, storage.records_written) == (2, 3)


def test_close_commits_a_write_whose_commit_has_not_started_yet(tmp_path: Path) -> None:
    """A clean stop writes what it has queued (the node's commit marks, at SIGTERM)
    and closes at once: close must wait for those writes, not only for a commit
    already under way."""
    async def scenario(storage: Storage) -> bool:
        write = storage.write([("b/k", _record(1))])  # queued; its commit starts soon
        await storage.close()
        return write.done()

    assert asyncio.run(scenario(Storage(tmp_path)))
    reopened = Storage(tmp_path)
    assert reopened.load() == {"b/k": _record(1)}
    asyncio.run(reopened.close())


def test_meta_entries_are_set_replaced_and_removed_durably(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage.is_empty()
    assert storage.meta("cluster_id") is None
    storage.set_meta({"cluster_id": "c-1", "member_id": "m-1"})
    assert not storage.is_empty()  # an identity alone: this directory served
    storage.set_meta({"member_id": None, "cluster_id": "c-2"})
    asyncio.run(storage.close())

    reopened = Storage(tmp_path)
    assert (reopened.meta("cluster_id"), reopened.meta("member_id")) == ("c-2", None)
    reopened.set_meta({"cluster_id": None})
    assert reopened.is_empty()

    async def write() -> None:
        await reopened.write([("b/k", _record(1))])

    asyncio.run(write())
    assert not reopened.is_empty()  # a record alone: this directory served
    asyncio.run(reopened.close())


def test_the_data_directory_is_created_with_its_parents(tmp_path: Path) -> None:
    data_dir = tmp_path / "volume" / "node-1"
    asyncio.run(Storage(data_dir).close())
    assert (data_dir / "acceptor.sqlite3").exists()


def test_the_planted_lagging_disk_acknowledges_at_once_and_commits_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted bug must lose only the last LAG_S of writes, as a disk cache would."""
    monkeypatch.setattr(LaggingStorage, "LAG_S", 0.05)

    async def scenario(storage: LaggingStorage) -> tuple[bool, bool, bool]:
        acked = storage.write([("b/k1", _record(1))]).done()
        at_once = _committed(storage.path, "b/k1")
        await asyncio.sleep(0.2)  # a timer after the lag's
        later = _committed(storage.path, "b/k1")
        storage.write([("b/k2", _record(2))])
        await storage.close()  # a clean stop commits what is pending
        return acked, at_once, later

    assert asyncio.run(scenario(LaggingStorage(tmp_path))) == (True, False, True)
    reopened = Storage(tmp_path)
    assert set(reopened.load()) == {"b/k1", "b/k2"}
    asyncio.run(reopened.close())


def test_boot_counter_grows_across_restarts(tmp_path: Path) -> None:
    boots = []
    for _ in range(3):
        storage = Storage(tmp_path)
        boots.append(storage.next_boot())
        asyncio.run(storage.close())
    assert boots == [1, 2, 3]


# -- replies wait for the disk ------------------------------------------------------------


def _committed(path: Path, key: str) -> bool:
    """Whether `key` is in the database as another process would see it after a crash."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None


async def _replies_before_commit(tmp_path: Path, breaks: frozenset[str]) -> list[str]:
    """Serve peer frames on a real node over real storage; the keys whose reply left
    before their record was committed."""
    storage = Storage(tmp_path, breaks)
    node = Node("a", Config.initial([Member(n, "", f"id-{n}") for n in "abc"]), Acceptor(),
                storage, boot=1)
    early: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    def send(envelope: list[Any]) -> None:
        key = f"b/k{envelope[0]}"
        if not _committed(storage.path, key):
            early.append(key)

    def spawn(coro: Awaitable[None]) -> None:
        tasks.add(asyncio.ensure_future(coro))

    # Hold the writer thread until every frame is served, so that no commit can
    # finish first by luck: a reply that leaves now left before its commit.
    gate = threading.Event()
    storage._thread.submit(gate.wait)
    for n in range(1, 21):  # request ids count from 1 (0 is a notice: no reply)
        accept = Accept(f"b/k{n}", Ballot(1, 1, "b"), KeyState(1, True, n))
        node.serve_frame("b", [[n, "m", encode(accept)]], send, spawn)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # time for any reply that does not wait for its commit
    gate.set()
    await storage.flushed()
    await asyncio.sleep(0.05)
    await storage.close()
    return early


def test_peer_replies_leave_only_once_their_write_is_committed(tmp_path: Path) -> None:
    assert asyncio.run(_replies_before_commit(tmp_path, frozenset())) == []


def test_the_reply_check_catches_replies_before_the_commit(tmp_path: Path) -> None:
    """Must fail on the planted bug: replies sent as soon as the write is queued."""
    early = asyncio.run(_replies_before_commit(tmp_path, frozenset({REPLY_BEFORE_DURABLE})))
    assert len(early) == 20, early


def test_storage_is_fsynced_at_every_commit(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    asyncio.run(storage.close())
    planted = Storage(tmp_path, frozenset({NO_FSYNC}))
    assert planted._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # the planted bug
    asyncio.run(planted.close())


def test_a_second_storage_on_one_directory_is_refused(tmp_path: Path) -> None:
    first = Storage(tmp_path)
    with pytest.raises(DataDirInUse, match=rf"in use by another node \(pid {os.getpid()}\)"):
        Storage(tmp_path)
    asyncio.run(first.close())
    asyncio.run(Storage(tmp_path).close())  # free again once the first is closed


FAILING_COMMIT = """
import asyncio, sys
from pathlib import Path
from paxoskv.core.acceptor import Record
from paxoskv.server.storage import Storage

def broken(batch, meta, marks=None):
    raise OSError("disk full")

async def main():
    storage = Storage(Path(sys.argv[1]))
    storage._commit = broken
    await storage.write([("b/k", Record())])
    print("replied after a failed commit")

asyncio.run(main())
"""


def test_a_failed_commit_stops_the_node_at_once(tmp_path: Path) -> None:
    """Fail-stop: memory ahead of the disk must never answer anyone."""
    done = subprocess.run([sys.executable, "-c", FAILING_COMMIT, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 70, done
    assert "replied after a failed commit" not in done.stdout
    assert "storage commit failed: disk full" in done.stderr
