"""Small asyncio helpers for futures that are shared, abandoned or chained."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def mapped(source: asyncio.Future[Any], fn: Callable[[Any], Any]) -> asyncio.Future[Any]:
    """A future of `fn(source's result)`, without a task."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            try:
                out.set_result(fn(f.result()))
            except Exception as exc:
                out.set_exception(exc)

    source.add_done_callback(done)
    return out


async def wait_until(future: asyncio.Future[Any], timeout: float) -> bool:
    """Wait at most `timeout` seconds for `future`, without cancelling it; True if done.

    Cheaper than asyncio.wait_for, which wraps every wait in a task.
    """
    if not future.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(max(timeout, 0.0), wake)
        future.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
    return future.done()


async def resolve_within(done: asyncio.Future[None], timeout: float) -> None:
    """Wait for `done`, a future of the caller's own, at most `timeout` seconds; then
    resolve it if nothing did (whoever checks `done.done()` sees the wait is over).
    Cheaper than wait_until: no second future."""
    if done.done():
        return
    timer = asyncio.get_running_loop().call_later(max(timeout, 0.0), _resolve, done)
    try:
        await done
    finally:
        timer.cancel()


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def quiet(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Mark a future's failure as seen, for calls whose answer may be dropped."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def resolved() -> asyncio.Future[None]:
    """A future that is already done: "nothing to wait for"."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done
