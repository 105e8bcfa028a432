"""Acceptor storage on a real disk: durability across reopen, group commit, boot counter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from paxoskv.core.acceptor import Record
from paxoskv.core.ballot import Ballot
from paxoskv.core.state import KeyState
from paxoskv.server.storage import Storage


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
