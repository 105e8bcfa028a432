"""The deterministic simulator (tests/sim): thousands of seeded runs of the real
node drivers under faults must check clean; a seed replays exactly; planted
bugs are found; and the simulated loop, disk and network behave as documented.

PAXOSKV_SIM_SEEDS sets how many seeds run (default 2000, in chunks, a child
process per core at a time). The seeds run in child processes with
PYTHONHASHSEED=0, so the replay command printed for a failing seed reproduces
it exactly. With each safety fix of issue 8 reverted (tests/sim/plants.py),
random seeds find the violation it prevents.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paxoskv.core.acceptor import Acceptor, Record
from paxoskv.core.messages import Inspect, encode
from paxoskv.core.state import KeyState
from paxoskv.server.transport import PeerUnavailable
from tests.sim.cluster import Clock, SimCluster
from tests.sim.loop import Proc, SimLoop
from tests.sim.network import HEARTBEAT_S, REDIAL_S, MessageFaults, Network
from tests.sim.plants import forgetful
from tests.sim.runner import run_seed
from tests.sim.storage import DiskTiming, SimDisk, SimStorage

ROOT = Path(__file__).resolve().parent.parent
SEEDS = int(os.environ.get("PAXOSKV_SIM_SEEDS", "2000"))
CHUNK = 250


def _chunks() -> list[tuple[int, int]]:
    return [(first, min(first + CHUNK - 1, SEEDS)) for first in range(1, SEEDS + 1, CHUNK)]


def _run_chunk(seeds: tuple[int, int], *options: str) -> list[dict[str, Any]]:
    """The failing seeds of one chunk, run in a child process."""
    run = subprocess.run([sys.executable, "-m", "tests.sim", "--seeds", "{}-{}".format(*seeds),
                          "--json", *options], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(900)
def test_seeded_runs_check_clean() -> None:
    """SEEDS seeds in chunks of CHUNK, one child process per core at a time."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failed = [f for chunk in pool.map(_run_chunk, _chunks()) for f in chunk]
    report = [f"seed {f['seed']}: " + "; ".join((f["anomalies"] + f["problems"])[:3])
              + f"\n  replay: {f['replay']}" for f in failed]
    assert not failed, f"{len(failed)} of {SEEDS} seeds failed:\n" + "\n".join(report[:20])


SCENARIO_SEEDS = 100


