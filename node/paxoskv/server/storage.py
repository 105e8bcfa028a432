"""Durable acceptor state: SQLite in WAL mode, synchronous=FULL, group commit.

Records live in memory (the acceptor's dict) and are written through to
SQLite, with a log of commit marks beside them (see lazy_writes). Writes from
concurrent requests are gathered while the previous commit's fsync runs and
committed together in one transaction, in order, on a single writer thread.
`flushed()` completes when everything written before it is durable, which is
what a reply must wait for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from paxoskv import lockfile
from paxoskv.core.acceptor import Mark, Record, Write, apply_marks
from paxoskv.core.ballot import Ballot
from paxoskv.server.aio import resolved
from paxoskv.server.lazy_writes import MarkLog

log = logging.getLogger("paxoskv.storage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (seq INTEGER PRIMARY KEY, gen INTEGER NOT NULL,
                                  marks BLOB NOT NULL);
"""


class DataDirInUse(Exception):
    """Another process holds the data directory's lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on `data_dir` for this process's lifetime: two nodes
    sharing one acceptor's state would each promise without the other knowing."""
    try:
        return lockfile.hold(data_dir / "LOCK")
    except lockfile.Held as held:
        raise DataDirInUse(f"data directory {data_dir} is in use by another node "
                           f"(pid {held.holder})") from None


# Test-only planted bugs (PAXOSKV_TEST_BREAK, see main.py), to show that the fault
# runs' real power loss catches them: commits that never fsync, and replies that
# leave before their write is committed.
NO_FSYNC = "no-fsync"
REPLY_BEFORE_DURABLE = "reply-before-durable"


