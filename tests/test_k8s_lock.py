"""The local cluster's lock (tests/k8s/lock.py): `up`, `down` and `status` of a state
directory whose lock another process holds, through the entry point (`python -m
tests.k8s.cluster`), with the lock held by a small process and no cluster started; a holder
that ends (killed) frees it. And `up` refuses while a cluster of another state directory
runs. Each case stops before anything is started, stopped or wiped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s import lock
from tests.k8s.layout import MEMBER_ENV, STATE_MARK

REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time; from pathlib import Path; from tests.k8s import lock; "
        "assert lock.take(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_MARK).touch()
    return state


@pytest.fixture
def holder(state: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds the state's lock."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait()


def cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.k8s.cluster", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_up_and_down_refuse_a_cluster_another_process_holds_and_name_it(
        state: Path, holder: subprocess.Popen[str]) -> None:
    for command, doing in (("up", "starting"), ("down", "stopping")):
        done = cluster(command, "--state", str(state))
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"error: not {doing} the cluster at {state}: it is in use by pid {holder.pid} (" \
            in lines[0], lines[0]
        assert "lock.take" in lines[0], lines[0]  # its command line
    shown = cluster("status", "--state", str(state))
    assert shown.returncode == 1
    assert f"held by pid {holder.pid} (" in shown.stdout.splitlines()[0], shown.stdout
    # Nothing was started, stopped or wiped: the state is as it was.
    assert sorted(os.listdir(state)) == sorted([STATE_MARK, lock.LOCK_NAME])

    # A holder that crashes frees the lock: the next one takes it.
    holder.kill()
    holder.wait()
    assert lock.owner(state) is None
    assert lock.take(state) is not None
    try:
        assert lock.owner(state) is None  # held here: nobody else's
    finally:
        lock.release(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="up checks for root before this")
def test_up_refuses_while_a_cluster_of_another_state_directory_runs(
        state: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-state"
    # A process marked as a daemon of a cluster at `other`, as `up` marks them.
    member = subprocess.Popen(["sleep", "30"], env={**os.environ, MEMBER_ENV: str(other)})
    try:
        done = cluster("up", "--state", str(state))
    finally:
        member.kill()
        member.wait()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "another local cluster runs on this machine" in lines[0], lines[0]
    assert f"{other} (pids {member.pid}" in lines[0], lines[0]
    assert lock.owner(state) is None  # given back
