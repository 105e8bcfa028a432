"""The 500 path: an unexpected error in a handler is one JSON answer and one logged
traceback, and the node goes on serving (a real one-member node on loopback)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from paxoskv.core.acceptor import Acceptor
from paxoskv.core.config import Config, Member
from paxoskv.server.api import create_app
from paxoskv.server.identity import Identity
from paxoskv.server.lifetimes import Lifetimes
from paxoskv.server.liveness import Liveness
from paxoskv.server.node import Node
from paxoskv.server.storage import Storage


async def test_an_unexpected_error_is_a_json_500_and_the_node_serves_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Storage(tmp_path)
    node = Node("n1", Config.initial([Member("n1", "", "member-1")]), Acceptor(), storage,
                storage.next_boot())
    identity = Identity("cluster-a", "member-1", {"n1": "member-1"})
    runner = web.AppRunner(create_app(node, Lifetimes(node), Liveness(node), identity))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def broken_read(*_: object, **__: object) -> None:
        raise RuntimeError("planted: a bug in the read path")

    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.post("/v1/put", json={"key": "k", "value": 1})).status_code == 200
            monkeypatch.setattr(node, "read", broken_read)
            with caplog.at_level(logging.ERROR, logger="paxoskv.api"):
                answer = await http.post("/v1/get", json={"key": "k"})
            assert answer.status_code == 500
            assert answer.json() == {"error": {"code": "internal",
                                               "message": "internal error; see the node's log"}}
            assert "planted" not in answer.text, "internals leaked into the answer"
            logged = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(logged) == 1 and "/v1/get" in logged[0].getMessage()
            assert logged[0].exc_info is not None  # the traceback is in the log
            monkeypatch.undo()
            again = await http.post("/v1/get", json={"key": "k"})
            assert again.status_code == 200 and again.json()["value"] == 1
    finally:
        await runner.cleanup()
        await storage.close()
