"""Adding a member to a cluster that holds many keys, for `make bench`.

A fresh 3-member PaxosKV cluster is loaded with KEYS keys (QUICK_KEYS for a quick
run). Writers put fresh keys through member 1 for STEADY_S seconds (the steady
throughput); then a fourth node, started with --join, is added through member 1
while the same writers go on. The add answers once the new configuration is
decided, every key was re-scanned through the new member, and the step settled.
Reported: how long the add took, and the put throughput while it ran against the
steady throughput of the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from paxoskv import devcluster

KEYS = 100_000  # `--quick`: QUICK_KEYS
QUICK_KEYS = 10_000
STEADY_S = 5.0
WRITERS = 8
TOKEN = "bench-admin-token"
HOST = "127.0.0.1"


@dataclass
class CatchUp:
    keys: int
    add_s: float  # the add request, from sent to answered (settled)
    steady_ops: float  # puts/s before the add
    during_ops: float  # puts/s while the add ran
    failed: int  # puts that failed while the add ran


class Writers:
    """WRITERS loops putting fresh keys through one member until stopped; counts them."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.ok = 0
        self.failed = 0
        self._stop = asyncio.Event()
        self._numbers = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Writers:
        self._client = httpx.AsyncClient(timeout=10.0,
                                         limits=httpx.Limits(max_connections=WRITERS))
        self._tasks = [asyncio.create_task(self._write()) for _ in range(WRITERS)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()

    async def _write(self) -> None:
        while not self._stop.is_set():
            key = f"{self.prefix}/{next(self._numbers)}"
            try:
                answer = await self._client.post(self.url + "/v1/put",
                                                 json={"key": key, "value": key})
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                await asyncio.sleep(0.01)


async def _preload(urls: list[str], keys: int, progress: Callable[[str], None]
                   ) -> None:
    limit = asyncio.Semaphore(64)
    done = 0

    async def put(client: httpx.AsyncClient, i: int) -> None:
        nonlocal done
        key = f"load/{i}"
        async with limit:
            answer = await client.post(urls[i % len(urls)] + "/v1/put",
                                       json={"key": key, "value": key})
        if answer.status_code != 200:
            raise RuntimeError(f"preloading {key}: HTTP {answer.status_code} {answer.text}")
        done += 1
        if done % 20_000 == 0:
            progress(f"    {done:,} of {keys:,} keys loaded")

    async with httpx.AsyncClient(timeout=60.0) as client:
        await asyncio.gather(*(put(client, i) for i in range(keys)))


async def _add(url: str, joining: devcluster.LocalMember) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=1800.0) as client:
        answer = await client.post(url + "/v1/admin/members/add",
                                   json={"name": joining.name, "url": joining.url},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    if answer.status_code != 200 or not answer.json().get("settled"):
        raise RuntimeError(f"adding {joining.name}: HTTP {answer.status_code} {answer.text}")
    return time.monotonic() - started


async def _measure(urls: list[str], joining: devcluster.LocalMember, keys: int,
                   progress: Callable[[str], None]) -> CatchUp:
    progress(f"catch-up: loading {keys:,} keys into a new 3-member cluster")
    await _preload(urls, keys, progress)
    async with Writers(urls[0], "steady") as steady:
        await asyncio.sleep(STEADY_S)
    progress(f"catch-up: adding {joining.name} under writes")
    async with Writers(urls[0], "during") as during:
        add_s = await _add(urls[0], joining)
    return CatchUp(keys, add_s, steady.ok / STEADY_S, during.ok / add_s, during.failed)


def _wait(check: Callable[[], bool], failure: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)


def _joining(member: devcluster.LocalMember) -> bool:
    try:
        return bool(httpx.get(member.url + "/v1/identity", timeout=1.0).json().get("state")
                    == "joining")
    except (httpx.HTTPError, ValueError):
        return False


def measure_catch_up(data_root: Path, logs: Path, keys: int,
                     progress: Callable[[str], None]) -> CatchUp:
    """Start the cluster and the joining node under `data_root`, measure, stop them."""
    ports = devcluster.free_ports(4, HOST)
    members = [devcluster.LocalMember(f"c{i}", HOST, port, data_root / f"c{i}")
               for i, port in enumerate(ports, start=1)]
    commands = [[*devcluster.serve_command(m, members[:3]), "--admin-token", TOKEN,
                 "--log-level", "warning"] for m in members[:3]]
    commands.append([*devcluster.serve_command(members[3], members, bootstrap=False),
                     "--join", "--admin-token", TOKEN, "--log-level", "warning"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for member, command in zip(members, commands, strict=True):
            with open(logs / f"paxoskv-catchup-{member.name}.log", "wb") as out:
                procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL,
                                              start_new_session=True))
        _wait(lambda: all(devcluster.ready(m) for m in members[:3]), "the cluster never got ready")
        _wait(lambda: _joining(members[3]), f"{members[3].name} never waited to join")
        return asyncio.run(_measure([m.url for m in members[:3]], members[3], keys,
                                    progress))
    finally:
        devcluster.stop(procs)
