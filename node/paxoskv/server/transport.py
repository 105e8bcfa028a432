"""Peer transport: one persistent WebSocket per peer, messages batched into frames.

A frame is a JSON list of envelopes `[id, kind, body]`, sent as a binary message. Everything queued
while the previous frame is being written goes out in the next one, so under
load many keys' messages share one frame (and, at the acceptor, one fsync).

A notice (id NOTICE) is one-way: nobody waits on it, so it gets no reply, and it
may wait up to NOTICE_DELAY_S to ride in a frame that goes anyway (a commit mark
after each decision would otherwise cost a frame each way, per peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from paxoskv.server.identity import IDENTITY_PATH, Identity

log = logging.getLogger("paxoskv.transport")

Envelope = list[Any]
MAX_FRAME = 64 * 1024 * 1024
NOTICE = 0  # the request id of a notice (requests count from 1)
NOTICE_DELAY_S = 0.01


class PeerUnavailable(Exception):
    """The peer is not connected, or the connection dropped before it replied."""


@dataclass(frozen=True)
class MessageFaults:
    """Test-only: lose, repeat and delay (so reorder) peer messages, as a bad network
    would; the kernel here has no netem. Off unless PAXOSKV_TEST_MESSAGE_FAULTS is set,
    e.g. "drop=0.05,duplicate=0.05,delay_ms=20"."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: float = 0.0
    # Seeded from the test run's seed (PAXOSKV_TEST_SEED), so a replay is a replay.
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @staticmethod
    def parse(spec: str) -> MessageFaults:
        fields = {name: float(value) for name, value in
                  (item.split("=", 1) for item in spec.split(",") if item)}
        unknown = set(fields) - {"drop", "duplicate", "delay_ms"}
        if unknown:
            raise ValueError(f"unknown message fault {', '.join(sorted(unknown))}")
        return MessageFaults(fields.get("drop", 0.0), fields.get("duplicate", 0.0),
                             fields.get("delay_ms", 0.0))

    def deliveries(self) -> list[float]:
        """The delays (seconds) after which one message is delivered: none, one or two."""
        if self.rng.random() < self.drop:
            return []
        copies = 2 if self.rng.random() < self.duplicate else 1
        return [self.rng.uniform(0, self.delay_ms) / 1000 for _ in range(copies)]


class FrameWriter:
    """Queues envelopes and writes them as batched frames from one task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse | aiohttp.web.WebSocketResponse,
                 faults: MessageFaults | None = None) -> None:
        self._ws = ws
        self._outbox: list[Envelope] = []
        self._wakeup = asyncio.Event()
        self._flush_later: asyncio.TimerHandle | None = None  # for notices alone
        self._faults = faults
        self._task = asyncio.create_task(self._run())

    def send(self, envelope: Envelope) -> None:
        """Queue `envelope` for the next frame (a notice may wait a little)."""
        if self._faults is not None:
            for delay in self._faults.deliveries():
                asyncio.get_running_loop().call_later(delay, self._enqueue, envelope)
            return
        self._enqueue(envelope)

    def _enqueue(self, envelope: Envelope) -> None:
        self._outbox.append(envelope)
        if envelope[0] != NOTICE:
            self._wakeup.set()
        elif self._flush_later is None:
            self._flush_later = asyncio.get_running_loop().call_later(
                NOTICE_DELAY_S, self._wakeup.set)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._flush_later is not None:
                self._flush_later.cancel()
                self._flush_later = None
            frame, self._outbox = self._outbox, []
            try:
                await self._ws.send_bytes(orjson.dumps(frame))
            except (ConnectionError, RuntimeError) as exc:
                log.debug("frame write failed: %s", exc)
                return

    async def close(self) -> None:
        if self._flush_later is not None:
            self._flush_later.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class PeerLink:
    """This node's outgoing connection to one peer, for its own requests.

    Reconnects forever with capped backoff. Calls fail at once while the
    link is down, so a proposer never waits on a peer it knows is gone.
    """

    def __init__(self, name: str, url: str, session: aiohttp.ClientSession, identity: Identity,
                 me: str, faults: MessageFaults | None = None) -> None:
        self._faults = faults
        self.name = name
        self.base_url = url.rstrip("/")
        self.url = self.base_url + "/v1/peer"
        self._session = session
        self._identity = identity
        self._me = me
        self._refused: str | None = None  # why the peer was last refused, logged once
        self._writer: FrameWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        # The event loop's time when the peer last sent us anything: a peer that
        # answers other requests is busy, not stalled (see Node.change).
        self.last_heard = 0.0

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

    def notify(self, kind: str, body: Any) -> None:
        """Send a notice: no reply; lost if the link is down or drops."""
        if self._writer is not None:
            self._writer.send([NOTICE, kind, body])

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
                if await self._peer_is_who_it_should_be():
                    async with self._session.ws_connect(
                        self.url, headers=self._identity.headers(self._me), heartbeat=2.0,
                        max_msg_size=MAX_FRAME,
                    ) as ws:
                        delay = 0.05
                        log.info("peer connected", extra={"peer": self.name})
                        await self._serve(ws)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.debug("peer %s unreachable: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _peer_is_who_it_should_be(self) -> bool:
        """Check the peer's cluster and member ids before trusting its acceptor's votes."""
        async with self._session.get(self.base_url + IDENTITY_PATH,
                                     timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            answer = await resp.json() if resp.status == 200 else {}
        if answer.get("state") != "member":
            log.debug("peer %s is not serving as a member yet", self.name)
            return False  # starting, or bootstrapping: ask again
        problem = self._identity.peer_problem(self.name, str(answer.get("cluster_id", "")),
                                              str(answer.get("member_id", "")))
        if problem != self._refused and problem is not None:
            log.warning("refusing peer: %s", problem, extra={"peer": self.name})
        self._refused = problem
        return problem is None

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        writer = FrameWriter(ws, self._faults)
        self._writer = writer
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                self.last_heard = asyncio.get_running_loop().time()
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
