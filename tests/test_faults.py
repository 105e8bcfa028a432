"""Bounded fault runs: random clients against a 3-node cluster while a nemesis kills
(-9) and restarts nodes on their data directories and pauses them (SIGSTOP/SIGCONT),
optionally over a peer network that drops, duplicates and delays messages. Every
operation is recorded and the history must check clean (tests/faults/checker.py)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.checker import Op, check
from tests.faults.workload import client_loop
from tests.harness import LocalCluster

SECONDS = float(os.environ.get("PAXOSKV_FAULT_SECONDS", "8"))  # `make torture` raises it
MESSAGE_FAULTS = {"PAXOSKV_TEST_MESSAGE_FAULTS": "drop=0.03,duplicate=0.05,delay_ms=15"}


async def _nemesis(cluster: LocalCluster, rng: random.Random, seconds: float) -> Counter[str]:
    faults: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        victim = rng.randrange(3)
        if rng.random() < 0.5:
            cluster.kill(victim)
            faults["kill -9"] += 1
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            cluster.start(victim, cluster.env)
            await asyncio.to_thread(cluster.wait_up, victim)
        else:
            proc = cluster.procs[cluster.members[victim].name]
            proc.send_signal(signal.SIGSTOP)
            faults["pause"] += 1
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGCONT)
    return faults


async def _run(cluster: LocalCluster, seed: int, seconds: float
               ) -> tuple[list[Op], Counter[str]]:
    rng = random.Random(seed)
    history: list[Op] = []
    stop = asyncio.Event()
    keys = [f"f{i}" for i in range(4)]
    clients = [cluster.async_client(i % 3) for i in range(4)]
    loops = [asyncio.create_task(client_loop(i, c, keys, random.Random(rng.random()),
                                             history, stop)) for i, c in enumerate(clients)]
    faults = await _nemesis(cluster, rng, seconds)
    stop.set()
    await asyncio.gather(*loops)
    await asyncio.to_thread(cluster.wait_ready, range(3))
    # After the faults: read every key through every node; nothing acknowledged is lost.
    for key in keys:
        for process, client in enumerate(clients[:3]):
            invoke = time.time()
            entry = await client.get(key, no_quorum="retry", timeout=10.0)
            history.append(Op(100 + process, "get", key, invoke, time.time(), "ok",
                              found=entry.found, seen_value=entry.value, token=entry.token))
    for c in clients:
        await c.close()
    return history, faults


def _faulty_history(tmp_path: Path, seed: int, env: dict[str, str] | None = None
                    ) -> tuple[list[Op], Counter[str]]:
    cluster = LocalCluster(tmp_path, 3, env=env)
    try:
        cluster.start_all(env)
        return asyncio.run(_run(cluster, seed, SECONDS))
    finally:
        cluster.close()


def _report(seed: int, history: list[Op], faults: Counter[str], anomalies: list[str]) -> str:
    outcomes = Counter(op.outcome for op in history)
    return (f"seed {seed}: {len(history)} operations ({dict(outcomes)}), faults "
            f"{dict(faults)}, {len(anomalies)} anomalies")


@pytest.mark.parametrize(("seed", "network"), [(1, "clean"), (2, "clean"),
                                               (3, "faulty"), (4, "faulty")])
def test_fault_run_history_is_linearizable(tmp_path: Path, seed: int, network: str) -> None:
    env = MESSAGE_FAULTS if network == "faulty" else None
    history, faults = _faulty_history(tmp_path, seed, env)
    report = check(history)
    print(_report(seed, history, faults, report.anomalies))
    assert sum(faults.values()) >= 2 and sum(op.outcome == "ok" for op in history) > 100
    assert report.ok, f"seed {seed}: " + "\n".join(report.anomalies[:10])


def test_the_checker_catches_a_node_that_forgets_what_it_accepted(tmp_path: Path) -> None:
    """Planted bug: acceptors answer prepares as if they had accepted nothing."""
    history, _ = _faulty_history(tmp_path, 1, {"PAXOSKV_TEST_BREAK": "promise-without-accepted"})
    report = check(history)
    assert not report.ok
    assert any("lost" in a or "decided twice" in a for a in report.anomalies)
