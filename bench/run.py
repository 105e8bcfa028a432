"""`make bench`: PaxosKV against etcd on this machine, side by side, in one run.

Starts a 3-node PaxosKV cluster and a 3-member etcd cluster on 127.0.0.1 (fresh data
directories, fsync on for both), drives node 1 of each with wrk and the same Lua script
(bench/wrk.lua) for put-if-absent on fresh keys and linearizable get of existing keys at
client concurrency 1, 16 and 64, prints ops/s and p50/p99 latency with the PaxosKV/etcd
ratio, writes the table into README.md between the bench markers and a JSON copy into
bench/out/latest.json. Then write availability with one member paused, and the time to
add a member to a cluster holding 100,000 keys (bench/availability.py, bench/catchup.py).
Every process it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from availability import PAUSE_S, Availability, etcd_leader, measure_availability
from catchup import KEYS, QUICK_KEYS, CatchUp, measure_catch_up

from paxoskv import devcluster

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OUT = BENCH / "out"
LOGS = OUT / "logs"
SCRIPT = BENCH / "wrk.lua"
HOST = "127.0.0.1"
STORES = ("paxoskv", "etcd")
WORKLOADS = {"put": "put-if-absent", "get": "linearizable get"}
CONCURRENCY = (1, 16, 64)
SIZE = 3
GET_KEYS = 1000
START_TIMEOUT = 60.0
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


class BenchError(Exception):
    """A failure that ends the run with a one-line message."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- tools -----------------------------------------------------------------------------

def missing_tools() -> list[str]:
    return [tool for tool in ("wrk", "etcd") if shutil.which(tool) is None]


def apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(OUT / "apt-get.log", "ab") as log:
        try:
            done = subprocess.run(["apt-get", *args], stdout=log, stderr=subprocess.STDOUT,
                                  env=env, check=False)
        except FileNotFoundError:
            log.write(b"apt-get: command not found\n")
            return False
    return done.returncode == 0


def ensure_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    progress(f"{' and '.join(missing)} not found; installing Debian packages wrk and "
             f"etcd-server with apt-get (log: {OUT / 'apt-get.log'})")
    if not apt_get("install", "-y", "wrk", "etcd-server"):
        apt_get("update")
        apt_get("install", "-y", "wrk", "etcd-server")
    missing = missing_tools()
    if missing:
        raise BenchError(f"{' and '.join(missing)} still missing after apt-get install wrk "
                         f"etcd-server (see {OUT / 'apt-get.log'}); install them and rerun")


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"etcd Version: (\S+)", out.stdout)
    return match.group(1) if match else "unknown"


# --- clusters --------------------------------------------------------------------------

@dataclass
class Cluster:
    store: str
    urls: list[str]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise BenchError(f"{self.store} member exited with status {proc.returncode}; "
                                 f"see {log}")


Launch = tuple[list[str], Path]


def paxoskv_launches(data_root: Path) -> tuple[list[str], list[Launch]]:
    members = [devcluster.LocalMember(f"n{i}", HOST, port, data_root / "paxoskv" / f"n{i}")
               for i, port in enumerate(devcluster.free_ports(SIZE, HOST), start=1)]
    launches = [([*devcluster.serve_command(m, members), "--log-level", "warning"],
                 LOGS / f"paxoskv-{m.name}.log") for m in members]
    return [m.url for m in members], launches


def etcd_launches(data_root: Path) -> tuple[list[str], list[Launch]]:
    ports = devcluster.free_ports(2 * SIZE, HOST)
    client = [f"http://{HOST}:{port}" for port in ports[:SIZE]]
    peer = [f"http://{HOST}:{port}" for port in ports[SIZE:]]
    initial = ",".join(f"e{i}={url}" for i, url in enumerate(peer, start=1))
    token = f"bench-{os.getpid()}-{time.time_ns()}"
    launches = [([
        "etcd", "--name", f"e{i}", "--data-dir", str(data_root / "etcd" / f"e{i}"),
        "--listen-client-urls", client[i - 1], "--advertise-client-urls", client[i - 1],
        "--listen-peer-urls", peer[i - 1], "--initial-advertise-peer-urls", peer[i - 1],
        "--initial-cluster", initial, "--initial-cluster-token", token,
        "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
    ], LOGS / f"etcd-e{i}.log") for i in range(1, SIZE + 1)]
    return client, launches


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


