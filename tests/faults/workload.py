"""A recorded random workload: clients put, get and delete a few keys and log every op."""

from __future__ import annotations

import asyncio
import math
import random
import time

import httpx

from paxoskv.client import AsyncClient, AsyncSession, Entry, PaxosKVError
from tests.faults.checker import Kind, Op


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
        n += 1
        value = f"p{process}-{n}"
        token = tokens.get(key, 1)
        invoke = time.time()
        until = int(invoke * 1000) + rng.randrange(300, 2000) if lifetimes else None
        bound = session.id if session is not None and rng.random() < 0.5 else None
        if bound is not None:
            until = None  # half the puts bind to the session instead of a deadline
        entry: Entry | None = None
        try:
            if kind == "put":
                entry = await client.put(key, value, until=until, session=bound, timeout=2.0)
            elif kind == "get":
                entry = await client.get(key, timeout=2.0)
            else:
                entry = await client.delete(key, token, timeout=2.0)
        except (PaxosKVError, httpx.HTTPError):
            entry = None
        if entry is None or not entry.ok:
            history.append(Op(process, kind, key, invoke, math.inf, "unknown", value=value,
                              token_arg=token, until=until if kind == "put" else None,
                              session=bound if kind == "put" else None))
            await asyncio.sleep(0.1)  # no node answered: give the nemesis time to relent
        else:
            history.append(Op(process, kind, key, invoke, time.time(), "ok", value=value,
                              token_arg=token, until=until if kind == "put" else None,
                              session=bound if kind == "put" else None, found=entry.found,
                              seen_value=entry.value, token=entry.token,
                              deleted=entry.deleted))
            tokens[key] = entry.token
        await asyncio.sleep(rng.random() * 0.01)
