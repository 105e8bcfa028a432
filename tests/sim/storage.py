"""An in-memory disk that a crash can cut short, behind the Storage surface.

`SimDisk` is what survives a crash: durable records and the metadata (boot
counter, and whatever identity the node keeps there). `SimStorage` is one
process's handle on it, with the real Storage's group commit: writes queue
while the previous commit's fsync runs, commits are applied to the disk in
order, after a random small virtual delay, and only then do their futures
resolve. A crash (`kill`) drops the queued writes and the commit in flight and
never resolves their futures, like kill -9 or a power cut of a real disk.

The fsync completes on the disk's own time (a stall of the process does not
stop the disk), but the process learns of it only when it runs again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from paxoskv.core.acceptor import Mark, Record, Write, apply_marks
from paxoskv.server.lazy_writes import MarkLog
from tests.sim.loop import NO_PROC, Proc


@dataclass
class SimDisk:
    """A node's durable state; a new process reads it back."""

    records: dict[str, Record] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)  # e.g. "boot"
    marks: list[tuple[int, Mark]] = field(default_factory=list)  # the log: (generation, mark)

    def log(self, marks: MarkLog) -> None:
        """Delete the generations below `marks.drop_below`, then log `marks.marks`."""
        if marks.drop_below:
            self.marks = [(gen, mark) for gen, mark in self.marks if gen >= marks.drop_below]
        self.marks.extend((marks.gen, mark) for mark in marks.marks)


@dataclass(frozen=True)
class DiskTiming:
    """How long one commit (one fsync) takes, in seconds."""

    fast: tuple[float, float] = (0.0002, 0.003)
    slow: tuple[float, float] = (0.01, 0.2)
    slow_chance: float = 0.02

    def draw(self, rng: random.Random) -> float:
        low, high = self.slow if rng.random() < self.slow_chance else self.fast
        return rng.uniform(low, high)


class DiskMeta:
    """A SimDisk's metadata, as identity.py reads and writes it (identity.Meta)."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk

    def meta(self, name: str) -> str | None:
        return self.disk.meta.get(name)

    def set_meta(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            if value is None:
                self.disk.meta.pop(name, None)
            else:
                self.disk.meta[name] = value


class SimStorage(DiskMeta):
    """The surface of paxoskv.server.storage.Storage, on a SimDisk."""

    def __init__(self, disk: SimDisk, proc: Proc, rng: random.Random,
                 timing: DiskTiming) -> None:
        super().__init__(disk)
        self._proc = proc
        self._rng = rng
        self._timing = timing
        self._pending: list[Write] = []
        self._pending_meta: dict[str, str] = {}
        self._pending_marks: list[MarkLog] = []
        self._next: asyncio.Future[None] | None = None  # resolves when _pending is durable
        self._inflight: asyncio.Future[None] | None = None
        self.dead = False
        # Told of every record as it becomes durable (the simulator's ballot ledger).
        self.on_durable: Callable[[str, Record], None] | None = None
        self.commits = 0
        self.records_written = 0
        self.logged_marks: dict[int, list[str]] = {}

    # -- start-up (synchronous and durable at once, as in Storage) -------------

    def load(self) -> dict[str, Record]:
        records = dict(self.disk.records)
        apply_marks(records, (mark for _, mark in self.disk.marks))
        self.logged_marks = {}
        for gen, (key, _) in self.disk.marks:
            self.logged_marks.setdefault(gen, []).append(key)
        return records

    def next_boot(self) -> int:
        boot = int(self.disk.meta.get("boot", "0")) + 1
        self.disk.meta["boot"] = str(boot)
        return boot


    def is_empty(self) -> bool:
        return not self.disk.records and "cluster_id" not in self.disk.meta

    # -- group commit -----------------------------------------------------------

    def write(self, writes: list[Write], meta: dict[str, str] | None = None,
              marks: MarkLog | None = None) -> asyncio.Future[None]:
        """Queue records, metadata and commit marks; the future resolves once they
        are on the disk."""
        self._pending.extend(writes)
        self._pending_meta.update(meta or {})
        if marks is not None:
            self._pending_marks.append(marks)
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            if self._inflight is None:
                loop.call_soon(self._start_commit)
        return self._next

    def flushed(self) -> asyncio.Future[None]:
        """Resolves when everything written so far is durable."""
        if self._next is not None:
            return self._next
        if self._inflight is not None:
            return self._inflight
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _start_commit(self) -> None:
        if self.dead or self._next is None or self._inflight is not None:
            return
        batch, self._pending = self._pending, []
        meta, self._pending_meta = self._pending_meta, {}
        marks, self._pending_marks = self._pending_marks, []
        self._inflight, self._next = self._next, None
        # The disk's own event: it happens even if the process is stalled.
        asyncio.get_running_loop().call_later(self._timing.draw(self._rng), self._durable,
                                              batch, meta, marks, context=NO_PROC)

    def _durable(self, batch: list[Write], meta: dict[str, str], marks: list[MarkLog]
                 ) -> None:
        if self.dead:
            return  # the crash came first: this commit never happened
        self.disk.meta.update(meta)
        for logged in marks:
            self.disk.log(logged)
        for key, record in batch:
            self.disk.records[key] = record
            if self.on_durable is not None:
                self.on_durable(key, record)
        self.commits += 1
        self.records_written += len(batch)
        # The process hears of it when it next runs (held while it is stalled).
        asyncio.get_running_loop().call_soon(self._commit_done, context=self._proc.context)

    def _commit_done(self) -> None:
        done, self._inflight = self._inflight, None
        if self.dead or done is None:
            return
        if not done.done():
            done.set_result(None)
        self._start_commit()

    def kill(self) -> None:
        """A crash: what is not durable is lost, and no waiter ever hears back."""
        self.dead = True
        self._pending, self._pending_meta, self._pending_marks = [], {}, []
        self._next = self._inflight = None

    async def close(self) -> None:
        while not self.dead and (self._next is not None or self._inflight is not None):
            await asyncio.shield(self.flushed())


class AckBeforeDurable(SimStorage):
    """Planted bug "ack-before-durable": a write is acknowledged at once and reaches
    the disk LAG_S later (a disk cache that is never fsynced), so a crash loses
    acknowledged writes."""

    LAG_S = 2.0

    def write(self, writes: list[Write], meta: dict[str, str] | None = None,
              marks: MarkLog | None = None) -> asyncio.Future[None]:
        asyncio.get_running_loop().call_later(self.LAG_S, self._late, list(writes),
                                              dict(meta or {}), marks, context=NO_PROC)
        return self.flushed()

    def flushed(self) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _late(self, writes: list[Write], meta: dict[str, str], marks: MarkLog | None
              ) -> None:
        if not self.dead:
            self.disk.meta.update(meta)
            if marks is not None:
                self.disk.log(marks)
            for key, record in writes:
                self.disk.records[key] = record
                if self.on_durable is not None:
                    self.on_durable(key, record)