@contextmanager
def running(store: str, urls: list[str], launches: list[Launch]) -> Iterator[Cluster]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for command, log in launches:
            procs.append(spawn(command, log))
        yield Cluster(store, urls, procs, [log for _, log in launches])
    finally:
        devcluster.stop(procs)


def paxoskv_ready(url: str) -> bool:
    return httpx.get(url + "/readyz", timeout=1.0).status_code == 200


def etcd_ready(url: str) -> bool:
    response = httpx.get(url + "/health", timeout=1.0)
    return response.status_code == 200 and response.json().get("health") == "true"


READY: dict[str, Callable[[str], bool]] = {"paxoskv": paxoskv_ready, "etcd": etcd_ready}


def wait_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(cluster.urls)
    while pending:
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{cluster.store} not ready after {START_TIMEOUT:.0f}s "
                             f"({', '.join(pending)}); logs in {LOGS}")
        pending = [url for url in pending if not probe(READY[cluster.store], url)]
        time.sleep(0.2)


def probe(ready: Callable[[str], bool], url: str) -> bool:
    try:
        return ready(url)
    except (httpx.HTTPError, ValueError):
        return False


# --- preload ---------------------------------------------------------------------------

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put_call(store: str, key: str) -> tuple[str, dict[str, Any]]:
    if store == "paxoskv":
        return "/v1/put", {"key": key, "value": key}
    return "/v3/kv/put", {"key": b64(key), "value": b64(key)}


async def preload(cluster: Cluster, prefix: str) -> None:
    """Put GET_KEYS keys PREFIX/0.. through node 1, for the get workload."""
    limit = asyncio.Semaphore(32)

    async def put(client: httpx.AsyncClient, key: str) -> None:
        path, body = put_call(cluster.store, key)
        async with limit:
            response = await client.post(cluster.urls[0] + path, json=body)
        if response.status_code != 200:
            raise BenchError(f"preloading {cluster.store} key {key}: HTTP "
                             f"{response.status_code} {response.text[:200]}")

    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.gather(*(put(client, f"{prefix}/{i}") for i in range(GET_KEYS)))


# --- wrk -------------------------------------------------------------------------------

@dataclass
class Result:
    store: str
    workload: str
    concurrency: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    unexpected: int
    sample: str

    @property
    def failed(self) -> bool:
        return self.non_2xx + self.socket_errors + self.unexpected > 0 or self.requests == 0


TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def number(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match:
        return match.group(1)
    if default is None:
        raise BenchError(f"cannot find /{pattern}/ in wrk output:\n{text}")
    return default


def latency_ms(percent: int, text: str) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    if not match:
        raise BenchError(f"no {percent}% latency in wrk output:\n{text}")
    return float(match.group(1)) * TO_MS[match.group(2)]


def parse_wrk(store: str, workload: str, concurrency: int, text: str) -> Result:
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                        r"timeout (\d+)", text)
    check = re.search(r"^bench-check: (\d+) ?(.*)$", text, re.MULTILINE)
    if check is None:
        raise BenchError(f"no bench-check line in wrk output:\n{text}")
    return Result(
        store=store, workload=workload, concurrency=concurrency,
        ops_per_s=float(number(r"^Requests/sec:\s+([\d.]+)", text)),
        p50_ms=latency_ms(50, text), p99_ms=latency_ms(99, text),
        requests=int(number(r"^\s+(\d+) requests in ", text)),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)", text, "0")),
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        unexpected=int(check.group(1)), sample=check.group(2))


