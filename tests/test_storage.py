"""Acceptor storage on a real disk: durability across reopen, group commit, boot counter."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import Accept, encode
from paxoskv.core.state import KeyState
from paxoskv.server.node import Node
from paxoskv.server.storage import NO_FSYNC, REPLY_BEFORE_DURABLE, DataDirInUse, Storage


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
    node = Node("a", ["a", "b", "c"], Acceptor(), storage, boot=1)
    early: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    def send(envelope: list[Any]) -> None:
        key = f"b/k{envelope[0]}"
        if not _committed(storage.path, key):
            early.append(key)

    def spawn(coro: Awaitable[None]) -> None:
        tasks.add(asyncio.ensure_future(coro))

    for n in range(20):
        accept = Accept(f"b/k{n}", Ballot(1, 1, "b"), KeyState(1, True, n))
        node.serve_frame("b", [[n, "m", encode(accept)]], send, spawn)
        await asyncio.sleep(0)
    await storage.flushed()
    await asyncio.sleep(0.05)
    await storage.close()
    return early


def test_peer_replies_leave_only_once_their_write_is_committed(tmp_path: Path) -> None:
    assert asyncio.run(_replies_before_commit(tmp_path, frozenset())) == []


def test_the_reply_check_catches_replies_before_the_commit(tmp_path: Path) -> None:
    """Must fail on the planted bug: replies sent as soon as the write is queued."""
    early = asyncio.run(_replies_before_commit(tmp_path, frozenset({REPLY_BEFORE_DURABLE})))
    assert len(early) > 10


def test_storage_is_fsynced_at_every_commit(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    asyncio.run(storage.close())
    planted = Storage(tmp_path, frozenset({NO_FSYNC}))
    assert planted._db.execute("PRAGMA synchronous").fetchone()[0] == 0  # the planted bug
    asyncio.run(planted.close())


def test_a_second_storage_on_one_directory_is_refused(tmp_path: Path) -> None:
    first = Storage(tmp_path)
    with pytest.raises(DataDirInUse, match="in use by another node"):
        Storage(tmp_path)
    asyncio.run(first.close())
    asyncio.run(Storage(tmp_path).close())  # free again once the first is closed


FAILING_COMMIT = """
import asyncio, sys
from pathlib import Path
from paxoskv.core.acceptor import Record
from paxoskv.server.storage import Storage

def broken(batch):
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
