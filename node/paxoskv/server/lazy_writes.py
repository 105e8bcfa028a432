"""Writes nothing waits for: commit marks and catch-ups, made durable lazily.

A commit mark (this acceptor's state of a key at a ballot was chosen) and a
catch-up (a chosen state this acceptor missed) change the acceptor's records,
but no reply waits for them. They ride along with the next durable write, or go
after UNHURRIED_FLUSH_S when none comes (and at a clean stop), instead of
costing an fsync of their own. A crash may lose them, which only makes local
reads staler.

A catch-up writes the key's *current* record, never a snapshot taken earlier, so
it can never roll back a newer write. A mark is cheaper: an entry in the disk's
log of marks (one row per group commit), which loading replays onto the records
(core.acceptor.apply_marks: a mark counts only while its key's record is still
accepted at its ballot). Writing the whole record again instead doubled the rows
written per put, about 6 % of a node's CPU under the put benchmark. A mark is
logged with or after the write of the record it marks: the record's write was
queued (or made durable) before the mark could be applied to it in memory.

The log is folded so that it never grows much beyond the records: once a
generation of it holds more marks than the acceptor holds keys (and at least
FOLD_MIN), a new generation starts, the keys marked in the old one have their
current records written, FOLD_CHUNK per commit, and then the old generation's
rows are deleted. That loses nothing: each of those records was taken after
every mark of the old generation had been applied in memory, so it holds its
mark, or a newer write that made the mark moot. Under fresh keys (one mark per
key) the log never needs folding; under hot keys a fold writes each key once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from paxoskv.core.acceptor import Acceptor, Mark, Write
from paxoskv.core.ballot import Ballot

# How long an unhurried write waits for a durable write to ride along with.
UNHURRIED_FLUSH_S = 0.5
FOLD_MIN = 100_000  # marks a generation of the log holds before it may be folded
FOLD_CHUNK = 1_000  # records a fold writes per commit


class MarkLog(NamedTuple):
    """Commit marks to log with a commit: `marks`, in generation `gen`, after the
    marks of the generations below `drop_below` are deleted."""

    gen: int
    marks: Sequence[Mark] = ()
    drop_below: int = 0


class Disk(Protocol):
    """Where the acceptor's writes become durable (storage.Storage; a simulated disk)."""

    commits: int  # group commits so far (one fsync each)
    records_written: int
    # The keys of the marks the log held when it was loaded, by generation.
    logged_marks: dict[int, list[str]]

    def write(self, writes: list[Write], meta: dict[str, str] | None = None,
              marks: MarkLog | None = None) -> asyncio.Future[None]: ...
    def flushed(self) -> asyncio.Future[None]: ...


class LazyWrites:
    """The acceptor's writes that nothing waits for, and the writes that ride with them."""

    def __init__(self, disk: Disk, acceptor: Acceptor) -> None:
        self._disk = disk
        self._acceptor = acceptor
        self._records: set[str] = set()  # keys whose current record is to be written
        self._marks: list[Mark] = []  # marks to log
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self.fold_min, self.fold_chunk = FOLD_MIN, FOLD_CHUNK
        # The log: its newest generation (where marks go), the keys marked in it
        # and how many marks it holds; the keys of the generation being folded.
        logged = disk.logged_marks
        self._gen = max(logged, default=0)
        self._marked = set(logged.get(self._gen, ()))
        self._marked_count = len(logged.get(self._gen, ()))
        self._folding = {key for gen, keys in logged.items() if gen < self._gen
                         for key in keys}
        self._drop_due = bool(self._folding)  # the old generations' rows await deletion
        if self._folding:
            self._schedule()  # a fold that a restart interrupted goes on

    def record(self, key: str) -> None:
        """Make `key`'s current record durable soon (a catch-up)."""
        if not self._stopped:
            self._records.add(key)
            self._schedule()

    def mark(self, key: str, ballot: Ballot) -> None:
        """Log soon that `key`'s record, accepted at `ballot`, was chosen (the acceptor
        has marked it in memory already)."""
        if self._stopped:
            return
        if (self._marked_count >= max(self.fold_min, len(self._acceptor))
                and not self._folding and not self._drop_due):
            self._gen += 1  # fold the generation this mark would overfill
            self._folding, self._marked, self._marked_count = self._marked, set(), 0
            self._drop_due = True
        self._marks.append((key, ballot))
        self._marked.add(key)
        self._marked_count += 1
        self._schedule()

    def durable(self, writes: list[Write]) -> asyncio.Future[None]:
        """Make `writes` durable, the unhurried writes with them; the future resolves
        once they are (and everything written before them)."""
        if self._waiting():
            return self._write(writes)
        return self._disk.write(writes) if writes else self._disk.flushed()

    def flush(self) -> None:
        """Queue the unhurried writes now (the timer's work; it finds nothing to do
        if a durable write took them along first)."""
        self._timer = None
        if self._waiting():
            self._write([])

    def stop(self) -> None:
        """Queue what is left (a clean stop keeps the commit marks), then take no more."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        self._stopped = True

    def _write(self, writes: list[Write]) -> asyncio.Future[None]:
        keys, self._records = self._records, set()
        for _ in range(min(self.fold_chunk, len(self._folding))):
            keys.add(self._folding.pop())
        drop_below = 0
        if self._drop_due and not self._folding:
            drop_below, self._drop_due = self._gen, False
        marks, self._marks = self._marks, []
        rides = [(key, self._acceptor.record(key)) for key in sorted(keys)]
        future = self._disk.write([*rides, *writes], marks=MarkLog(self._gen, marks, drop_below))
        if self._folding or self._drop_due:
            self._schedule()
        return future

    def _waiting(self) -> bool:
        """Whether anything is to ride along with the next write."""
        return bool(self._records or self._marks or self._folding or self._drop_due)

    def _schedule(self) -> None:
        if self._timer is None and not self._stopped:
            self._timer = asyncio.get_running_loop().call_later(UNHURRIED_FLUSH_S, self.flush)
