"""Mutation testing (`make mutants`): how many planted bugs the fast tests catch.

cosmic-ray mutates one place at a time (an operator, a constant, a condition
negated) in the consensus core, the storage and the fault checker, and runs
the fast tests against each mutant. A mutant that every test survives is a
bug the tests would miss, or an equivalent change; tests/mutants/report.md
lists them with their diffs, and the kill rate per module.

It runs on copies of the working tree (cosmic-ray edits files in place), one
copy per group so that the two groups can run side by side on two cores.
Not part of the test command: it takes about 50 minutes on 2 cores. A mutant that
hangs (a loop that no longer ends) counts as killed after 20 s, ten times a normal run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "tests" / "mutants" / "report.md"
# Groups that run in parallel, each on its own copy of the tree.
GROUPS = {
    "state, proposer, acceptor": ["node/paxoskv/core/state.py", "node/paxoskv/core/proposer.py",
                                  "node/paxoskv/core/acceptor.py"],
    "ballot, messages, storage, lockfile, checker": ["node/paxoskv/core/ballot.py",
                                           "node/paxoskv/core/messages.py",
                                           "node/paxoskv/server/storage.py",
                                           "node/paxoskv/lockfile.py",
                                           "tests/faults/checker.py"],
}
FAST_TESTS = ["tests/test_core.py", "tests/test_storage.py", "tests/test_checker.py",
              "tests/test_transport.py"]
# `X | Y` in annotations (never evaluated here: `from __future__ import annotations`)
# would make hundreds of equivalent mutants; the few runtime `|` (os flags) go too.
EXCLUDED_OPERATORS = ["core/ReplaceBinaryOperator_BitOr_.*"]
CONFIG = """\
[cosmic-ray]
module-path = {modules}
timeout = 20.0
excluded-modules = []
test-command = "{python} -m pytest -x -q -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = {excluded}
"""


def progress(message: str) -> None:
    print(f"mutants: {message}", file=sys.stderr, flush=True)


def prepare(root: Path, modules: list[str]) -> Path:
    """A copy of the tree with its cosmic-ray session initialised and filtered."""
    for part in ("node", "tests", "pyproject.toml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", ".hypothesis"))
        else:
            shutil.copy2(source, root / part)
    config = root / "cosmic-ray.toml"
    config.write_text(CONFIG.format(modules=json.dumps(modules), python=sys.executable,
                                    tests=" ".join(FAST_TESTS),
                                    excluded=json.dumps(EXCLUDED_OPERATORS)))
    session = root / "session.sqlite"
    bin_dir = Path(sys.executable).parent
    for command in ([bin_dir / "cosmic-ray", "init", config, session],
                    [bin_dir / "cr-filter-operators", session, config]):
        subprocess.run([str(c) for c in command], cwd=root, check=True,
                       capture_output=True, env=_env(root))
    return session


def _env(root: Path) -> dict[str, str]:
    # The copy's code, not the editable install's: its files are the ones mutated.
    return {**os.environ, "PYTHONPATH": str(root / "node"), "PYTHONHASHSEED": "0"}


def counts(session: Path) -> tuple[int, int]:
    """(mutants done, mutants to run) in a session."""
    with sqlite3.connect(session) as db:
        total = db.execute("SELECT count(*) FROM work_items").fetchone()[0]
        done = db.execute("SELECT count(*) FROM work_results").fetchone()[0]
    return int(done), int(total)


def results(session: Path) -> list[dict[str, Any]]:
    """One entry per mutant: its module, operator, line, outcome and diff."""
    dump = subprocess.run([str(Path(sys.executable).parent / "cosmic-ray"), "dump",
                           str(session)], check=True, capture_output=True, text=True)
    found = []
    for line in dump.stdout.splitlines():
        item, result = json.loads(line)
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        mutation = item["mutations"][0]
        found.append({"module": mutation["module_path"], "operator": mutation["operator_name"],
                      "line": mutation["start_pos"][0], "outcome": result["test_outcome"],
                      "worker": result["worker_outcome"], "diff": result.get("diff") or ""})
    return found


def write_report(found: list[dict[str, Any]], elapsed: float) -> str:
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for r in found:
        by_module[r["module"]][r["outcome"]] += 1
    lines = ["# Mutation testing: the last `make mutants`", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(found)} mutants, "
             f"{elapsed / 60:.0f} minutes; tests: {', '.join(FAST_TESTS)}.",
             "A mutant is killed when a test fails (or it times out); it survives when "
             "every test passes.", "",
             "| module | mutants | killed | survived | kill rate |",
             "| --- | --- | --- | --- | --- |"]
    total: Counter[str] = Counter()
    for module, c in sorted(by_module.items()):
        total.update(c)
        n = sum(c.values())
        lines.append(f"| {module} | {n} | {c['killed']} | {c['survived']} | "
                     f"{100 * c['killed'] / n:.1f}% |")
    n = sum(total.values())
    summary = f"{total['killed']} of {n} killed ({100 * total['killed'] / max(n, 1):.1f}%)"
    lines += [f"| all | {n} | {total['killed']} | {total['survived']} | "
              f"{100 * total['killed'] / max(n, 1):.1f}% |", "", "## Survivors", ""]
    for r in sorted(found, key=lambda r: (r["module"], r["line"])):
        if r["outcome"] == "survived":
            lines += [f"### {r['module']}:{r['line']} ({r['operator']})", "", "```diff",
                      r["diff"].strip(), "```", ""]
    REPORT.write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="paxoskv-mutants-") as tmp:
        sessions, workers = [], []
        for n, (name, modules) in enumerate(GROUPS.items()):
            root = Path(tmp) / f"group{n}"
            root.mkdir()
            session = prepare(root, modules)
            progress(f"{name}: {counts(session)[1]} mutants")
            sessions.append(session)
            workers.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "cosmic-ray"), "exec",
                 str(root / "cosmic-ray.toml"), str(session)], cwd=root, env=_env(root),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while any(w.poll() is None for w in workers):
            time.sleep(30)
            done = [counts(s) for s in sessions]
            progress(", ".join(f"{name} {d}/{t}" for name, (d, t) in zip(GROUPS, done,
                                                                          strict=True)))
        if any(w.returncode for w in workers):
            progress(f"cosmic-ray exited with {[w.returncode for w in workers]}")
            return 1
        summary = write_report([r for s in sessions for r in results(s)],
                               time.monotonic() - started)
    progress(f"{summary}; survivors in {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