def run_wrk(cluster: Cluster, workload: str, concurrency: int, prefix: str,
            duration: int) -> Result:
    command = ["wrk", "-t", str(min(concurrency, 2)), "-c", str(concurrency),
               "-d", f"{duration}s", "--latency", "-s", str(SCRIPT), cluster.urls[0],
               "--", cluster.store, workload, prefix, str(GET_KEYS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(cluster.store, workload, concurrency, done.stdout)


# --- the run ---------------------------------------------------------------------------

def measure(clusters: dict[str, Cluster], run_id: str, duration: int) -> list[Result]:
    """Every cell, the two stores back to back, so slow drift in load hits both alike."""
    cells = [(w, c, s) for w in WORKLOADS for c in CONCURRENCY for s in STORES]
    results = []
    for n, (workload, concurrency, store) in enumerate(cells, start=1):
        progress(f"[{n}/{len(cells)}] {store} {WORKLOADS[workload]} at concurrency "
                 f"{concurrency} ({duration}s)")
        prefix = f"{run_id}/get" if workload == "get" else f"{run_id}/put/c{concurrency}"
        result = run_wrk(clusters[store], workload, concurrency, prefix, duration)
        clusters[store].check_alive()
        progress(f"    {result.ops_per_s:,.0f} ops/s, p50 {result.p50_ms:.2f} ms, "
                 f"p99 {result.p99_ms:.2f} ms" + (f"  ERRORS: {errors(result)}"
                                                   if result.failed else ""))
        results.append(result)
    return results


def start_clusters(stack: ExitStack, data_root: Path) -> dict[str, Cluster]:
    clusters = {}
    for store, launches in (("paxoskv", paxoskv_launches), ("etcd", etcd_launches)):
        progress(f"starting a {SIZE}-member {store} cluster")
        clusters[store] = stack.enter_context(running(store, *launches(data_root)))
    for cluster in clusters.values():
        wait_ready(cluster)
        progress(f"{cluster.store} ready: {', '.join(cluster.urls)}")
    return clusters


def availability(clusters: dict[str, Cluster], run_id: str) -> list[Availability]:
    """One member paused for PAUSE_S seconds under steady writes, for each store."""
    found = []
    for store, cluster in clusters.items():
        pids = [proc.pid for proc in cluster.procs]
        if store == "paxoskv":
            paused, entry, why = 1, 0, "n2 (a third of the keys are homed on it)"
        else:
            paused = etcd_leader(cluster.urls)
            entry, why = (paused + 1) % SIZE, f"e{paused + 1} (the leader)"
        progress(f"availability: {store}, writes through member {entry + 1} while {why} "
                 f"is paused for {PAUSE_S:.0f} s")
        result = measure_availability(store, cluster.urls, pids, paused, entry, why,
                                      f"{run_id}/avail")
        progress(f"    longest gap {result.longest_gap_ms:,.0f} ms, {result.failed} of "
                 f"{result.writes} writes failed, p99 {result.p99_before_ms:.1f} ms before "
                 f"and {result.p99_paused_ms:.1f} ms during the pause")
        cluster.check_alive()
        found.append(result)
    return found


def run_benchmark(duration: int, catch_up_keys: int
                  ) -> tuple[list[Result], list[Availability], CatchUp]:
    run_id = f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    with ExitStack() as stack:
        data_root = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="data-", dir=OUT)))
        clusters = start_clusters(stack, data_root)
        for cluster in clusters.values():
            progress(f"preloading {GET_KEYS} keys into {cluster.store}")
            asyncio.run(preload(cluster, f"{run_id}/get"))
        results = measure(clusters, run_id, duration)
        paused = availability(clusters, run_id)
        progress("stopping clusters")
    with tempfile.TemporaryDirectory(prefix="data-", dir=OUT) as catch_up_root:
        catch_up = measure_catch_up(Path(catch_up_root), LOGS, catch_up_keys, progress)
    progress(f"    added in {catch_up.add_s:.1f} s; puts {catch_up.steady_ops:,.0f}/s before, "
             f"{catch_up.during_ops:,.0f}/s during ({catch_up.failed} failed)")
    return results, paused, catch_up


