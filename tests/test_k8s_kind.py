"""`make kind-e2e` (tests/k8s/kind.py) without Docker: stand-ins for docker, kind and kubectl
on the PATH record what it runs. What is checked is the order of the steps and what the tests
get; kind itself cannot run on this machine (no Docker daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.k8s import kind

REPO = Path(__file__).resolve().parents[1]

# Each stand-in logs its name and arguments; `kind get clusters` lists $EXISTING.
STAND_IN = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $1 $2" in
  "kind get clusters") [ -n "$EXISTING" ] && echo "$EXISTING" ;;
  "kind get kubeconfig") echo "apiVersion: v1  # of $4" ;;
esac
exit 0
"""

# What the tests are given, checked by a test run in their place.
PROBE = """
import os
from pathlib import Path

def test_the_environment_names_the_cluster_and_the_image():
    kubeconfig = Path(os.environ["PAXOSKV_K8S_KUBECONFIG"])
    assert kubeconfig.read_text() == "apiVersion: v1  # of e2e-test\\n"
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert os.environ["PAXOSKV_IMAGE"] == "paxoskv:probe"
"""


def e2e(tmp_path: Path, tools: tuple[str, ...], *args: str, existing: str = ""
        ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text(STAND_IN)
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "test_probe.py").write_text(PROBE)
    calls = tmp_path / "calls"
    calls.touch()
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls),
           "EXISTING": existing}
    done = subprocess.run(
        [sys.executable, "-m", "tests.k8s.kind", "--name", "e2e-test", "--image",
         "paxoskv:probe", *args, "--", "-p", "no:cacheprovider", "-q",
         str(tmp_path / "test_probe.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return done, calls.read_text().splitlines()


def test_it_creates_builds_loads_tests_and_deletes(tmp_path: Path) -> None:
    done, calls = e2e(tmp_path, ("docker", "kind", "kubectl"))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "1 passed" in done.stdout
    assert calls == [
        "docker info --format {{.ServerVersion}}",
        "kind get clusters",
        f"kind create cluster --name e2e-test --image {kind.NODE_IMAGE} --wait 180s",
        f"docker build -t paxoskv:probe -f {REPO / 'Dockerfile'} {REPO}",
        "kind load docker-image paxoskv:probe --name e2e-test",
        "kind get kubeconfig --name e2e-test",
        "kind delete cluster --name e2e-test",
    ]


def test_an_existing_cluster_is_used_and_left_running(tmp_path: Path) -> None:
    done, calls = e2e(tmp_path, ("docker", "kind", "kubectl"), existing="e2e-test")
    assert done.returncode == 0, done.stderr + done.stdout
    assert not [c for c in calls if c.startswith(("kind create", "kind delete"))], calls
    assert "kind load docker-image paxoskv:probe --name e2e-test" in calls


def test_without_kind_it_says_so_and_runs_nothing(tmp_path: Path) -> None:
    done, calls = e2e(tmp_path, ("docker", "kubectl"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "kind-e2e: error: kind not found on the PATH: needed to run the cluster "
        "(https://kind.sigs.k8s.io/)")
    assert calls == []
