"""A recorded random workload: clients put, get and delete a few keys and log every op."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import replace

import httpx

from paxoskv.client import AsyncClient, AsyncSession, Entry, PaxosKVError
from tests.faults.checker import Kind, Op

# Answers after which a change may or may not have taken effect.
UNKNOWN_OUTCOME = frozenset({"no_quorum", "connection", "internal", "bad_response"})


async def client_loop(process: int, client: AsyncClient, keys: list[str], rng: random.Random,
                      history: list[Op], stop: asyncio.Event, lifetimes: bool = False,
                      session: AsyncSession | None = None) -> None:
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
        bound = session.id if session is not None and rng.random() < 0.5 else None
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
