"""Peer frames over a real WebSocket on loopback: how requests and notices are batched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from paxoskv.server.transport import NOTICE, NOTICE_DELAY_S, FrameWriter


class Receiver:
    """A WebSocket server on 127.0.0.1 that records each frame and when it came."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, list[Any]]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            self.frames.append((asyncio.get_running_loop().time(), orjson.loads(msg.data)))
            self.arrived.set()
        return ws


@pytest.fixture
async def link() -> AsyncIterator[tuple[FrameWriter, Receiver]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_get("/", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"http://127.0.0.1:{port}/") as ws:
        writer = FrameWriter(ws)
        try:
            yield writer, receiver
        finally:
            await writer.close()
    await runner.cleanup()


async def _next_frame(receiver: Receiver) -> tuple[float, list[Any]]:
    receiver.arrived.clear()
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    return receiver.frames[-1]


async def test_a_notice_alone_waits_a_little_then_goes(
        link: tuple[FrameWriter, Receiver]) -> None:
    writer, receiver = link
    sent = asyncio.get_running_loop().time()
    writer.send([NOTICE, "m", "mark"])
    arrived, frame = await _next_frame(receiver)
    assert frame == [[NOTICE, "m", "mark"]]
    assert arrived - sent >= NOTICE_DELAY_S * 0.9, "a lone notice should wait for company"


async def test_a_notice_rides_with_the_next_request(
        link: tuple[FrameWriter, Receiver]) -> None:
    writer, receiver = link
    writer.send([NOTICE, "m", "mark"])
    writer.send([7, "m", "request"])
    _, frame = await _next_frame(receiver)
    assert frame == [[NOTICE, "m", "mark"], [7, "m", "request"]]
    await asyncio.sleep(NOTICE_DELAY_S * 3)
    assert len(receiver.frames) == 1, "the notice went out twice, or its timer sent an empty frame"
