"""Commit marks on a real disk: logged, not written as records; replayed at load; folded.

A mark is one entry in the disk's log of marks (server.lazy_writes), not a second
write of the record: these tests pin that it still survives a reopen, that it
counts only for the record it marked, and that folding the log (which deletes
its older generations) never loses a mark, even when a restart cuts a fold short.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import Accept
from paxoskv.core.state import KeyState
from paxoskv.server import lazy_writes
from paxoskv.server.lazy_writes import LazyWrites, MarkLog
from paxoskv.server.storage import Storage, read_records


def _accepted(n: int) -> Record:
    ballot = Ballot(n, 1, "n1")
    return Record(ballot, ballot, KeyState(n, True, {"n": n}))


def _reopened(path: Path) -> tuple[dict[str, Record], dict[int, list[str]]]:
    storage = Storage(path)
    records = storage.load()
    logged = storage.logged_marks
    asyncio.run(storage.close())
    return records, logged


def test_a_logged_mark_marks_only_the_record_accepted_at_its_ballot(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = Storage(tmp_path)
        await storage.write([("b/k1", _accepted(1)), ("b/k2", _accepted(2))])
        await storage.write([], marks=MarkLog(0, [("b/k1", Ballot(1, 1, "n1")),
                                                  ("b/k2", Ballot(1, 1, "n1")),  # older
                                                  ("b/gone", Ballot(1, 1, "n1"))]))
        assert storage.records_written == 2  # the marks wrote no record
        await storage.close()

    asyncio.run(scenario())
    records, logged = _reopened(tmp_path)
    assert records["b/k1"] == _accepted(1)._replace(chosen=True)
    assert records["b/k2"] == _accepted(2)  # a mark of another ballot is moot
    assert "b/gone" not in records  # a mark makes no record
    assert logged == {0: ["b/k1", "b/k2", "b/gone"]}


async def _accept_and_mark(acceptor: Acceptor, lazy: LazyWrites, key: str, n: int) -> None:
    """What a node does for one decided put: the accept, durable before its reply;
    then the commit mark, which rides along with a later write."""
    ballot = Ballot(n, 1, "n1")
    _, write = acceptor.handle(Accept(key, ballot, KeyState(n, True, n)))
    assert write is not None
    await lazy.durable([write])
    assert acceptor.mark_chosen(key, ballot)
    lazy.mark(key, ballot)


def _on_disk_chosen(path: Path) -> dict[str, int]:
    """Each key that a restart would find chosen, with its token (read as another
    process would, while the node still holds the directory)."""
    with sqlite3.connect(path / "acceptor.sqlite3") as db:
        records, _ = read_records(db)
    return {key: rec.state.token for key, rec in records.items() if rec.chosen}


def test_a_mark_rides_with_the_next_write_and_survives_a_reopen(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = Storage(tmp_path)
        acceptor = Acceptor(storage.load())
        lazy = LazyWrites(storage, acceptor)
        for n in range(1, 4):
            await _accept_and_mark(acceptor, lazy, f"b/k{n}", n)
        await lazy.durable([])  # the last mark rides with this write
        assert storage.records_written == 3  # one row per put, not two
        lazy.stop()
        await storage.close()

    asyncio.run(scenario())
    assert _on_disk_chosen(tmp_path) == {"b/k1": 1, "b/k2": 2, "b/k3": 3}


def test_folding_bounds_the_log_and_loses_no_mark(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A hot key marked over and over: the log is folded into the records (its old
    generations deleted) instead of growing with every mark; after each commit,
    what a restart would find chosen is what memory has."""
    monkeypatch.setattr(lazy_writes, "FOLD_MIN", 10)
    monkeypatch.setattr(lazy_writes, "FOLD_CHUNK", 2)
    generations = set()

    async def scenario() -> None:
        storage = Storage(tmp_path)
        acceptor = Acceptor(storage.load())
        lazy = LazyWrites(storage, acceptor)
        for n in range(1, 61):
            for key in ("b/hot", f"b/cold{n % 5}"):
                await _accept_and_mark(acceptor, lazy, key, n)
            await lazy.durable([])
            in_memory = {k: r.state.token for k, r in acceptor.records.items() if r.chosen}
            assert _on_disk_chosen(tmp_path) == in_memory, n
            logged = storage._db.execute("SELECT COUNT(*), MIN(gen), MAX(gen) FROM marks"
                                         ).fetchone()
            generations.add(logged[2])
            assert logged[0] <= 30, logged  # rows: bounded, not one per round
        lazy.stop()
        await storage.close()

    asyncio.run(scenario())
    assert len(generations) >= 4, generations  # it did fold, several times


def test_a_fold_cut_short_by_a_restart_goes_on(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lazy_writes, "FOLD_MIN", 10)
    monkeypatch.setattr(lazy_writes, "FOLD_CHUNK", 1)
    monkeypatch.setattr(lazy_writes, "UNHURRIED_FLUSH_S", 0.01)

    async def first_run() -> None:
        storage = Storage(tmp_path)
        acceptor = Acceptor(storage.load())
        lazy = LazyWrites(storage, acceptor)
        for n in range(1, 12):  # the 11th mark starts a fold of the three keys
            await _accept_and_mark(acceptor, lazy, f"b/k{n % 3}", n)
        await lazy.durable([])  # one key folded; then a crash: no clean stop
        await storage.close()

    asyncio.run(first_run())
    _, logged = _reopened(tmp_path)
    assert sorted(logged) == [0, 1], logged  # the old generation still awaits deletion

    async def second_run() -> None:
        storage = Storage(tmp_path)
        acceptor = Acceptor(storage.load())
        LazyWrites(storage, acceptor)  # resumes the fold on its own timer
        await asyncio.sleep(0.5)
        await storage.close()

    asyncio.run(second_run())
    _, logged = _reopened(tmp_path)
    assert sorted(logged) == [1], logged
    assert _on_disk_chosen(tmp_path) == {"b/k0": 9, "b/k1": 10, "b/k2": 11}
