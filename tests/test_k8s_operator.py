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


# Puts fresh keys through the client Service for as long as it runs, one line per
# acknowledged put ("ack KEY TOKEN") and per failure ("err KEY ...").
WRITER = """
import sys, time, httpx
url, n = sys.argv[1], 0
with httpx.Client(base_url=url, timeout=10) as http:
    while True:
        key, n = f"w{n}", n + 1
        try:
            answer = http.post("/v1/put", json={"key": key, "value": n})
            if answer.status_code == 200 and answer.json()["created"]:
                print("ack", key, answer.json()["token"], flush=True)
            else:
                print("err", key, answer.status_code, flush=True)
        except httpx.HTTPError as exc:
            print("err", key, type(exc).__name__, flush=True)
        time.sleep(0.05)
"""


def test_scaling_keeps_a_quorum_and_every_acknowledged_write(
        k8s: K8s, operator: None, namespace: str) -> None:
    example = yaml.safe_load((REPO / "examples" / "cluster.yaml").read_text())
    k8s.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(example))
    wait_for(lambda: whole(k8s, namespace, 3), 240, "example never became Ready with 3")
    service = f"http://example.{namespace}.svc.cluster.local:7001"
    k8s.kubectl("-n", namespace, "run", "writer", "--image", k8s.image, "--restart=Never",
                "--image-pull-policy=IfNotPresent", "--command", "--", "python3", "-c", WRITER,
                service)
    k8s.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/writer",
                "--timeout=60s")
    for size in (5, 3, 1, 3):
        k8s.kubectl("-n", namespace, "scale", "paxoskvcluster/example", f"--replicas={size}")
        wait_for(lambda s=size: whole(k8s, namespace, s), 300,
                 f"example never became Ready with {size}")
        status = resource(k8s, namespace)["status"]
        assert [m["name"] for m in status["members"]] == [
            f"example-{i}" for i in range(size)], status
        claims = k8s.kubectl("-n", namespace, "get", "pvc", "-o",
                             "jsonpath={.items[*].metadata.name}").split()
        wait_for(lambda s=size: sorted(k8s.kubectl(
            "-n", namespace, "get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"
        ).split()) == [f"data-example-{i}" for i in range(s)], 60,
            f"claims of removed members left: {claims}")
    k8s.kubectl("-n", namespace, "delete", "pod", "writer", "--wait=false")
    log = k8s.kubectl("-n", namespace, "logs", "writer").split("\n")
    acked = [line.split()[1:] for line in log if line.startswith("ack ")]
    assert len(acked) > 100, f"the writer got few acknowledgements: {log[-20:]}"
    # Every acknowledged put survived: read back, through one member, in one request each.
    script = ("import sys, json, httpx\n"
              "keys = json.loads(sys.argv[2])\n"
              "with httpx.Client(base_url=sys.argv[1], timeout=10) as http:\n"
              "    print(json.dumps({k: http.post('/v1/get', json={'key': k}).json()['token']"
              " for k in keys}))\n")
    tokens = json.loads(k8s.kubectl("-n", namespace, "exec", "example-0", "--", "python3",
                                    "-c", script, service, json.dumps([k for k, _ in acked])))
    lost = {k: t for k, t in acked if tokens.get(k) != int(t)}
    assert not lost, f"{len(lost)} acknowledged puts lost or changed: {list(lost)[:10]}"
    events = k8s.kubectl("-n", namespace, "get", "events", "--field-selector",
                         "involvedObject.kind=PaxosKVCluster", "-o",
                         "jsonpath={.items[*].reason}").split()
    for reason in ("Bootstrap", "Add", "AddDone", "Remove", "RemoveDone", "ScaleStatefulSet",
                   "DeleteClaim"):
        assert reason in events, f"no {reason} event: {sorted(set(events))}"
