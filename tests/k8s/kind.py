"""The Kubernetes tests on kind, for users who have Docker: `make kind-e2e`.

    .venv/bin/python -m tests.k8s.kind [--name NAME] [--node-image IMAGE] [--image REF]
                                       [--keep] [-- PYTEST ARGS]

What: creates a kind cluster NAME (unless one of that name exists: then it is used and
left running) from a kindest/node image, builds the repo's Dockerfile with `docker build`,
loads the image into the cluster with `kind load docker-image`, and runs pytest on it:
by default `-m k8s tests`, every test that uses the `k8s` fixture (tests/conftest.py), with
PAXOSKV_K8S_KUBECONFIG naming the cluster's kubeconfig and PAXOSKV_IMAGE the image. The
cluster it created is deleted afterwards unless `--keep`. kind brings its own DNS (CoreDNS)
and default StorageClass ("standard", local-path): the local cluster's stand-ins are not
started. Needs docker (with a daemon), kind and kubectl on the PATH.

This module does not run on the machines the project is developed on (no Docker daemon):
tests/test_k8s_kind.py checks the commands it runs, with stand-ins for docker and kind.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "paxoskv-e2e"
# The image kind v0.22.0 made its default (its release notes give the digest).
NODE_IMAGE = ("kindest/node:v1.29.2@sha256:"
              "51a1434a5397193442f0be2a297b488b6c919ce8a3931be0ce822606ea5ca245")
IMAGE = "paxoskv:e2e"
PYTEST_ARGS = ("-m", "k8s", "tests")


class KindError(Exception):
    """An expected failure, said in one line."""


def say(message: str) -> None:
    print(f"kind-e2e: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], capture: bool = False) -> str:
    """Run a step, its output shown (or returned with `capture`); KindError if it fails."""
    say(f"$ {shlex.join(argv)}")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, text=True,
                              stdout=subprocess.PIPE if capture else None)
    except FileNotFoundError:
        raise KindError(f"{argv[0]} not found on the PATH") from None
    if done.returncode != 0:
        raise KindError(f"`{shlex.join(argv)}` failed (exit {done.returncode})")
    return done.stdout if capture else ""


def check_tools() -> None:
    for tool, why in (("docker", "to build the image (https://docs.docker.com/get-docker/)"),
                      ("kind", "to run the cluster (https://kind.sigs.k8s.io/)"),
                      ("kubectl", "for the tests (https://kubernetes.io/docs/tasks/tools/)")):
        if shutil.which(tool) is None:
            raise KindError(f"{tool} not found on the PATH: needed {why}")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["?"])[-1]
        raise KindError(f"no Docker daemon answers (`docker info`: {reason})")


def e2e(name: str, node_image: str, image: str, keep: bool, pytest_args: list[str]) -> int:
    """The whole run; pytest's exit status."""
    check_tools()
    created = name not in run(["kind", "get", "clusters"], capture=True).split()
    if created:
        run(["kind", "create", "cluster", "--name", name, "--image", node_image,
             "--wait", "180s"])
    else:
        say(f"using the existing kind cluster {name} (left running)")
    try:
        run(["docker", "build", "-t", image, "-f", str(REPO / "Dockerfile"), str(REPO)])
        run(["kind", "load", "docker-image", image, "--name", name])
        with tempfile.TemporaryDirectory(prefix="paxoskv-kind-") as scratch:
            kubeconfig = Path(scratch) / "kubeconfig"
            kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", name],
                                      capture=True))
            kubeconfig.chmod(0o600)
            env = {**os.environ, "PAXOSKV_K8S_KUBECONFIG": str(kubeconfig),
                   "PAXOSKV_IMAGE": image}
            argv = [sys.executable, "-m", "pytest", *pytest_args]
            say(f"$ PAXOSKV_K8S_KUBECONFIG={kubeconfig} PAXOSKV_IMAGE={image} "
                f"{shlex.join(argv)}")
            return subprocess.run(argv, cwd=REPO, env=env).returncode
    finally:
        if created and not keep:
            run(["kind", "delete", "cluster", "--name", name])
        elif created:
            say(f"kept: kind delete cluster --name {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.kind", description=(
        "Run the Kubernetes tests on a kind cluster (needs Docker, kind and kubectl)."))
    parser.add_argument("--name", default=CLUSTER, help=f"kind cluster (default: {CLUSTER})")
    parser.add_argument("--node-image", default=NODE_IMAGE,
                        help=f"kindest/node image (default: {NODE_IMAGE})")
    parser.add_argument("--image", default=IMAGE,
                        help=f"the node image's reference to build and load (default: {IMAGE})")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster this run created running")
    parser.add_argument("pytest_args", nargs="*", help="pytest's arguments (default: "
                        f"{' '.join(PYTEST_ARGS)}), after --")
    args = parser.parse_args(argv)
    try:
        return e2e(args.name, args.node_image, args.image, args.keep,
                   args.pytest_args or list(PYTEST_ARGS))
    except KindError as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
