"""A bounded fault run: random clients against a 3-node cluster while nodes are killed
(-9) and restarted on their data directories; the recorded history must check clean."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.faults.checker import Op, check
from tests.faults.workload import client_loop
from tests.harness import LocalCluster


async def _run(cluster: LocalCluster, seed: int, seconds: float) -> tuple[list[Op], int]:
    rng = random.Random(seed)
    history: list[Op] = []
    stop = asyncio.Event()
    keys = [f"f{i}" for i in range(4)]
    clients = [cluster.async_client(i % 3) for i in range(4)]
    loops = [asyncio.create_task(client_loop(i, c, keys, random.Random(rng.random()),
                                             history, stop)) for i, c in enumerate(clients)]
    kills = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        victim = rng.randrange(3)
        cluster.kill(victim)
        kills += 1
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        cluster.start(victim)
        await asyncio.to_thread(cluster.wait_ready, [victim])
    stop.set()
    await asyncio.gather(*loops)
    # After the faults: read every key through every node; nothing acknowledged is lost.
    for key in keys:
        for process, client in enumerate(clients[:3]):
            invoke = time.time()
            entry = await client.get(key, no_quorum="retry", timeout=10.0)
            history.append(Op(100 + process, "get", key, invoke, time.time(), "ok",
                              found=entry.found, seen_value=entry.value, token=entry.token))
    for c in clients:
        await c.close()
    return history, kills


def _faulty_history(tmp_path: Path, seed: int, env: dict[str, str] | None = None
                    ) -> tuple[list[Op], int]:
    cluster = LocalCluster(tmp_path, 3)
    try:
        cluster.start_all(env)
        return asyncio.run(_run(cluster, seed, seconds=8.0))
    finally:
        cluster.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_restart_history_is_linearizable(tmp_path: Path, seed: int) -> None:
    history, kills = _faulty_history(tmp_path, seed)
    report = check(history)
    acknowledged = sum(op.outcome == "ok" for op in history)
    assert kills >= 2 and acknowledged > 200, (kills, acknowledged)
    assert report.ok, f"seed {seed}: " + "\n".join(report.anomalies[:10])


def test_the_checker_catches_a_node_that_forgets_what_it_accepted(tmp_path: Path) -> None:
    """Planted bug: acceptors answer prepares as if they had accepted nothing."""
    history, _ = _faulty_history(tmp_path, 1, {"PAXOSKV_TEST_BREAK": "promise-without-accepted"})
    report = check(history)
    assert not report.ok
    assert any("lost" in a or "decided twice" in a for a in report.anomalies)
