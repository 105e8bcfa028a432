"""The operator on a real Kubernetes (tests/k8s/): installed from deploy/paxoskv.yaml's
objects, running as pods of the image built here, it runs PaxosKVCluster resources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paxoskv_operator import install
from tests.conftest import K8s
from tests.test_k8s_node import paxoskv, wait_for

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "paxoskv-system"


@pytest.fixture(scope="module")
def operator(k8s: K8s) -> Iterator[None]:
    """The CRD and the operator (two replicas, one acting), removed afterwards."""
    objects = [install.crd(), *install.objects(k8s.image, replicas=2)]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    k8s.kubectl("apply", "-f", "-", stdin=manifest)
    k8s.kubectl("wait", "--for=condition=Established", "crd/paxoskvclusters.paxoskv.io",
                "--timeout=60s")
    k8s.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/paxoskv-operator",
                "--timeout=120s")
    yield
    k8s.kubectl("delete", "-f", "-", "--wait=true", "--timeout=120s", "--ignore-not-found",
                stdin=manifest, check=False)


def resource(k8s: K8s, namespace: str, name: str = "example") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(k8s.kubectl("-n", namespace, "get", "paxoskvcluster",
                                                    name, "-o", "json"))
    return loaded


def condition(body: dict[str, Any], kind: str) -> str | None:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


def whole(k8s: K8s, namespace: str, members: int, name: str = "example") -> bool:
    body = resource(k8s, namespace, name)
    status = body.get("status") or {}
    return (condition(body, "Ready") == "True" and condition(body, "Quorate") == "True"
            and status.get("replicas") == members and status.get("readyReplicas") == members)


def test_the_crd_refuses_invalid_resources_with_a_clear_message(k8s: K8s, operator: None,
                                                                namespace: str) -> None:
    def refused(spec: dict[str, Any], *flags: str) -> str:
        body = {"apiVersion": "paxoskv.io/v1alpha1", "kind": "PaxosKVCluster",
                "metadata": {"name": "bad", "namespace": namespace}, "spec": spec}
        return k8s.kubectl("apply", *flags, "-f", "-", stdin=json.dumps(body), check=False)

    # The API server's own checks (kubectl's are off), then kubectl's, which also know
    # unknown fields (a 1.20 server prunes them; from 1.25 it refuses them too).
    server = "--validate=false"
    assert "spec.replicas in body should be greater than or equal to 1" in refused(
        {"replicas": 0}, server)
    assert "spec.replicas in body should be less than or equal to 9" in refused(
        {"replicas": 10}, server)
    assert 'spec.replicas in body must be of type integer: "string"' in refused(
        {"replicas": "three"}, server)
    assert "spec.storage.size in body should match" in refused({"storage": {"size": "lots"}},
                                                               server)
    assert 'spec.replicas: got "string", expected "integer"' in refused({"replicas": "3"})
    assert 'unknown field "replicaz"' in refused({"replicaz": 3})
    assert "No resources found" in k8s.kubectl("-n", namespace, "get", "paxoskvclusters",
                                               check=False)


def test_example_cluster_becomes_ready_and_serves_through_every_pod(
        k8s: K8s, operator: None, namespace: str) -> None:
    example = yaml.safe_load((REPO / "examples" / "cluster.yaml").read_text())
    k8s.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(example))
    wait_for(lambda: whole(k8s, namespace, 3), 240, "example never became Ready with 3")
    service = f"http://example.{namespace}.svc.cluster.local:7001"
    put = json.loads(paxoskv(k8s, namespace, "example-0", "put", "hello", "operator",
                             endpoint=service))
    assert (put["value"], put["created"]) == ("operator", True)
    for i in range(3):
        assert paxoskv(k8s, namespace, f"example-{i}", "get", "hello", "-o",
                       "value") == "operator"
    table = k8s.kubectl("-n", namespace, "get", "pkv")
    assert table.split("\n")[0].split() == ["NAME", "DESIRED", "READY", "QUORATE", "EPOCH",
                                            "AGE"], table
    assert table.split("\n")[1].split()[:4] == ["example", "3", "3", "True"], table
    assert k8s.kubectl("-n", namespace, "get", "pdb", "example", "-o",
                       "jsonpath={.spec.maxUnavailable}") == "1"