class Storage:
    def __init__(self, data_dir: Path, breaks: frozenset[str] = frozenset()) -> None:
        self._lock = lock_data_dir(data_dir)
        self._reply_early = REPLY_BEFORE_DURABLE in breaks
        self.path = data_dir / "acceptor.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # fsync at every commit (unless a test plants the bug of not doing so)
        self._db.execute("PRAGMA synchronous=" + ("OFF" if NO_FSYNC in breaks else "FULL"))
        self._db.executescript(SCHEMA)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paxoskv-fsync")
        self._pending: list[Write] = []
        self._pending_meta: dict[str, str] = {}
        self._pending_marks = MarkLog(0)
        self._next: asyncio.Future[None] | None = None  # resolves when _pending is durable
        self._inflight: asyncio.Future[None] | None = None
        self.commits = 0
        self.records_written = 0
        self.logged_marks: dict[int, list[str]] = {}

    def load(self) -> dict[str, Record]:
        """The records, with the logged commit marks replayed onto them."""
        records, self.logged_marks = read_records(self._db)
        return records

    def meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str | None]) -> None:
        """Durably set (or, with None, remove) entries, in one transaction; start-up only."""
        self._db.execute("BEGIN")
        for name, value in values.items():
            if value is None:
                self._db.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        self._db.execute("COMMIT")

    def is_empty(self) -> bool:
        """No acceptor record and no identity: a directory that never served."""
        return (self._db.execute("SELECT 1 FROM records LIMIT 1").fetchone() is None
                and self.meta("cluster_id") is None)

    def next_boot(self) -> int:
        """Count this start durably: ballots carry it, so none is ever reused."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'boot'").fetchone()
        boot = (int(row[0]) if row else 0) + 1
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('boot', ?)", (str(boot),))
        return boot

    def write(self, writes: list[Write], meta: dict[str, str] | None = None,
              marks: MarkLog | None = None) -> asyncio.Future[None]:
        """Queue records (and metadata entries, such as the adopted configuration, and
        commit marks); the future resolves once they are on disk.

        The future is shared by every write of the same commit: add a callback
        or shield it, never cancel it.
        """
        self._pending.extend(writes)
        self._pending_meta.update(meta or {})
        if marks is not None:
            self._pending_marks = _merged(self._pending_marks, marks)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._inflight is None:
                asyncio.get_running_loop().call_soon(self._start_commit)
        if self._reply_early:
            return resolved()
        return self._next

    def flushed(self) -> asyncio.Future[None]:
        """A future that resolves when everything written so far is durable."""
        if self._next is not None:
            return self._next
        if self._inflight is not None:
            return self._inflight
        return resolved()

    def _start_commit(self) -> None:
        if self._next is None or self._inflight is not None:
            return
        batch, self._pending = self._pending, []
        meta, self._pending_meta = self._pending_meta, {}
        marks, self._pending_marks = self._pending_marks, MarkLog(self._pending_marks.gen)
        self._inflight, self._next = self._next, None
        task = asyncio.get_running_loop().run_in_executor(self._thread, self._commit, batch,
                                                          meta, marks)
        task.add_done_callback(self._commit_done)

    def _commit_done(self, task: asyncio.Future[None]) -> None:
        done, self._inflight = self._inflight, None
        assert done is not None
        if task.exception() is not None:
            # Memory is now ahead of the disk: stop at once rather than
            # answer from state that a restart would not have (fail-stop).
            log.critical("storage commit failed: %s", task.exception())
            os._exit(70)
        if not done.done():  # a waiter may have cancelled it against the rules
            done.set_result(None)
        self._start_commit()

    def _commit(self, batch: list[Write], meta: dict[str, str],
                marks: MarkLog | None = None) -> None:
        latest = {key: rec for key, rec in batch}  # later writes of a key win
        rows = [(key, orjson.dumps(rec.to_json()))
                for key, rec in latest.items()]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?)", rows)
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        if marks is not None and marks.drop_below:
            self._db.execute("DELETE FROM marks WHERE gen < ?", (marks.drop_below,))
        if marks is not None and marks.marks:
            logged = orjson.dumps([(key, *ballot) for key, ballot in marks.marks])
            self._db.execute("INSERT INTO marks (gen, marks) VALUES (?, ?)", (marks.gen, logged))
        self._db.execute("COMMIT")
        self.commits += 1
        self.records_written += len(rows)

    async def close(self) -> None:
        while self._next is not None or self._inflight is not None:
            await asyncio.shield(self.flushed())
        self._thread.shutdown(wait=True)
        self._db.close()
        os.close(self._lock)


def read_records(db: sqlite3.Connection) -> tuple[dict[str, Record], dict[int, list[str]]]:
    """The records in `db`, with its logged commit marks replayed onto them; and the
    keys of those marks, by generation."""
    rows = db.execute("SELECT key, record FROM records")
    records = {key: Record.from_json(orjson.loads(raw)) for key, raw in rows}
    marks: list[Mark] = []
    logged: dict[int, list[str]] = {}
    for gen, raw in db.execute("SELECT gen, marks FROM marks ORDER BY seq"):
        keys = logged.setdefault(gen, [])
        for key, round_, boot, node in orjson.loads(raw):
            marks.append((key, Ballot(round_, boot, node)))
            keys.append(key)
    apply_marks(records, marks)
    return records, logged


def _merged(queued: MarkLog, more: MarkLog) -> MarkLog:
    """Two mark logs bound for one commit, as one."""
    if not queued.marks and not queued.drop_below:
        return more
    return MarkLog(max(queued.gen, more.gen), [*queued.marks, *more.marks],
                   max(queued.drop_below, more.drop_below))


class LaggingStorage(Storage):
    """Test-only planted bug ("lose-unsynced-writes"): acknowledges writes at once and
    commits them up to LAG_S later, like a disk cache that is never fsynced; a kill -9
    (a power cut, for this node) then loses the writes of the last LAG_S seconds."""

    LAG_S = 5.0

    def write(self, writes: list[Write], meta: dict[str, str] | None = None,
              marks: MarkLog | None = None) -> asyncio.Future[None]:
        if not self._pending and not self._pending_meta and not self._pending_marks.marks:
            asyncio.get_running_loop().call_later(self.LAG_S, self._commit_pending)
        self._pending.extend(writes)
        self._pending_meta.update(meta or {})
        if marks is not None:
            self._pending_marks = _merged(self._pending_marks, marks)
        return self.flushed()

    def flushed(self) -> asyncio.Future[None]:
        return resolved()

    def _commit_pending(self) -> None:
        batch, self._pending = self._pending, []
        meta, self._pending_meta = self._pending_meta, {}
        marks, self._pending_marks = self._pending_marks, MarkLog(self._pending_marks.gen)
        if batch or meta or marks.marks or marks.drop_below:
            self._commit(batch, meta, marks)

    async def close(self) -> None:
        self._commit_pending()
        await super().close()
