"""A recorded random workload: clients put, get and delete a few keys and log every op."""

from __future__ import annotations

import asyncio
import math
import random
import time

from paxoskv.client import AsyncClient, PaxosKVError
from tests.faults.checker import Op


async def client_loop(process: int, client: AsyncClient, keys: list[str], rng: random.Random,
                      history: list[Op], stop: asyncio.Event) -> None:
    """One client: random operations until `stop`; every one recorded."""
    tokens: dict[str, int] = {}
    n = 0
    while not stop.is_set():
        key = rng.choice(keys)
        roll = rng.random()
        invoke = time.time()
        try:
            if roll < 0.4:
                n += 1
                value = f"p{process}-{n}"
                entry = await client.put(key, value, timeout=2.0)
                op = Op(process, "put", key, invoke, time.time(), "ok", value=value,
                        found=entry.found, seen_value=entry.value, token=entry.token)
            elif roll < 0.8:
                entry = await client.get(key, timeout=2.0)
                op = Op(process, "get", key, invoke, time.time(), "ok", found=entry.found,
                        seen_value=entry.value, token=entry.token)
            else:
                token = tokens.get(key, 1)
                entry = await client.delete(key, token, timeout=2.0)
                op = Op(process, "delete", key, invoke, time.time(), "ok", token_arg=token,
                        found=entry.found, seen_value=entry.value, token=entry.token,
                        deleted=entry.deleted)
            if not entry.ok:  # no_quorum: the change may or may not have happened
                op = Op(process, op.kind, key, invoke, math.inf, "unknown", value=op.value,
                        token_arg=op.token_arg)
            else:
                tokens[key] = entry.token
        except PaxosKVError:
            op = Op(process, "get", key, invoke, math.inf, "unknown")
        history.append(op)
        await asyncio.sleep(rng.random() * 0.01)
