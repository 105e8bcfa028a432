"""One simulated run per seed, its checks, and the command line.

    python -m tests.sim --seeds 1-2000 [--nodes 3|5] [--plant NAME] [--scenario NAME]
    python -m tests.sim --seed 17 --verbose      # replays one seed, prints everything
    python -m tests.sim --seeds 1-300 --plant put-runs-twice --first   # until one finds it

A run: start the members, let random clients work for `duration` virtual
seconds while the nemesis injects faults, undo every fault, let the cluster
settle, close the sessions, read every key through every node, stop. Then the
history is checked (tests/faults/checker.py, and tests/sim/checks.py, whose
ballot ledger also watches every acceptor write during the run).

Determinism: one seed gives one run, byte for byte, within one interpreter
and across interpreters with the same PYTHONHASHSEED (the node code iterates
sets of strings); the command line pins PYTHONHASHSEED=0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.faults.checker import Op, SessionLog, check, sessions_live_while_promised
from tests.sim import checks
from tests.sim.cluster import SimCluster
from tests.sim.loop import SimLoop
from tests.sim.nemesis import SCENARIOS, Profile, draw_profile, inflict
from tests.sim.network import Network
from tests.sim.plants import PLANTS, planted
from tests.sim.reconfigure import PLANS, STARTING, Director
from tests.sim.storage import AckBeforeDurable, DiskTiming, SimStorage
from tests.sim.workload import Client, LocalRead, Recorder, final_reads

DURATION_S = 15.0  # virtual seconds of faults and clients per run (then settling, final reads)
CLIENTS = 4
SETTLE_S = 3.0
# The scenario (nemesis.py) each planted bug's test runs by default: the
# schedule its violation needs is then common (for the others, "mixed" is).
PLANT_SCENARIOS = {"ballot-from-acceptor": "slow-home", "delete-drops-guard": "fast-clock",
                   "wiped-votes": "wipes", "renew-backwards": "sessions",
                   "skip-rescan": "grow-shrink", "no-fencing": "grow-shrink",
                   "ballots-by-name": "grow-shrink", "delete-runs-twice": "repeats"}


@dataclass
class Result:
    seed: int
    nodes: int
    plant: str | None
    anomalies: list[str]
    problems: list[str]  # errors that are not anomalies: exceptions, asyncio warnings
    profile: Profile
    trace: list[str]
    history: list[Op]
    local_reads: list[LocalRead]
    sessions: dict[str, SessionLog]
    virtual_s: float = 0.0
    real_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    duration: float = DURATION_S
    scenario: str = "mixed"

    def replay(self) -> str:
        plant = f" --plant {self.plant}" if self.plant else ""
        duration = f" --duration {self.duration:g}" if self.duration != DURATION_S else ""
        scenario = f" --scenario {self.scenario}" if self.scenario != "mixed" else ""
        return f"PYTHONHASHSEED=0 .venv/bin/python -m tests.sim --seed {self.seed} " \
               f"--nodes {self.nodes}{plant}{scenario}{duration} --verbose"

    def serialised(self) -> str:
        """Everything a run produced, for comparing two runs of one seed."""
        return json.dumps({"profile": self.profile.describe(), "trace": self.trace,
                           "history": [dataclasses.astuple(op) for op in self.history],
                           "local_reads": [dataclasses.astuple(r) for r in self.local_reads],
                           "sessions": [dataclasses.astuple(s) for s in self.sessions.values()],
                           "anomalies": self.anomalies}, default=repr)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"log {record.name}: {record.getMessage()}"
                         + (f" ({record.exc_info[1]!r})" if record.exc_info else ""))


def run_seed(seed: int, nodes: int = 3, plant: str | None = None,
             duration: float = DURATION_S, scenario: str | None = None) -> Result:
    """One seeded run; `scenario` defaults to the plant's (PLANT_SCENARIOS) or "mixed"."""
    scenario = scenario or PLANT_SCENARIOS.get(plant or "", "mixed")
    started = time.perf_counter()
    problems: list[str] = []
    logger = logging.getLogger("paxoskv")
    handler = _Collect(problems)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    random.seed(seed)  # node.py's backoff jitter uses the global generator
    gc_was_enabled = gc.isenabled()
    gc.disable()  # one collection at the end instead (about 10% faster)
    loop = SimLoop()
    loop.set_exception_handler(lambda _, ctx: problems.append(
        f"asyncio: {ctx['message']}" + (f": {ctx['exception']!r}" if "exception" in ctx else "")))
    try:
        with planted(plant):
            result = loop.run_until_complete(_simulate(loop, seed, nodes, plant, duration,
                                                       scenario, problems))
            finish(loop)
    finally:
        loop.close()
        if gc_was_enabled:
            gc.enable()
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    # Problems repeat (one per callback that failed): each once, with its count.
    result.problems = [f"{n}x {p}" if n > 1 else p for p, n in Counter(problems).items()]
    result.duration = duration
    result.scenario = scenario
    result.real_s = time.perf_counter() - started
    return result


