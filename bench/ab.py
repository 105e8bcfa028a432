"""`make bench-ab REV=<git revision>`: put throughput of this tree against another revision.

For a claim like "no regression beyond noise": a 3-node PaxosKV cluster of each
version on 127.0.0.1 in turn (A = this working tree, B = REV, checked out in a
temporary git worktree), driven by wrk with bench/wrk.lua at one concurrency,
alternating A and B so that drifting machine load hits both alike. Prints, per
run, ops/s and the CPU milliseconds the three nodes spent per put (steadier than
ops/s on a shared machine), then the medians and the ratio A/B.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import run as bench

REPO = bench.REPO


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(concurrency: int, seconds: int) -> tuple[float, float]:
    """(ops/s, CPU ms per put) of a fresh cluster of the paxoskv on the import path."""
    with tempfile.TemporaryDirectory() as data, ExitStack() as stack:
        cluster = stack.enter_context(
            bench.running("paxoskv", *bench.paxoskv_launches(Path(data))))
        bench.wait_ready(cluster)
        bench.run_wrk(cluster, "put", 16, f"warm-{time.time_ns()}", 2)
        before = sum(cpu_seconds(p.pid) for p in cluster.procs)
        result = bench.run_wrk(cluster, "put", concurrency, f"ab-{time.time_ns()}", seconds)
        used = sum(cpu_seconds(p.pid) for p in cluster.procs) - before
        cluster.check_alive()
    if result.failed:
        raise bench.BenchError(f"wrk saw errors: {bench.errors(result)}")
    return result.ops_per_s, 1000 * used / (result.ops_per_s * seconds)


def measure_version(code: Path, concurrency: int, seconds: int) -> tuple[float, float]:
    """`measure` in a process that imports the paxoskv under `code` (its nodes too)."""
    done = subprocess.run(
        [sys.executable, __file__, "--measure", str(concurrency), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True,
        check=False, timeout=seconds + 180)
    if done.returncode != 0:
        raise bench.BenchError(f"a run of {code} failed: {done.stderr.strip()[-500:]}")
    ops, cpu = done.stdout.split()
    return float(ops), float(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ab.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", nargs="?", help="the git revision to compare against (B)")
    parser.add_argument("--rounds", type=int, default=4, help="A/B pairs (default 4)")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=8, help="per run (default 8)")
    parser.add_argument("--measure", nargs=2, type=int, metavar=("CONCURRENCY", "SECONDS"),
                        help=argparse.SUPPRESS)  # one run, in the child process
    args = parser.parse_args(argv)
    if args.measure:
        print(*measure(*args.measure))
        return 0
    if args.rev is None:
        parser.error("the revision to compare against is missing")
    bench.ensure_tools()
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paxoskv-ab-") as tmp:
        other = Path(tmp) / "b"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                        str(other), args.rev], check=True)
        try:
            runs: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
            for n in range(1, args.rounds + 1):
                for side, code in (("A", REPO / "node"), ("B", other / "node")):
                    rate, cost = measure_version(code, args.concurrency, args.seconds)
                    runs[side].append((rate, cost))
                    bench.progress(f"[{n}/{args.rounds}] {side}: {rate:,.0f} ops/s, "
                                   f"{cost:.3f} CPU ms per put")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(other)], check=False)
    ops = {side: statistics.median(o for o, _ in r) for side, r in runs.items()}
    cpu = {side: statistics.median(c for _, c in r) for side, r in runs.items()}
    print(f"put c={args.concurrency}, medians of {args.rounds}: A (this tree) "
          f"{ops['A']:,.0f} ops/s, {cpu['A']:.3f} CPU ms/put; B ({args.rev}) "
          f"{ops['B']:,.0f} ops/s, {cpu['B']:.3f} CPU ms/put; A/B ops {ops['A'] / ops['B']:.2f}, "
          f"CPU per put {cpu['A'] / cpu['B']:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