# --- report ----------------------------------------------------------------------------

def errors(result: Result) -> str:
    parts = [f"{result.non_2xx} non-2xx", f"{result.socket_errors} socket errors",
             f"{result.unexpected} unexpected responses"]
    sample = f" (e.g. {result.sample})" if result.sample else ""
    return ", ".join(parts) + sample


def ratio_rows(results: list[Result]) -> list[tuple[str, int, str]]:
    by_cell = {(r.store, r.workload, r.concurrency): r for r in results}
    rows = []
    for workload in WORKLOADS:
        for concurrency in CONCURRENCY:
            ours = by_cell[("paxoskv", workload, concurrency)]
            etcd = by_cell[("etcd", workload, concurrency)]
            valid = not (ours.failed or etcd.failed) and etcd.ops_per_s > 0
            ratio = f"{ours.ops_per_s / etcd.ops_per_s:.2f}x" if valid else "n/a"
            rows.append((WORKLOADS[workload], concurrency, ratio))
    return rows


def result_cells(r: Result) -> list[str]:
    mark = " ⚠ ERRORS" if r.failed else ""
    return ["PaxosKV" if r.store == "paxoskv" else "etcd", WORKLOADS[r.workload],
            str(r.concurrency), f"{r.ops_per_s:,.0f}{mark}", f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}"]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


RESULT_HEADER = ["store", "workload", "concurrency", "ops/s", "p50 ms", "p99 ms"]
RATIO_HEADER = ["workload", "concurrency", "PaxosKV/etcd ops/s"]


AVAILABILITY_HEADER = ["store", "paused member", "writes", "failed", "longest gap ms",
                       "p99 ms before", "p99 ms paused", "p99 ms paused, its keys"]


def availability_cells(a: Availability) -> list[str]:
    home = "n/a" if a.p99_paused_home_ms is None else f"{a.p99_paused_home_ms:.1f}"
    return ["PaxosKV" if a.store == "paxoskv" else "etcd", a.paused, f"{a.writes:,}",
            str(a.failed), f"{a.longest_gap_ms:,.0f}", f"{a.p99_before_ms:.1f}",
            f"{a.p99_paused_ms:.1f}", home]


CATCH_UP_HEADER = ["keys", "add a member, s", "puts/s before", "puts/s during",
                   "during/before", "puts failed"]


def catch_up_cells(c: CatchUp) -> list[str]:
    return [f"{c.keys:,}", f"{c.add_s:.1f}", f"{c.steady_ops:,.0f}", f"{c.during_ops:,.0f}",
            f"{c.during_ops / c.steady_ops:.2f}x" if c.steady_ops else "n/a", str(c.failed)]


def tables(results: list[Result], paused: list[Availability], catch_up: CatchUp,
           render: Callable[[list[str], list[list[str]]], str]) -> str:
    ratios = [[w, str(c), ratio] for w, c, ratio in ratio_rows(results)]
    return (render(RESULT_HEADER, [result_cells(r) for r in results]) + "\n\n"
            + render(RATIO_HEADER, ratios) + "\n\n"
            + render(AVAILABILITY_HEADER, [availability_cells(a) for a in paused]) + "\n\n"
            + render(CATCH_UP_HEADER, [catch_up_cells(catch_up)]))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu}


