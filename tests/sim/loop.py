"""A virtual-time event loop, and node "processes" that can be stalled or killed.

Why our own loop rather than the `looptime` package: the simulator also needs
to freeze one node while the others run (a GC pause, SIGSTOP) and to kill one
node's callbacks and tasks at once (kill -9). Both come from the same hook: we
create every handle, so each handle knows which node process scheduled it, and
a stalled process's handles are held instead of run. Virtual time itself is a
few lines: `time()` returns a counter, and when nothing is ready the loop jumps
the counter to the next timer instead of sleeping. Everything runs in one
thread in a fixed order, so a seed fixes the whole run.

Which process a callback belongs to is read from a context variable (`PROC`),
set in the context in which a node is started. asyncio copies the current
context into every task and every future callback, so everything a node's code
schedules belongs to that node; the network and the disks schedule their
deliveries explicitly in the receiving node's context.

The loop replaces BaseEventLoop's scheduling (`call_soon`, `call_at`,
`_run_once`) and keeps the rest (tasks, futures, run_until_complete). It has
no I/O and no threads: `call_soon_threadsafe` and executors are not for use.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Proc:
    """One incarnation of one node's process: a stall holds its callbacks, a kill
    cancels its tasks. A restarted node is a new Proc."""

    def __init__(self, name: str, incarnation: int) -> None:
        self.name = name
        self.incarnation = incarnation
        self.alive = True
        self.stalled = False
        self.held: list[_Handle] = []  # callbacks due while stalled, in order
        self.tasks: dict[asyncio.Task[Any], None] = {}  # ordered, unlike a set
        self.context = contextvars.copy_context()
        self.context.run(PROC.set, self)

    def __repr__(self) -> str:
        return f"<Proc {self.name}#{self.incarnation}>"


PROC: contextvars.ContextVar[Proc | None] = contextvars.ContextVar("sim_proc", default=None)
# A context that belongs to no node: the network's and the disks' own events.
NO_PROC = contextvars.Context()


class _Handle:
    """What call_soon and call_later return. Lighter than asyncio's handles (the
    loop's own overhead is most of a run's cost); knows the process it belongs to."""

    __slots__ = ("_args", "_callback", "_cancelled", "_context", "_proc", "_when")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...],
                 context: contextvars.Context | None, when: float = 0.0) -> None:
        if context is None:
            context = contextvars.copy_context()
        self._callback: Callable[..., object] | None = callback
        self._args: tuple[Any, ...] | None = args
        self._context = context
        self._proc = context.get(PROC)
        self._cancelled = False
        self._when = when

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._callback = self._args = None

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self._when

    def get_context(self) -> contextvars.Context:
        return self._context

    def __repr__(self) -> str:
        return f"<handle {self._callback!r} of {self._proc!r}>"


class Deadlock(Exception):
    """Nothing is ready and no timer is set: the run can never progress."""


class SimLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time whose handles know their node process.

    It keeps asyncio's structure (a ready queue, a heap of timers) with its
    own `_run_once`: the heap holds (when, sequence, handle), so timers due
    at the same time run in the order they were set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._sequence = 0
        self._ready: collections.deque[_Handle] = collections.deque()
        self._timers: list[tuple[float, int, _Handle]] = []

    def time(self) -> float:
        return self._now

    # The handles are ours (duck-typed: asyncio only cancels them), hence the ignores.

    def call_soon(self, callback: Callable[[Unpack[Ts]], object], *args: *Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, context)
        self._ready.append(handle)
        return handle  # type: ignore[return-value]

    def call_later(self, delay: float, callback: Callable[[Unpack[Ts]], object],
                   *args: *Ts, context: contextvars.Context | None = None
                   ) -> asyncio.TimerHandle:
        return self.call_at(self._now + delay, callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[[Unpack[Ts]], object],
                *args: *Ts, context: contextvars.Context | None = None
                ) -> asyncio.TimerHandle:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, context, when)
        self._sequence += 1
        heapq.heappush(self._timers, (when, self._sequence, handle))
        return handle  # type: ignore[return-value]

    def _run_once(self) -> None:
        ready, timers = self._ready, self._timers
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            while timers and timers[0][2]._cancelled:
                heapq.heappop(timers)
            if not timers:
                raise Deadlock("no callback ready and no timer set")
            self._now = max(self._now, timers[0][0])  # idle: jump, do not sleep
        while timers and timers[0][0] <= self._now:
            handle = heapq.heappop(timers)[2]
            if not handle._cancelled:
                ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            proc = handle._proc
            if proc is not None and proc.stalled:
                proc.held.append(handle)
                continue
            try:
                handle._context.run(handle._callback, *handle._args)  # type: ignore[arg-type,misc]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                name = getattr(handle._callback, "__qualname__", repr(handle._callback))
                self.call_exception_handler({"message": f"Exception in callback {name}",
                                             "exception": exc, "handle": handle})

    def create_task(self, coro: Generator[Any, None, T] | Coroutine[Any, Any, T], *,
                    name: object = None, context: contextvars.Context | None = None
                    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        proc = (context.get(PROC) if context is not None else PROC.get())
        if proc is not None:
            if proc.alive:
                proc.tasks[task] = None
                task.add_done_callback(lambda t: proc.tasks.pop(t, None))
            else:
                task.cancel()  # a dead process starts nothing
        return task

    # -- what a process suffers ------------------------------------------------

    def stall(self, proc: Proc) -> None:
        proc.stalled = True

    def resume(self, proc: Proc) -> None:
        """Run what came due during the stall, in the order it came due."""
        proc.stalled = False
        held, proc.held = proc.held, []
        for handle in held:
            if not handle._cancelled:
                self._ready.append(handle)

    def kill(self, proc: Proc) -> None:
        """kill -9: the process's tasks are cancelled (so they end cleanly here;
        its I/O is cut off by the network and the disk, see cluster.py)."""
        proc.alive = False
        self.resume(proc)
        for task in list(proc.tasks):
            task.cancel()

    # -- no I/O -------------------------------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass
