from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import LocalCluster, running
from tests.k8s.manifests import process_killer


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3)


@pytest.fixture
def cluster5(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 5)


# -- Kubernetes: the local one (tests/k8s/) or any other ------------------------------------

# Set to use a cluster already started with `make k8s-up` (left running afterwards).
K8S_EXISTING = "PAXOSKV_K8S_EXISTING"
# Set to the kubeconfig of any other cluster (kind, say: `make kind-e2e`) to run the
# Kubernetes tests there, with the kubectl on the PATH; that cluster brings its own DNS and
# default StorageClass, and PAXOSKV_IMAGE names the node image already loaded into it.
K8S_KUBECONFIG = "PAXOSKV_K8S_KUBECONFIG"
IMAGE = "PAXOSKV_IMAGE"


@dataclass
class K8s:
    """The cluster as the tests see it: kubectl, and the node image's reference."""

    kubectl_command: list[str]  # kubectl and the flags each call takes
    kubeconfig: Path
    image: str  # the node image's reference, loaded into the cluster

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        done = subprocess.run([*self.kubectl_command, *args], input=stdin, capture_output=True,
                              text=True, timeout=180,
                              env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout + ("" if check else done.stderr)

    def kill_container(self, namespace: str, pod: str) -> list[int]:
        """SIGKILL the processes of a pod's (first) container, from its node: a pod of the
        node image with the node's PID namespace finds them by the container's ID in their
        cgroup (PID 1 of a container ignores signals sent from inside it). Their PIDs."""
        spec = json.loads(self.kubectl("-n", namespace, "get", "pod", pod, "-o", "json"))
        container = spec["status"]["containerStatuses"][0]["containerID"].split("://")[-1]
        killer = process_killer(f"kill-{pod}-{container[:8]}", namespace, self.image,
                                spec["spec"]["nodeName"], container)
        self.kubectl("apply", "-f", "-", stdin=json.dumps(killer))
        name = killer["metadata"]["name"]
        deadline = time.monotonic() + 60
        while (phase := self.kubectl("-n", namespace, "get", "pod", name, "-o",
                                     "jsonpath={.status.phase}")) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, f"{name} did not finish (phase {phase!r})"
            time.sleep(0.5)
        said = self.kubectl("-n", namespace, "logs", name).strip()
        self.kubectl("-n", namespace, "delete", "pod", name, "--wait=false")
        assert phase == "Succeeded", f"{name}: {said}"
        return [int(pid) for pid in said.split()]

    def run_pod(self, namespace: str, name: str, command: list[str], claim: str = "",
                within: float = 90) -> str:
        """Run `command` to its end in a pod of the node image (as the image's non-root
        user), with the PersistentVolumeClaim `claim` mounted at /data if given; what it
        printed. AssertionError if it fails."""
        container: dict[str, object] = {"name": "run", "image": self.image,
                                        "imagePullPolicy": "Never", "command": command}
        spec: dict[str, object] = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                                   "containers": [container]}
        if claim:
            container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
            spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        self.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": namespace}}))
        deadline = time.monotonic() + within
        while (phase := self.kubectl("-n", namespace, "get", "pod", name, "-o",
                                     "jsonpath={.status.phase}")) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, f"{name} did not finish (phase {phase!r})"
            time.sleep(0.5)
        said = self.kubectl("-n", namespace, "logs", name).strip()
        assert phase == "Succeeded", f"{name}: {said}"
        return said


def external_cluster(kubeconfig: str) -> K8s:
    """The cluster of another kubeconfig, checked to answer."""
    kubectl, image = shutil.which("kubectl"), os.environ.get(IMAGE, "")
    if kubectl is None:
        pytest.fail(f"{K8S_KUBECONFIG} is set but there is no kubectl on the PATH", pytrace=False)
    if not image:
        pytest.fail(f"{K8S_KUBECONFIG} is set but {IMAGE} is not: name the node image "
                    "loaded into that cluster (see `make kind-e2e`)", pytrace=False)
    if not Path(kubeconfig).is_file():
        pytest.fail(f"{K8S_KUBECONFIG}={kubeconfig}: no such file", pytrace=False)
    cluster = K8s([kubectl], Path(kubeconfig).absolute(), image)
    answer = cluster.kubectl("get", "namespace", "default", "-o", "name", check=False)
    if not answer.startswith("namespace/default"):
        reason = (answer.strip().splitlines() or ["?"])[-1]
        pytest.fail(f"the cluster of {K8S_KUBECONFIG}={kubeconfig} does not answer: {reason}",
                    pytrace=False)
    return cluster


_K8S_NOT_BUILT: list[str] = []  # why building before the tests failed, if it did


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """Before the tests and their time limits, when a selected test uses the local Kubernetes:
    build what it needs (from cold, the binaries take about 10 minutes and the images a few;
    once cached, a few seconds of checks)."""
    if (not session.config.option.collectonly and not os.environ.get(K8S_KUBECONFIG)
            and any(item.get_closest_marker("k8s") for item in session.items)):
        from tests.k8s import build, cluster, images

        capture = session.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():  # its progress lines, as they come
            try:
                cluster.prepare()
                images.ensure_images()
            except (build.BuildError, cluster.ClusterError, OSError) as e:
                _K8S_NOT_BUILT.append(str(e))
    return (yield)


@pytest.fixture(scope="session")
def k8s() -> Iterator[K8s]:
    """The cluster the Kubernetes tests run on. By default the local Kubernetes (with its DNS
    and volume stand-ins, which `up` starts) and the node image loaded; started for the
    session (built first if need be), held by it (its lock: another session or `make k8s-up`
    meanwhile is refused rather than stopping it) and stopped after it, with the check that
    nothing of it is left on the machine. With PAXOSKV_K8S_EXISTING, the cluster `make k8s-up`
    started, left running. With PAXOSKV_K8S_KUBECONFIG, another cluster, used as it is."""
    if kubeconfig := os.environ.get(K8S_KUBECONFIG):
        yield external_cluster(kubeconfig)
        return
    if _K8S_NOT_BUILT:
        pytest.fail(f"the local Kubernetes: {_K8S_NOT_BUILT[0]}", pytrace=False)
    from tests.k8s import cluster, images

    existing = bool(os.environ.get(K8S_EXISTING))
    try:
        info = cluster.attach() if existing else cluster.up()
    except cluster.ClusterError as e:
        pytest.fail(f"the local Kubernetes: {e}", pytrace=False)
    try:
        built = images.ensure_images()
        cluster.load_image(built.archives["paxoskv"])
        yield K8s(info.kubectl_command(), info.kubeconfig, built.reference)
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs a Kubernetes cluster (the `k8s` fixture); "
                            "`pytest -m k8s` runs these only, as `make kind-e2e` does")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "k8s" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.k8s)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # for the namespace fixture's post-mortem
    return report