def readme_section(results: list[Result], paused: list[Availability], catch_up: CatchUp,
                   meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (f"Measured {meta['date']} with `{meta['command']}` on {m['nproc']} cores "
            f"({m['cpu']}), Linux {m['kernel']}: a 3-node PaxosKV cluster and a 3-member "
            f"etcd {meta['etcd_version']} cluster on 127.0.0.1, fsync on for both, each "
            f"driven through node 1 by wrk with the same Lua script "
            f"({meta['duration_s']} s per cell, wrk threads = min(concurrency, 2)); "
            f"1-minute load average before the run: {meta['load_before']}. The third "
            f"table: {WRITERS_NOTE} The last table: {CATCH_UP_NOTE}\n\n"
            + tables(results, paused, catch_up, markdown_table))


def update_readme(readme: Path, section: str) -> None:
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        progress(f"{readme} has no {MARK_START} … {MARK_END} markers; not updated")
        return
    readme.write_text(text[:start + len(MARK_START)] + "\n" + section + "\n" + text[end:])
    progress(f"results written to {readme}")


def command_line(argv: list[str]) -> str:
    if not argv:
        return "make bench"
    return ".venv/bin/python bench/run.py " + shlex.join(argv)


def note_node_logs() -> None:
    """The nodes log at warning level: anything in their logs deserves a look."""
    for log in sorted(LOGS.glob("paxoskv-*.log")):
        lines = log.read_text(errors="replace").splitlines()
        if lines:
            progress(f"note: {log} has {len(lines)} log lines; first: {lines[0][:200]}")


WRITERS_NOTE = ("8 writers put fresh keys through one member for 3 s, then another "
                "member is paused with SIGSTOP for 5 s (for etcd, its leader), then 3 s "
                "more; each write has a 2 s deadline. The last column: PaxosKV's writes "
                "to the keys homed on the paused member.")


CATCH_UP_NOTE = (f"a new 3-member cluster is loaded with {KEYS:,} keys; 8 writers put fresh "
                 "keys through member 1 for 5 s (before), then a fourth node started with "
                 "`--join` is added through member 1 while they go on (during): the add "
                 "answers once every key was re-scanned through the new member and the step "
                 "settled.")


def report(results: list[Result], paused: list[Availability], catch_up: CatchUp,
           meta: dict[str, Any], readme: Path | None) -> None:
    print(tables(results, paused, catch_up, text_table))
    note_node_logs()
    (OUT / "latest.json").write_text(json.dumps(
        {**meta, "results": [asdict(r) for r in results],
         "availability": [asdict(a) for a in paused], "catch_up": asdict(catch_up)},
        indent=2) + "\n")
    failed = [r for r in results if r.failed]
    for r in failed:
        progress(f"ERRORS in {r.store} {WORKLOADS[r.workload]} c={r.concurrency}: "
                 f"{errors(r)}")
    if failed:
        progress("README not updated: a benchmark that measured errors is worthless")
    elif readme is not None:
        update_readme(readme, readme_section(results, paused, catch_up, meta))


# --- main ------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs wrk and etcd (Debian packages wrk and etcd-server); installs them "
        "with apt-get if missing. Node and etcd logs are kept in bench/out/logs.")
    parser.add_argument("--duration", type=int, default=None, metavar="SECONDS",
                        help="wrk duration per cell (default 10, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="short cells (3 s) for a smoke run; README is not touched")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md",
                        help="file whose bench markers receive the table (default README.md)")
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration < 1:
        parser.error("--duration must be at least 1 second")
    return args


def terminate(signum: int, frame: object) -> None:
    """SIGTERM stops the run as Ctrl-C does (asyncio.run handles SIGINT cleanly too)."""
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    duration = args.duration or (3 if args.quick else 10)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with &
    signal.signal(signal.SIGTERM, terminate)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir()
    load = os.getloadavg()[0]
    if load > 0.5:
        progress(f"warning: load average {load:.2f} before the run; other work on this "
                 f"machine skews the figures")
    try:
        ensure_tools()
        results, paused, catch_up = run_benchmark(duration, QUICK_KEYS if args.quick else KEYS)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; clusters stopped", file=sys.stderr)
        return 130
    meta = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "command": command_line(argv),
            "machine": machine(), "etcd_version": etcd_version(), "duration_s": duration,
            "load_before": round(load, 2)}
    report(results, paused, catch_up, meta, None if args.quick else args.readme)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
