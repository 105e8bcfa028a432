"""A recorded random workload: clients put, get and delete a few keys and log every op."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import replace

import httpx

from paxoskv.client import AsyncClient, Entry, PaxosKVError
from tests.faults.checker import Kind, Op, SessionLog

# Answers after which a change may or may not have taken effect.
UNKNOWN_OUTCOME = frozenset({"no_quorum", "connection", "internal", "bad_response"})


async def client_loop(process: int, client: AsyncClient, keys: list[str], rng: random.Random,
                      history: list[Op], stop: asyncio.Event, lifetimes: bool = False,
                      session: SessionKeeper | None = None) -> None:
    """One client: random operations until `stop`; every one recorded. An operation
    that failed without an answer (no quorum, a dropped connection) is recorded as
    unknown: it may or may not have taken effect."""
    tokens: dict[str, int] = {}
    n = 0
    while not stop.is_set():
        key = rng.choice(keys)
        roll = rng.random()
        kind: Kind = "put" if roll < 0.4 else "get" if roll < 0.8 else "delete"
        if lifetimes and key == keys[0] and kind == "delete":
            kind = "get"  # a key only its deadlines and sessions end: they must be seen to
        n += 1
        value = f"p{process}-{n}"
        token = tokens.get(key) or 1  # a read of a key never written saw token 0
        invoke = time.time()
        # Up to 6 s ahead: past the 3 s skew of the fast-clocked node, which refuses
        # (as dead) a deadline that its own clock has passed.
        until = int(invoke * 1000) + rng.randrange(300, 6000) if lifetimes else None
        current = session.current if session is not None else None
        bound = current.id if current is not None and rng.random() < 0.5 else None
        if bound is not None:
            until = None  # half the puts bind to the session instead of a deadline
        entry: Entry | None = None
        error: str | None = None
        try:
            if kind == "put":
                entry = await client.put(key, value, until=until, session=bound, timeout=2.0)
            elif kind == "get":
                entry = await client.get(key, timeout=2.0)
            else:
                entry = await client.delete(key, token, timeout=2.0)
        except PaxosKVError as exc:
            error = exc.code
        except httpx.HTTPError:
            error = "connection"
        op = Op(process, kind, key, invoke, math.inf, "unknown", value=value, token_arg=token,
                until=until if kind == "put" else None,
                session=bound if kind == "put" else None)
        if entry is not None and entry.ok:
            history.append(replace(op, complete=time.time(), outcome="ok", found=entry.found,
                                   seen_value=entry.value, token=entry.token,
                                   deleted=entry.deleted))
            tokens[key] = entry.token
        elif error is not None and error not in UNKNOWN_OUTCOME:
            # A 4xx: refused, nothing written (a binding already dead, say).
            history.append(replace(op, complete=time.time(), outcome="fail", error=error))
        else:
            # No answer, or one that says the outcome is unknown: it may have taken effect.
            history.append(replace(op, error=error or "no_quorum"))
            await asyncio.sleep(0.1)  # no node answered: give the nemesis time to relent
        await asyncio.sleep(rng.random() * 0.01)


class SessionKeeper:
    """One client's session, renewed every third of its TTL; a session found gone is
    replaced by a new one. Every session and every answered keep-alive is logged in
    `logs` (an unanswered keep-alive says nothing: it may or may not have renewed)."""

    def __init__(self, client: AsyncClient, ttl_ms: int, logs: dict[str, SessionLog]) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.logs = logs
        self.current: SessionLog | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.current is None:
                await self._open()
            elif not await self._keep_alive():
                self.current = None
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_ms / 3000)

    async def _open(self) -> None:
        with contextlib.suppress(PaxosKVError, httpx.HTTPError, TimeoutError):
            sid = await asyncio.wait_for(self.client.open_session(self.ttl_ms / 1000),
                                         self.ttl_ms / 3000)
            # The open answers only the id: renew at once for a deadline to log.
            self.current = self.logs[sid] = SessionLog(sid, self.ttl_ms, 0)
            await self._keep_alive()

    async def _keep_alive(self) -> bool:
        """False once the session is found gone."""
        log = self.current
        assert log is not None
        invoke = time.time()
        try:
            # Short, so that a paused node cannot hold the renewals up for a whole TTL.
            until = await asyncio.wait_for(self.client.keep_alive(log.id), self.ttl_ms / 3000)
        except (PaxosKVError, httpx.HTTPError, TimeoutError):
            return True
        log.keep_alives.append((invoke, time.time(), until))
        if until is not None:
            log.until_ms = max(log.until_ms, until)
        return until is not None
