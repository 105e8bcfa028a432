"""Write availability while one member is paused (SIGSTOP), for `make bench`.

Writers put fresh keys through a member that stays up, without pause, for a few
seconds; then one member is stopped with SIGSTOP for PAUSE_S seconds and continued;
then a few seconds more. PaxosKV pauses a member other than the one the writers talk
to (a third of the keys are homed on it); etcd pauses its leader (the member whose
loss hurts it; the writers talk to a follower). Reported: the longest gap between
two successful writes, the failed writes, and put latency before and during the pause.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import time
from dataclasses import dataclass

import httpx

WRITERS = 8
BEFORE_S, PAUSE_S, AFTER_S = 3.0, 5.0, 3.0
TIMEOUT_S = 2.0  # each write's deadline


@dataclass
class Availability:
    store: str
    paused: str  # which member was paused, and why
    writes: int
    failed: int  # errors and timeouts, all during or right after the pause
    longest_gap_ms: float  # between two successful writes
    p99_before_ms: float
    p99_paused_ms: float
    # PaxosKV: the p99 during the pause of the writes to keys homed on the paused member
    p99_paused_home_ms: float | None = None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _request(store: str, key: str) -> tuple[str, dict[str, object]]:
    if store == "paxoskv":
        return "/v1/put", {"key": key, "value": key, "timeout_ms": int(TIMEOUT_S * 1000)}
    return "/v3/kv/put", {"key": _b64(key), "value": _b64(key)}


def etcd_leader(urls: list[str]) -> int:
    """The index of the etcd member that leads now."""
    ids = []
    leader = None
    for url in urls:
        status = httpx.post(url + "/v3/maintenance/status", json={}, timeout=5.0).json()
        ids.append(status["header"]["member_id"])
        leader = status["leader"]
    return ids.index(leader)


def _p99(latencies: list[float]) -> float:
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


Write = tuple[float, float, bool, str]  # (start, end, ok, key)


async def _measure(store: str, url: str, pid: int, prefix: str
                   ) -> tuple[list[Write], float, float]:
    done: list[Write] = []
    stop = asyncio.Event()

    async def writer(client: httpx.AsyncClient, w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"{prefix}/{w}/{n}"
            path, body = _request(store, key)
            start = time.monotonic()
            try:
                ok = (await client.post(url + path, json=body)).status_code == 200
            except httpx.HTTPError:
                ok = False
            done.append((start, time.monotonic(), ok, key))
            if not ok:
                await asyncio.sleep(0.01)

    limits = httpx.Limits(max_connections=WRITERS)
    async with httpx.AsyncClient(timeout=TIMEOUT_S + 0.5, limits=limits) as client:
        tasks = [asyncio.create_task(writer(client, w)) for w in range(WRITERS)]
        await asyncio.sleep(BEFORE_S)
        paused_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        await asyncio.sleep(AFTER_S)
        stop.set()
        await asyncio.gather(*tasks)
    return done, paused_at, resumed_at


def paxoskv_home(key: str, members: int) -> int:
    """The index of a default-bucket key's home member, of members n1, n2, ... (as
    bench/run.py names them)."""
    # Imported here, not at the top: `make bench-ab` runs bench/run.py against older
    # revisions, whose paxoskv has no core.config.
    from paxoskv.core.config import home_of

    names = [f"n{i + 1}" for i in range(members)]
    return names.index(home_of(names, f"default/{key}"))


def measure_availability(store: str, urls: list[str], pids: list[int], paused: int,
                         entry: int, why: str, prefix: str) -> Availability:
    done, paused_at, resumed_at = asyncio.run(_measure(store, urls[entry], pids[paused],
                                                       prefix))
    ok_ends = sorted(end for _, end, ok, _ in done if ok)
    gaps = [b - a for a, b in itertools.pairwise(ok_ends)]
    during = [(e - s, key) for s, e, ok, key in done
              if ok and paused_at <= s and e <= resumed_at]
    return Availability(
        store=store, paused=why, writes=len(done),
        failed=sum(not ok for _, _, ok, _ in done),
        longest_gap_ms=max(gaps, default=float("nan")) * 1000,
        p99_before_ms=_p99([e - s for s, e, ok, _ in done if ok and e < paused_at]),
        p99_paused_ms=_p99([latency for latency, _ in during]),
        p99_paused_home_ms=_p99([latency for latency, key in during
                                 if paxoskv_home(key, len(urls)) == paused])
        if store == "paxoskv" else None)
