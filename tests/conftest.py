from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness import LocalCluster, running


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3)


@pytest.fixture
def cluster5(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 5)


# -- the local Kubernetes (tests/k8s/) -----------------------------------------------------

if TYPE_CHECKING:
    from tests.k8s.cluster import ClusterInfo


@dataclass
class K8s:
    info: ClusterInfo
    image: str  # the node image's reference, loaded into the cluster

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        done = self.info.kubectl_run(*args, input=stdin, capture_output=True, text=True,
                                     timeout=180)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return str(done.stdout) + ("" if check else str(done.stderr))


# Set to use a cluster already started with `make k8s-up` (left running afterwards).
K8S_EXISTING = "PAXOSKV_K8S_EXISTING"


@pytest.fixture(scope="session")
def k8s() -> Iterator[K8s]:
    """The local Kubernetes with its DNS and volume stand-ins and the node image loaded;
    started for the session (built first if need be) and stopped after it, with the
    check that nothing of it is left on the machine."""
    from tests.k8s import addons, cluster, images

    existing = bool(os.environ.get(K8S_EXISTING))
    info = cluster.info() if existing else cluster.up()
    try:
        built = images.ensure_images()
        cluster.load_image(built.archives["paxoskv"])
        started = addons.start(info)
        try:
            yield K8s(info, built.reference)
        finally:
            started.stop()
    finally:
        if not existing:
            cluster.down()


@pytest.fixture
def namespace(k8s: K8s, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards; on failure, its pods' status,
    events and logs are printed first."""
    name = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    k8s.kubectl("create", "namespace", name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for what in (["get", "pods,pvc,svc,endpoints", "-o", "wide"],
                     ["get", "events", "--sort-by=.lastTimestamp"],
                     ["logs", "-l", "app.kubernetes.io/name=paxoskv", "--all-containers",
                      "--prefix", "--tail=30"]):
            print(k8s.kubectl("-n", name, *what, check=False))
    k8s.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # for the namespace fixture's post-mortem
    return report
