"""The Helm chart (charts/paxoskv) without a cluster: it lints, its rendered manifests
validate for current Kubernetes versions, bad values are refused by its schema with the
path named, and it installs what deploy/paxoskv.yaml installs (same CRD, same rules)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from paxoskv_operator import install
from tests.k8s import helm

CHART = Path(__file__).resolve().parents[1] / "charts" / "paxoskv"


@pytest.fixture(scope="module")
def helm_binary() -> Iterator[Path]:
    yield helm.ensure_helm()


def run_helm(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = Path("/tmp/paxoskv-helm-home")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def rendered(binary: Path, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "kv", str(CHART), "--namespace", "apps", "--include-crds"]
    for s in sets:
        args += ["--set", s]
    done = run_helm(binary, *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_the_chart_lints(helm_binary: Path) -> None:
    done = run_helm(helm_binary, "lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_its_manifests_validate_for_current_kubernetes_versions(helm_binary: Path) -> None:
    versions = sorted(set(kubernetes_validate.utils.all_versions()),
                      key=lambda v: tuple(int(p) for p in v.split(".")))[-3:]
    variants = [(), ("operator.watchNamespaces={apps,team}", "cluster.create=false")]
    for sets in variants:
        for manifest in rendered(helm_binary, *sets):
            if manifest["kind"] in ("CustomResourceDefinition", "PaxosKVCluster"):
                continue  # not in the bundled schemas (the CRD is checked by the server)
            for version in versions:
                kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(("value", "message"), [
    ("cluster.replicas=-1", "at '/cluster/replicas': minimum: got -1, want 1"),
    ("cluster.replicas=10", "at '/cluster/replicas': maximum: got 10, want 9"),
    ("cluster.replicas=three", "at '/cluster/replicas': got string, want integer"),
    ("replicas=3", "additional properties 'replicas' not allowed"),
    ("cluster.storage.reclaimPolicy=Recycle", "at '/cluster/storage/reclaimPolicy'"),
    ("operator.replicas=0", "at '/operator/replicas': minimum: got 0, want 1"),
])
def test_bad_values_are_refused_with_their_path(helm_binary: Path, value: str,
                                                message: str) -> None:
    done = run_helm(helm_binary, "template", "kv", str(CHART), "--set", value)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_it_installs_the_same_crd_and_rules_as_deploy(helm_binary: Path) -> None:
    assert (CHART / "crds" / "paxoskvcluster.yaml").read_text() == install.CRD.read_text()
    objects = rendered(helm_binary)
    roles = {m["metadata"]["name"]: m["rules"] for m in objects if m["kind"] == "ClusterRole"}
    assert roles == {"kv-paxoskv": install.RULES,
                     "kv-paxoskv-discovery": install.DISCOVERY_RULES}
    lease = next(m for m in objects if m["kind"] == "Role")
    assert lease["rules"] == install.LEASE_RULES
    namespaced = rendered(helm_binary, "operator.watchNamespaces={apps,team}")
    assert sorted(m["metadata"]["namespace"] for m in namespaced if m["kind"] == "Role"
                  and m["rules"] == install.RULES) == ["apps", "team"]
    deployment = next(m for m in namespaced if m["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--namespace=apps", "--namespace=team"]
    labels = deployment["metadata"]["labels"]
    assert labels["helm.sh/chart"] == "paxoskv-0.1.0"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
