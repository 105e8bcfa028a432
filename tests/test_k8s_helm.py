"""The Helm chart on the local Kubernetes (1.20): installed with helm 4 from the image
built here, its operator (watching the test's namespace only, so with Roles) runs a
cluster that becomes Ready; `helm test` passes; `helm upgrade` resizes it; `helm
uninstall` removes what it installed and keeps the data claims, unless told otherwise."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import K8s
from tests.k8s import helm
from tests.test_k8s_node import wait_for
from tests.test_k8s_operator import paxoskv, whole

# Each test's namespace is deleted in its teardown, which waits up to 120 s for its
# pods to go (longer on a loaded machine): the default limit of 120 s would cut it short.
pytestmark = pytest.mark.timeout(480)

CHART = Path(__file__).resolve().parents[1] / "charts" / "paxoskv"


class Helm:
    def __init__(self, k8s: K8s, namespace: str) -> None:
        self.binary = helm.ensure_helm()
        home = Path("/tmp/paxoskv-helm-home")
        self.env = {**os.environ, "KUBECONFIG": str(k8s.kubeconfig),
                    "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}
        repository, _, tag = k8s.image.rpartition(":")
        self.image = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
        self.namespace = namespace

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        done = subprocess.run([str(self.binary), *args, "--namespace", self.namespace],
                              capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout + ("" if check else done.stderr)


@pytest.fixture
def chart(k8s: K8s, namespace: str) -> Helm:
    return Helm(k8s, namespace)


def test_helm_installs_tests_resizes_and_uninstalls(k8s: K8s, namespace: str,
                                                    chart: Helm) -> None:
    scope = ["--set", f"operator.watchNamespaces={{{namespace}}}"]
    # What it renders is accepted by the server (the CRD's kind aside, which is not
    # installed yet; helm installs crds/ first).
    rendered = chart("template", "kv", str(CHART), "--validate", *chart.image, *scope,
                     "--set", "cluster.create=false")
    k8s.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)

    chart("install", "kv", str(CHART), *chart.image, *scope, "--wait", "--timeout", "180s")
    wait_for(lambda: whole(k8s, namespace, 3, name="kv"), 240, "kv never Ready with 3")
    # On 1.20 the operator's budget is policy/v1beta1 (the server has no policy/v1).
    assert k8s.kubectl("-n", namespace, "get", "poddisruptionbudgets.v1beta1.policy",
                       "kv-paxoskv", "-o", "name").strip()
    assert "Phase:          Succeeded" in chart("test", "kv", timeout=180)
    paxoskv(k8s, namespace, "kv-0", "put", "kept", "across-installs")

    chart("upgrade", "kv", str(CHART), "--reuse-values", "--set", "cluster.replicas=5",
          "--wait")
    wait_for(lambda: whole(k8s, namespace, 5, name="kv"), 300, "kv never Ready with 5")

    chart("uninstall", "kv", "--wait", "--timeout", "180s")
    left = k8s.kubectl("-n", namespace, "get", "all,secrets,pdb,roles,rolebindings", "-o",
                       "name", "-l", "app.kubernetes.io/instance=kv")
    wait_for(lambda: k8s.kubectl("-n", namespace, "get", "pods,statefulsets,deployments",
                                 "-o", "name") == "", 120, f"left after uninstall: {left}")
    assert k8s.kubectl("get", "clusterroles", "-o", "name", "-l",
                       "app.kubernetes.io/instance=kv") == ""
    claims = k8s.kubectl("-n", namespace, "get", "pvc", "-o",
                         "jsonpath={.items[*].metadata.name}").split()
    assert sorted(claims) == [f"data-kv-{i}" for i in range(5)]

    # Installed again, the cluster finds its data; with reclaimPolicy Delete, uninstall
    # takes the claims too.
    chart("install", "kv", str(CHART), *chart.image, *scope, "--set", "cluster.replicas=5",
          "--set", "cluster.storage.reclaimPolicy=Delete", "--wait", "--timeout", "180s")
    wait_for(lambda: whole(k8s, namespace, 5, name="kv"), 240, "kv never Ready again")
    assert paxoskv(k8s, namespace, "kv-4", "get", "kept", "-o", "value") == "across-installs"
    wait_for(lambda: all(json.loads(k8s.kubectl("-n", namespace, "get", "pvc", c, "-o",
                                                "json"))["metadata"].get("ownerReferences")
                         for c in claims), 30, "the claims were not given their owner")
    chart("uninstall", "kv", "--wait", "--timeout", "180s")
    wait_for(lambda: k8s.kubectl("-n", namespace, "get", "pvc", "-o", "name") == "", 120,
             "claims left after uninstall with reclaimPolicy Delete")
