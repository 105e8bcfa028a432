"""Peer transport: one persistent WebSocket per peer, messages batched into frames.

A frame is a JSON list of envelopes `[id, kind, body]`, sent as a binary message. Everything queued
while the previous frame is being written goes out in the next one, so under
load many keys' messages share one frame (and, at the acceptor, one fsync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("paxoskv.transport")

Envelope = list[Any]
MAX_FRAME = 64 * 1024 * 1024


class PeerUnavailable(Exception):
    """The peer is not connected, or the connection dropped before it replied."""


class FrameWriter:
    """Queues envelopes and writes them as batched frames from one task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse | aiohttp.web.WebSocketResponse) -> None:
        self._ws = ws
        self._outbox: list[Envelope] = []
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def send(self, envelope: Envelope) -> None:
        self._outbox.append(envelope)
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            frame, self._outbox = self._outbox, []
            try:
                await self._ws.send_bytes(orjson.dumps(frame))
            except (ConnectionError, RuntimeError) as exc:
                log.debug("frame write failed: %s", exc)
                return

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class PeerLink:
    """This node's outgoing connection to one peer, for its own requests.

    Reconnects forever with capped backoff. Calls fail at once while the
    link is down, so a proposer never waits on a peer it knows is gone.
    """

    def __init__(self, name: str, url: str, session: aiohttp.ClientSession, me: str) -> None:
        self.name = name
        self.url = url.rstrip("/") + "/v1/peer"
        self._session = session
        self._me = me
        self._writer: FrameWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # aiohttp can swallow a cancellation while it closes a WebSocket, so
        # the loop also checks this flag.
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def call(self, kind: str, body: Any) -> asyncio.Future[Any]:
        if self._writer is None:
            raise PeerUnavailable(self.name)
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self._writer.send([self._next_id, kind, body])
        return future

    async def _run(self) -> None:
        delay = 0.05
        while not self._stopped:
            try:
                async with self._session.ws_connect(
                    self.url, headers={"X-PaxosKV-Peer": self._me}, heartbeat=2.0,
                    max_msg_size=MAX_FRAME,
                ) as ws:
                    delay = 0.05
                    log.info("peer connected", extra={"peer": self.name})
                    await self._serve(ws)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("peer %s unreachable: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        writer = FrameWriter(ws)
        self._writer = writer
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                for request_id, _kind, body in orjson.loads(msg.data):
                    future = self._pending.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(body)
        finally:
            self._writer = None
            await writer.close()
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(PeerUnavailable(self.name))
            log.info("peer disconnected", extra={"peer": self.name})
