"""Bounded fault runs: random clients against a 3-node cluster while a nemesis kills
(-9) and restarts nodes on their data directories, pauses them (SIGSTOP/SIGCONT) and,
inside a network namespace, partitions them with nftables. Some runs also crash nodes
at a failpoint (after persisting, before replying) or go over a peer network that
drops, duplicates and delays messages. Every operation is recorded and the history
must check clean (tests/faults/checker.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.checker import Op, SessionLog, check, sessions_live_while_promised
from tests.faults.run import Run
from tests.faults.workload import UNKNOWN_OUTCOME

SECONDS = float(os.environ.get("PAXOSKV_FAULT_SECONDS", "8"))  # `make torture` raises it
PLANTED_BUG_SECONDS = 8.0  # a planted bug shows at once; longer runs prove nothing more
MESSAGE_FAULTS = {"PAXOSKV_TEST_MESSAGE_FAULTS": "drop=0.03,duplicate=0.05,delay_ms=15"}


def _faulty_run(tmp_path: Path, seed: int, env: dict[str, str] | None = None,
                node_env: dict[int, dict[str, str]] | None = None, lifetimes: bool = False,
                seconds: float = SECONDS, netns: str | None = None) -> Run:
    """One run of tests/faults/run.py in a private mount namespace (its power-loss disk
    is mounted there only) and, with `netns`, in that network namespace."""
    out = tmp_path / "run.json"
    command = ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
               "tests.faults.run", "--seed", str(seed), "--seconds", str(seconds),
               "--root", str(tmp_path / "run"), "--out", str(out), "--power-loss"]
    command += [f"--env={k}={v}" for k, v in (env or {}).items()]
    command += [f"--node-env={i}:{k}={v}" for i, e in (node_env or {}).items()
                for k, v in e.items()]
    command += ["--lifetimes"] if lifetimes else []
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command, "--partitions"]
    subprocess.run(command, check=True, timeout=seconds + 180)
    raw = json.loads(out.read_text())
    # Nothing a node logs under faults may be an error: each one is a bug or noise
    # that would hide one (a storage failure, an exception nobody retrieved).
    assert not raw["log_problems"], "\n".join(raw["log_problems"][:10])
    return Run([Op(**op) for op in raw["history"]], Counter(raw["faults"]),
               {sid: SessionLog(**log) for sid, log in raw["sessions"].items()})


def key_histories(history: list[Op], anomalies: list[str]) -> str:
    """The whole history of each key an anomaly names ("key: ..."), an operation a line,
    in invocation order: what a failed run must show, since its timings cannot be
    replayed."""
    keys = sorted({line.split(":", 1)[0] for line in anomalies})
    lines = []
    for key in keys:
        lines.append(f"\nhistory of {key}:")
        for op in sorted((op for op in history if op.key == key), key=lambda op: op.invoke):
            lines.append(f"  p{op.process} {op.kind} {op.invoke:.3f}-{op.complete:.3f} "
                         f"{op.outcome} value={op.value!r} token_arg={op.token_arg} "
                         f"found={op.found} seen={op.seen_value!r} token={op.token} "
                         f"deleted={op.deleted} error={op.error}")
    return "\n".join(lines)


def _verdict(seed: int, history: list[Op], faults: Counter[str],
             sessions: dict[str, SessionLog] | None = None) -> None:
    lifetimes = sessions is not None
    # A session surely lives until its close, and until a quorum of clocks passes the
    # latest deadline it was given: here every clock but one fast one is the test's.
    alive_until = {sid: min(log.closed_at, log.until_ms / 1000)
                   for sid, log in (sessions or {}).items()}
    report = check(history, bindings_end_keys=lifetimes, sessions_alive_until=alive_until)
    report.anomalies += sessions_live_while_promised(sessions or {}, alive_until)
    report.anomalies += [f"put {op.value!r} refused at {op.complete:.3f} as bound to a dead "
                         f"session, which surely lived until {alive_until[op.session]:.3f}"
                         for op in history if op.error == "invalid_value" and op.session
                         and op.complete < alive_until.get(op.session, -math.inf)]
    outcomes = Counter(op.outcome for op in history)
    if sessions:
        renewals = [until for log in sessions.values() for _, _, until in log.keep_alives]
        print(f"sessions: {len(sessions)}, {len(renewals)} keep-alives answered, "
              f"{renewals.count(None)} found one gone")
    test = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
    print(f"seed {seed}: {len(history)} operations ({dict(outcomes)}), faults "
          f"{dict(faults)}, {len(report.anomalies)} anomalies; rerun with the same fault "
          f"schedule, operation choices and node-side test randomness (timings differ: "
          f"real processes): PAXOSKV_FAULT_SECONDS={SECONDS:g} .venv/bin/pytest -s '{test}'")
    assert sum(faults.values()) >= 2 and outcomes["ok"] > 100, (faults, outcomes)
    assert report.ok, (f"seed {seed}: " + "\n".join(report.anomalies[:10])
                       + key_histories(history, report.anomalies[:10]))
    # Errors that no fault explains: an internal error, or a refusal other than a put
    # bound to what just died (every request the workload sends is well formed).
    errors = Counter(op.error for op in history if op.error is not None)
    assert not errors["internal"], errors
    unexpected = {code: n for code, n in errors.items()
                  if code not in UNKNOWN_OUTCOME and code != "invalid_value"}
    assert not unexpected, errors
    # invalid_value: a put whose binding had died (a deadline passed on the clock of the
    # node that served it, a session that expired during a pause), nothing else.
    assert all(op.kind == "put" and (op.until is not None or op.session is not None)
               for op in history if op.error == "invalid_value"), errors


FAILPOINTS = {"PAXOSKV_TEST_FAILPOINTS": "after-persist-before-reply=0.002"}


@pytest.mark.parametrize(("seed", "env"), [(1, None), (2, FAILPOINTS), (3, MESSAGE_FAULTS),
                                           (4, {**MESSAGE_FAULTS, **FAILPOINTS})])
def test_fault_run_history_is_linearizable(tmp_path: Path, seed: int,
                                           env: dict[str, str] | None) -> None:
    run = _faulty_run(tmp_path, seed, env)
    _verdict(seed, run.history, run.faults)


@pytest.fixture
def netns() -> Iterator[str]:
    """A private network namespace with loopback up; removed afterwards."""
    name = f"paxoskv-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.mark.parametrize("seed", [5, 6])
def test_partition_run_history_is_linearizable(tmp_path: Path, netns: str, seed: int) -> None:
    run = _faulty_run(tmp_path, seed, netns=netns)
    _verdict(seed, run.history, run.faults)


def test_lifetimes_hold_with_a_fast_clock_under_faults(tmp_path: Path) -> None:
    """Puts carry deadlines or sessions; node 1's clock runs 3 s fast (more than the 2 s
    grace after which other members stand in for a key's home); no key may be reported
    gone before its deadline (on the test's clock) or while its session surely lived,
    while the nemesis works."""
    skew = {0: {"PAXOSKV_TEST_CLOCK_SKEW_MS": "3000"}}
    run = _faulty_run(tmp_path, 8, node_env=skew, lifetimes=True)
    assert sum(op.until is not None and op.outcome == "ok" for op in run.history) > 20
    assert sum(op.session is not None and op.outcome == "ok" for op in run.history) > 20
    renewals = [k for log in run.sessions.values() for k in log.keep_alives]
    assert sum(until is not None for _, _, until in renewals) > 12, renewals
    _verdict(8, run.history, run.faults, run.sessions)


def _planted_bug_run(tmp_path: Path, bug: str, seed: int = 1) -> Run:
    """A run against nodes started with the test-only safety break `bug`: the checker
    must report it."""
    run = _faulty_run(tmp_path, seed, {"PAXOSKV_TEST_BREAK": bug},
                      seconds=PLANTED_BUG_SECONDS)
    report = check(run.history)
    print(f"planted {bug}: {len(report.anomalies)} anomalies, faults {dict(run.faults)}")
    assert not report.ok
    assert any("lost" in a or "decided twice" in a for a in report.anomalies)
    return run


def test_the_checker_catches_a_node_that_forgets_what_it_accepted(tmp_path: Path) -> None:
    """Planted bug: acceptors answer prepares as if they had accepted nothing."""
    _planted_bug_run(tmp_path, "promise-without-accepted")


def test_the_checker_catches_a_node_that_acknowledges_before_its_disk_has_the_write(
        tmp_path: Path) -> None:
    """Planted bug: writes reach the disk seconds after they are acknowledged, so kills
    and power cuts lose acknowledged puts and deletes."""
    run = _planted_bug_run(tmp_path, "lose-unsynced-writes")
    assert run.faults["power cut"] > 0


def test_real_power_loss_catches_commits_that_are_never_fsynced(tmp_path: Path) -> None:
    """Planted bug: SQLite with synchronous=OFF. Only a real power loss shows it: the
    page cache survives a kill -9, not a filesystem shut down unflushed."""
    run = _planted_bug_run(tmp_path, "no-fsync", seed=3)
    assert run.faults["power cut"] > 0