def finish(loop: SimLoop) -> None:
    """End whatever is left (clients' abandoned requests), then surface asyncio's
    complaints about futures and tasks left behind while the handler listens."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    gc.collect()


async def _simulate(loop: SimLoop, seed: int, nodes: int, plant: str | None,
                    duration: float, scenario: str, problems: list[str]) -> Result:
    rng = random.Random(seed)
    plan = PLANS.get(scenario)
    if plan is not None:  # a membership scenario: members join and leave as it says
        nodes = max(int(name[1:]) for _, name in plan) if plan else nodes
        nodes = max(nodes, len(STARTING[scenario]))
    names = [f"n{i + 1}" for i in range(nodes)]
    starting = list(STARTING.get(scenario, names))
    profile = draw_profile(random.Random(rng.getrandbits(64)), names, duration, scenario)
    trace: list[str] = []

    def note(line: str) -> None:
        trace.append(f"{loop.time():8.3f} {line}")

    network = Network(random.Random(rng.getrandbits(64)), profile.messages, note)
    storage = AckBeforeDurable if plant == "ack-before-durable" else SimStorage
    cluster = SimCluster(loop, network, profile.clocks, random.Random(rng.getrandbits(64)),
                         DiskTiming(), storage, amnesia=plant == "wiped-votes",
                         joining=tuple(n for n in names if n not in starting))
    for name in starting:
        cluster.start(name)
    recorder = Recorder()
    stop_at = cluster.now() + duration
    clients = [Client(i, starting[i % len(starting)], cluster,
                      random.Random(rng.getrandbits(64)), recorder, profile.mix)
               for i in range(CLIENTS)]
    work = [loop.create_task(c.run(stop_at)) for c in clients]
    work += [loop.create_task(c.sessions(stop_at)) for c in clients[:profile.mix.sessions]]
    director = Director(cluster, random.Random(rng.getrandbits(64)), note)
    if plan is not None:
        work.append(loop.create_task(director.run(plan, loop.time() + duration)))
    await inflict(cluster, profile.faults, note)
    await asyncio.gather(*work)
    if plan is not None:
        await director.finish()
    await asyncio.sleep(SETTLE_S)
    await final_reads(cluster, recorder, profile.mix)
    problems.extend(await cluster.stop())

    alive_until = {sid: min(log.closed_at, cluster.earliest_end(log.until_ms))
                   for sid, log in recorder.sessions.items()}
    history = recorder.history
    report = check(history, bindings_end_keys=True, sessions_alive_until=alive_until)
    anomalies = [*report.anomalies, *checks.puts_take_effect_once(history),
                 *checks.local_reads_are_clean(history, recorder.local_reads),
                 *sessions_live_while_promised(recorder.sessions, alive_until),
                 *cluster.ledger.anomalies]
    counts = Counter(f"{op.kind} {op.outcome}" for op in history)
    counts["local read"] = len(recorder.local_reads)
    counts["sessions"] = len(recorder.sessions)
    if plan is not None:
        counts["membership steps"] = len(director.done)
    problems.extend(recorder.errors)
    return Result(seed, nodes, plant, anomalies, [], profile, trace, history,
                  recorder.local_reads, recorder.sessions, loop.time(), 0.0, dict(counts))


# -- the command line ---------------------------------------------------------------


def _seeds(spec: str) -> list[int]:
    seeds: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def _print_run(result: Result) -> None:
    for line in result.profile.describe():
        print(f"  {line}")
    print("  trace:")
    for line in result.trace:
        print(f"    {line}")
    print("  history (invoke, complete, process, kind, key, outcome, answer):")
    for op in sorted(result.history, key=lambda o: o.invoke):
        answer = f"found={op.found} value={op.seen_value!r} token={op.token}" \
            if op.outcome == "ok" else ""
        args = {"put": f"value={op.value!r} until={op.until} session={op.session}",
                "delete": f"token={op.token_arg}",
                "swap": f"expected={op.expected!r} value={op.value!r} token={op.token_arg}"
                }.get(op.kind, "")
        if op.outcome == "ok" and op.kind == "swap":
            answer += f" swapped={op.swapped}"
        print(f"    {op.invoke:.3f} {op.complete:.3f} p{op.process} {op.kind} {op.key} "
              f"{args} -> {op.outcome} {answer}")
    for r in result.local_reads:
        print(f"    {r.invoke:.3f} {r.complete:.3f} p{r.process} local {r.key} -> "
              f"found={r.found} value={r.value!r} token={r.token}")
    for log in result.sessions.values():
        print(f"    session {log.id}: ttl {log.ttl_ms} ms, until {log.until_ms}, closed at "
              f"{log.closed_at:.3f}, keep-alives {log.keep_alives}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1-100", help="e.g. 1-2000 or 3,7,10-20")
    parser.add_argument("--seed", type=int, help="one seed (overrides --seeds)")
    parser.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    parser.add_argument("--plant", choices=PLANTS, help="a planted bug the run must find")
    parser.add_argument("--scenario", choices=SCENARIOS,
                        help="the nemesis scenario (default: the plant's, else mixed)")
    parser.add_argument("--duration", type=float, default=DURATION_S,
                        help="virtual seconds of faults and clients")
    parser.add_argument("--verbose", action="store_true",
                        help="print the fault schedule and the history of each run")
    parser.add_argument("--first", action="store_true",
                        help="stop at the first seed that finds an anomaly")
    parser.add_argument("--json", action="store_true",
                        help="one JSON line per failing seed (for tests/test_sim.py)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else _seeds(args.seeds)
    failed, started, operations = 0, time.perf_counter(), 0
    for seed in seeds:
        result = run_seed(seed, args.nodes, args.plant, args.duration, args.scenario)
        operations += len(result.history)
        bad = bool(result.anomalies or result.problems)
        failed += bad
        if args.json:
            if bad:
                print(json.dumps({"seed": seed, "anomalies": result.anomalies,
                                  "problems": result.problems, "replay": result.replay()}),
                      flush=True)
        elif bad or args.verbose:
            print(f"seed {seed}: {len(result.anomalies)} anomalies, {len(result.problems)} "
                  f"problems; {len(result.history)} ops {result.counts}; "
                  f"{result.virtual_s:.1f} virtual s in {result.real_s * 1000:.0f} ms")
            for line in result.anomalies[:20] + result.problems[:20]:
                print(f"  {line}")
            print(f"  replay: {result.replay()}")
        if args.verbose and not args.json:
            _print_run(result)
        if args.first and result.anomalies:
            seeds = seeds[:seeds.index(seed) + 1]
            break
    elapsed = time.perf_counter() - started
    if not args.json:
        print(f"{len(seeds)} seeds, {failed} failed, {operations} operations, "
              f"{elapsed:.1f} s ({len(seeds) / elapsed:.1f} seeds/s)")
    return 1 if failed else 0


def entry() -> None:
    """Pin the hash seed (re-exec if needed) so that a seed replays exactly."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "tests.sim", *sys.argv[1:]], env)
    sys.exit(main())