@pytest.mark.timeout(600)
def test_the_targeted_scenarios_check_clean() -> None:
    """The scenarios the plants run in find nothing on the current code (so what they
    find under a plant is the plant's doing)."""
    jobs = [((first, first + 49), "--scenario", scenario)
            for scenario in ("slow-home", "fast-clock", "sessions", "wipes", "grow-shrink",
                             "from-one", "repeats")
            for first in range(1, SCENARIO_SEEDS + 1, 50)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failed = [f for chunk in pool.map(lambda job: _run_chunk(*job), jobs) for f in chunk]
    assert not failed, "\n".join(f"seed {f['seed']}: {(f['anomalies'] + f['problems'])[:3]}"
                                 f"\n  replay: {f['replay']}" for f in failed[:20])


# Membership steps (3 -> 4 -> 5 -> 4 -> 3 with a replacement, 1 -> 2 -> 3 with one)
# under every other fault, the driving member's crashes and stalls included.
MEMBERSHIP_SEEDS = int(os.environ.get("PAXOSKV_SIM_MEMBERSHIP_SEEDS", "2000"))


@pytest.mark.timeout(1800)
def test_membership_steps_under_faults_check_clean() -> None:
    """MEMBERSHIP_SEEDS seeds, half in each membership scenario; every step of the
    plan settles (the director resumes a step whose driver failed)."""
    half = MEMBERSHIP_SEEDS // 2
    jobs = [((first, min(first + CHUNK - 1, half)), "--scenario", scenario)
            for scenario in ("grow-shrink", "from-one")
            for first in range(1, half + 1, CHUNK)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failed = [f for chunk in pool.map(lambda job: _run_chunk(*job), jobs) for f in chunk]
    assert not failed, "\n".join(f"seed {f['seed']}: {(f['anomalies'] + f['problems'])[:3]}"
                                 f"\n  replay: {f['replay']}" for f in failed[:20])


def test_a_seed_replays_byte_for_byte() -> None:
    first, again = run_seed(11), run_seed(11)
    assert first.trace and first.profile.faults and len(first.history) > 50
    assert first.serialised() == again.serialised()
    assert run_seed(12).serialised() != first.serialised()


# Each fix of issue 8 reverted (tests/sim/plants.py): the kinds of anomaly that show it.
REVERTED_FIXES = {
    "ballot-from-acceptor": ("carried two states", "decided twice"),
    "put-runs-twice": ("took effect more than once",),
    "wiped-votes": ("decided twice", "acknowledged state lost", "carried two states"),
    "delete-drops-guard": ("reported gone",),
    "renew-backwards": ("a keep-alive found it gone", "reported gone"),
    # Parts of membership change (issue 9) taken out:
    "skip-rescan": ("decided twice", "acknowledged state lost", "carried two states"),
    "ballots-by-name": ("decided twice", "took effect more than once", "carried two states"),
    # A compare-and-swap not conditional on the generation (issue 13):
    "swap-any-generation": ("took effect more than once", "which held"),
    # A delete of a generation not made yet, not remembered (found by a fault run):
    "delete-runs-twice": ("no delete invoked before it could have ended",),
}
PLANT_SEEDS = 300


@pytest.mark.timeout(300)
@pytest.mark.parametrize("plant", list(REVERTED_FIXES))
def test_random_seeds_find_each_fix_reverted(plant: str) -> None:
    """With one safety fix reverted, some seed of 1-300 (run in order, in the plant's
    scenario) finds its violation; the first that does is printed (issue 8's note)."""
    run = subprocess.run([sys.executable, "-m", "tests.sim", "--seeds", f"1-{PLANT_SEEDS}",
                          "--plant", plant, "--first", "--json"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    failed = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    found = [f for f in failed
             if any(kind in a for a in f["anomalies"] for kind in REVERTED_FIXES[plant])]
    assert found, f"no seed of 1-{PLANT_SEEDS} found {plant}: " + \
        "; ".join(f"seed {f['seed']}: {(f['anomalies'] + f['problems'])[:2]}" for f in failed)
    print(f"{plant}: first found by seed {found[0]['seed']}: {found[0]['anomalies'][0]}\n"
          f"  replay: {found[0]['replay']}")


def test_a_member_restarted_on_a_wiped_disk_is_refused_and_the_run_checks_clean() -> None:
    """The wipes scenario's first seed that wipes a member: the restart is refused
    (IdentityError from the real identity.decide), the member stays down, and the
    history checks clean."""
    for seed in range(1, 51):
        result = run_seed(seed, scenario="wipes")
        refused = [line for line in result.trace if "refused (IdentityError" in line]
        if refused:
            break
    else:
        pytest.fail("no seed of 1-50 wiped a member and restarted it")
    assert "it may rejoin only as a new member" in refused[0]
    victim = refused[0].split()[2].rstrip(":")
    assert not any(f"restart {victim}" in line and "refused" not in line
                   for line in result.trace[result.trace.index(refused[0]):])
    assert not result.anomalies and not result.problems, result.replay()


def test_the_simulator_finds_acceptors_that_forget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Acceptor, "handle", forgetful(Acceptor.handle))
    _assert_found(lambda seed: run_seed(seed).anomalies)


def test_the_simulator_finds_writes_acknowledged_before_durable() -> None:
    _assert_found(lambda seed: run_seed(seed, plant="ack-before-durable").anomalies)


def _assert_found(anomalies: object) -> None:
    assert callable(anomalies)
    for seed in range(1, 301):
        if anomalies(seed):
            return
    pytest.fail("no seed of 1-300 found the planted bug")


# -- the simulated world itself ----------------------------------------------------


def _run(main: object) -> None:
    loop = SimLoop()
    try:
        loop.run_until_complete(main)  # type: ignore[arg-type]
    finally:
        loop.close()


def test_time_is_virtual_and_a_stall_holds_a_process_then_replays_in_order() -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.25)
            ticks.append(asyncio.get_running_loop().time())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop)
        proc = Proc("a", 1)
        task = loop.create_task(ticker(), context=proc.context.copy())
        await asyncio.sleep(1.1)
        loop.stall(proc)
        await asyncio.sleep(3.0)  # the ticker's clock runs on, its timer waits
        assert ticks == [0.25, 0.5, 0.75, 1.0]
        loop.resume(proc)
        await asyncio.sleep(0.001)
        assert ticks[4:] == [4.1]  # the late tick comes at once, as after SIGCONT
        loop.kill(proc)
        await asyncio.sleep(1.0)
        assert ticks[-1] == 4.1 and task.cancelled() and not proc.tasks

    _run(main())


def test_a_crash_loses_what_the_disk_had_not_made_durable() -> None:
    disk = SimDisk()
    record = Record(None, None, KeyState(1, True, "x"))

    async def main() -> None:
        proc = Proc("a", 1)
        storage = SimStorage(disk, proc, random.Random(1), DiskTiming())
        await proc.context.run(storage.write, [("k", record)])
        assert disk.records == {"k": record}
        proc.context.run(storage.write, [("k2", record)])
        storage.kill()  # before its fsync completes
        await asyncio.sleep(1.0)

    _run(main())
    assert disk.records == {"k": record}


def test_a_cut_link_drops_after_a_heartbeat_failing_its_calls_then_redials() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop)
        notes: list[str] = []
        network = Network(random.Random(1), MessageFaults(), notes.append)
        clocks = {name: Clock() for name in ("n1", "n2", "n3")}
        cluster = SimCluster(loop, network, clocks, random.Random(1), DiskTiming())
        for name in clocks:
            cluster.start(name)
        await asyncio.sleep(0.5)
        n1 = cluster.members["n1"]
        assert n1.node is not None and n1.proc is not None
        link = n1.node.links["n2"]
        assert link.connected
        network.cut([("n1", "n2")])
        call = n1.proc.context.run(link.call, "m", encode(Inspect("k")))
        await asyncio.sleep(HEARTBEAT_S[1])
        assert not link.connected and isinstance(call.exception(), PeerUnavailable)
        with pytest.raises(PeerUnavailable):
            n1.proc.context.run(link.call, "m", encode(Inspect("k")))
        assert n1.node.links["n3"].connected  # only the cut path suffers
        network.heal([("n1", "n2")])
        await asyncio.sleep(REDIAL_S[1] + 0.1)
        assert link.connected
        assert "link n1->n2 down (cut)" in notes
        assert not await cluster.stop()

    _run(main())
