"""The operator on a real Kubernetes (tests/k8s/): installed from deploy/paxoskv.yaml's
objects, running as pods of the image built here, it runs PaxosKVCluster resources."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paxoskv_operator import install
from tests.conftest import K8s
from tests.faults.checker import Op, check
from tests.test_k8s_node import paxoskv as node_paxoskv
from tests.test_k8s_node import wait_for

# Each test's namespace is deleted in its teardown, which waits up to 120 s for its
# pods to go (longer on a loaded machine): the default limit of 120 s would cut it short.
pytestmark = pytest.mark.timeout(480)

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "paxoskv-system"
# A node pod's own node: TLS and tokens are on by default, and its environment has
# the CA and the cluster's token.
LOCAL = "https://127.0.0.1:7001"


def paxoskv(k8s: K8s, namespace: str, pod: str, *args: str, endpoint: str = LOCAL) -> str:
    return node_paxoskv(k8s, namespace, pod, *args, endpoint=endpoint)


def client_pod(namespace: str, name: str, image: str, command: list[str],
               cluster: str = "example") -> dict[str, Any]:
    """An application pod with the cluster's CA and token, as the README shows."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{
                         "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                         "command": command,
                         "env": [{"name": "PAXOSKV_CACERT", "value": "/etc/paxoskv/ca.crt"},
                                 {"name": "PAXOSKV_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                                     "name": f"{cluster}-tokens", "key": "token"}}}],
                         "volumeMounts": [{"name": "ca", "mountPath": "/etc/paxoskv"}]}],
                     "volumes": [{"name": "ca", "secret": {
                         "secretName": f"{cluster}-tls",
                         "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}


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
    service = f"https://example.{namespace}.svc.cluster.local:7001"
    put = json.loads(paxoskv(k8s, namespace, "example-0", "put", "hello", "operator",
                             endpoint=service))
    assert (put["value"], put["created"]) == ("operator", True)
    for i in range(3):
        assert paxoskv(k8s, namespace, f"example-{i}", "get", "hello", "-o",
                       "value") == "operator"
    # TLS and tokens are on by default: without the token, or without the CA, refused.
    anonymous = k8s.kubectl("-n", namespace, "exec", "example-0", "--", "env", "-u",
                            "PAXOSKV_AUTH_TOKEN", "paxoskv", "get", "hello", check=False)
    assert "unauthorized" in anonymous, anonymous
    untrusting = k8s.kubectl("-n", namespace, "exec", "example-0", "--", "env", "-u",
                             "PAXOSKV_CACERT", "paxoskv", "get", "hello", check=False)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting, untrusting
    assert k8s.kubectl("-n", namespace, "get", "secret", "example-tls", "-o",
                       "jsonpath={.type}") == "kubernetes.io/tls"
    table = k8s.kubectl("-n", namespace, "get", "pkv")
    assert table.split("\n")[0].split() == ["NAME", "DESIRED", "READY", "QUORATE", "EPOCH",
                                            "AGE"], table
    assert table.split("\n")[1].split()[:4] == ["example", "3", "3", "True"], table
    assert k8s.kubectl("-n", namespace, "get", "pdb", "example", "-o",
                       "jsonpath={.spec.maxUnavailable}") == "1"


# The workload of the fault runs' checker (tests/faults/checker.py), from inside the
# cluster: two threads through the client Service, each putting fresh keys and, on ten
# shared keys, putting, reading and deleting by token; one JSON line per operation, with
# its invoke and complete times (the pods share the machine's clock with the test).
# An error answer or no answer is an unknown outcome (it may have taken effect).
WORKLOAD = """
import json, os, random, sys, threading, time, httpx
url, lock = sys.argv[1], threading.Lock()
secure = {"verify": os.environ["PAXOSKV_CACERT"],
          "headers": {"Authorization": "Bearer " + os.environ["PAXOSKV_AUTH_TOKEN"]}}
def run(process):
    rng, n = random.Random(process), 0
    with httpx.Client(base_url=url, timeout=10, **secure) as http:
        while True:
            n += 1
            shared = f"s{rng.randrange(10)}"
            kind, key, body = rng.choice([
                ("put", f"w{process}-{n}", {}), ("put", shared, {}), ("get", shared, {}),
                ("delete", shared, {"token": rng.randrange(1, 8)})])
            op = {"process": process, "kind": kind, "key": key, "invoke": time.time()}
            if kind == "put":
                body["value"] = op["value"] = f"{process}-{n}"
            elif kind == "delete":
                op["token_arg"] = body["token"]
            try:
                answer = http.post(f"/v1/{kind}", json={"key": key, **body})
                result = answer.json()
                if answer.status_code == 200:
                    op.update(outcome="ok", found=result["found"], token=result["token"],
                              seen_value=result.get("value"),
                              deleted=result.get("deleted", False))
                else:
                    op.update(outcome="unknown", error=result["error"]["code"])
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                op.update(outcome="unknown", error=type(exc).__name__)
            op["complete"] = time.time() if op["outcome"] == "ok" else None
            with lock:
                print(json.dumps(op), flush=True)
            time.sleep(0.02)
for process in (1, 2):
    threading.Thread(target=run, args=(process,), daemon=True).start()
time.sleep(1e6)
"""
# Reads every key given once, recorded the same way (process 0).
FINAL_READS = """
import json, os, sys, time, httpx
with httpx.Client(base_url=sys.argv[1], timeout=10, verify=os.environ["PAXOSKV_CACERT"],
                  headers={"Authorization": "Bearer " + os.environ["PAXOSKV_AUTH_TOKEN"]}
                  ) as http:
    for key in json.loads(sys.argv[2]):
        op = {"process": 0, "kind": "get", "key": key, "invoke": time.time()}
        result = http.post("/v1/get", json={"key": key}).json()
        op.update(outcome="ok", found=result["found"], token=result["token"],
                  seen_value=result.get("value"), complete=time.time())
        print(json.dumps(op))
"""


def history(lines: list[str]) -> list[Op]:
    ops = []
    for line in lines:
        if line.startswith("{"):
            raw = json.loads(line)
            raw["complete"] = math.inf if raw.get("complete") is None else raw["complete"]
            ops.append(Op(**raw))
    return ops


def test_scaling_keeps_a_quorum_and_every_acknowledged_write(
        k8s: K8s, operator: None, namespace: str) -> None:
    example = yaml.safe_load((REPO / "examples" / "cluster.yaml").read_text())
    k8s.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(example))
    wait_for(lambda: whole(k8s, namespace, 3), 240, "example never became Ready with 3")
    service = f"https://example.{namespace}.svc.cluster.local:7001"
    writer = client_pod(namespace, "writer", k8s.image, ["python3", "-c", WORKLOAD, service])
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(writer))
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
    ops = history(k8s.kubectl("-n", namespace, "logs", "writer").split("\n"))
    acked = sum(op.outcome == "ok" and op.kind == "put" for op in ops)
    assert acked > 100, f"the workload got few acknowledged puts: {ops[-5:]}"
    # Every key read once more at the end: an acknowledged put lost would be a
    # generation going back in real time.
    keys = sorted({op.key for op in ops})
    ops += history(k8s.kubectl("-n", namespace, "exec", "example-0", "--", "python3", "-c",
                               FINAL_READS, service, json.dumps(keys)).split("\n"))
    report = check(ops)
    assert report.ok, f"{len(report.anomalies)} anomalies: {report.anomalies[:5]}"
    assert report.operations > 300, report.operations
    events = k8s.kubectl("-n", namespace, "get", "events", "--field-selector",
                         "involvedObject.kind=PaxosKVCluster", "-o",
                         "jsonpath={.items[*].reason}").split()
    for reason in ("Bootstrap", "Add", "AddDone", "Remove", "RemoveDone", "ScaleStatefulSet",
                   "DeleteClaim"):
        assert reason in events, f"no {reason} event: {sorted(set(events))}"


def apply_example(k8s: K8s, namespace: str, replicas: int = 3) -> None:
    example = yaml.safe_load((REPO / "examples" / "cluster.yaml").read_text())
    example["spec"]["replicas"] = replicas
    k8s.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(example))
    wait_for(lambda: whole(k8s, namespace, replicas), 240,
             f"example never became Ready with {replicas}")


def degraded_then_whole(k8s: K8s, namespace: str, members: int, within: float,
                        degraded: bool = True, then: Callable[[], object] = lambda: None
                        ) -> list[tuple[str | None, str | None]]:
    """(Degraded, Quorate) as sampled until the resource reports Degraded (unless
    `degraded` is false: a repair can be over before a sample sees it), then, after
    `then()`, until it is whole again."""
    samples: list[tuple[str | None, str | None]] = []

    def sample() -> tuple[str | None, str | None]:
        body = resource(k8s, namespace)
        samples.append((condition(body, "Degraded"), condition(body, "Quorate")))
        return samples[-1]

    if degraded:
        wait_for(lambda: sample()[0] == "True", 60, "never Degraded")
    then()
    wait_for(lambda: sample()[0] == "False" and whole(k8s, namespace, members), within,
             f"not whole again: {samples[-5:]}")
    return samples


def evict(k8s: K8s, namespace: str, pod: str) -> str:
    body = {"apiVersion": "policy/v1beta1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace}}
    return k8s.kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
                       "-f", "-", stdin=json.dumps(body), check=False)


def test_a_lost_pod_or_volume_degrades_then_heals_and_the_budget_keeps_a_quorum(
        k8s: K8s, operator: None, namespace: str) -> None:
    apply_example(k8s, namespace)
    paxoskv(k8s, namespace, "example-0", "put", "before", "faults")
    member_ids = {m["name"]: m["memberId"] for m in resource(k8s, namespace)["status"]["members"]}

    # A node pod killed: Degraded but Quorate, then whole again with the same member.
    # (Its node cordoned meanwhile: the pod would be back within a second or two, before
    # the operator's next pass could see it gone.)
    node = k8s.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
    k8s.kubectl("cordon", node)
    try:
        k8s.kubectl("-n", namespace, "delete", "pod", "example-2", "--grace-period=0",
                    "--force")
        samples = degraded_then_whole(k8s, namespace, 3, 180,
                                      then=lambda: k8s.kubectl("uncordon", node))
    finally:
        k8s.kubectl("uncordon", node)
    assert all(quorate == "True" for _, quorate in samples), samples
    after = {m["name"]: m["memberId"] for m in resource(k8s, namespace)["status"]["members"]}
    assert after == member_ids

    # Its volume lost too: replaced by a new member under the same name (removed, then
    # added back: over within seconds here, so Degraded may be gone before a sample).
    k8s.kubectl("-n", namespace, "delete", "pvc", "data-example-1", "--wait=false")
    k8s.kubectl("-n", namespace, "delete", "pod", "example-1", "--grace-period=0", "--force")
    wait_for(lambda: "removing member example-1 (lost its data)" in k8s.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "reason=RemoveDone", "-o",
        "jsonpath={.items[*].message}"), 120, "the member that lost its data was not removed")
    samples = degraded_then_whole(k8s, namespace, 3, 240, degraded=False)
    assert all(quorate == "True" for _, quorate in samples), samples
    after = {m["name"]: m["memberId"] for m in resource(k8s, namespace)["status"]["members"]}
    assert after.keys() == member_ids.keys() and after["example-1"] != member_ids["example-1"]
    assert after["example-0"] == member_ids["example-0"]
    assert paxoskv(k8s, namespace, "example-1", "get", "before", "--local", "-o",
                   "value") == "faults"

    # Evictions (what `kubectl drain` asks): one member may go, not a second meanwhile.
    first = evict(k8s, namespace, "example-0")
    assert '"status":"Success"' in first, first
    refused = evict(k8s, namespace, "example-1")
    assert "disruption budget" in refused, refused
    # (Too short an absence to be sure the operator's passes see it: no Degraded asked.)
    wait_for(lambda: whole(k8s, namespace, 3), 180, "not whole again after the eviction")


def test_the_operator_killed_mid_scale_up_finishes_the_job_and_paused_holds(
        k8s: K8s, operator: None, namespace: str) -> None:
    apply_example(k8s, namespace)
    paxoskv(k8s, namespace, "example-0", "put", "before", "scale")
    operators = ["-n", OPERATOR_NAMESPACE, "delete", "pod", "-l",
                 "app.kubernetes.io/name=paxoskv-operator", "--grace-period=0", "--force"]

    def events() -> list[str]:
        return k8s.kubectl("-n", namespace, "get", "events", "--field-selector",
                           "involvedObject.kind=PaxosKVCluster", "-o",
                           "jsonpath={.items[*].reason}").split()

    k8s.kubectl("-n", namespace, "scale", "paxoskvcluster/example", "--replicas=5")
    # Killed (every replica) once the StatefulSet grew, and again once the add started.
    for point in ("ScaleStatefulSet", "Add"):
        seen = events().count(point)
        wait_for(lambda p=point, n=seen: events().count(p) > n, 120, f"no {point} step")
        k8s.kubectl(*operators)
    wait_for(lambda: whole(k8s, namespace, 5), 300, "never whole with 5 after the kills")
    status = resource(k8s, namespace)["status"]
    assert [m["name"] for m in status["members"]] == [f"example-{i}" for i in range(5)]
    for i in range(5):
        assert paxoskv(k8s, namespace, f"example-{i}", "get", "before", "--local", "-o",
                       "value") == "scale"

    # Paused: a change of size waits until unpaused.
    k8s.kubectl("-n", namespace, "patch", "paxoskvcluster/example", "--type=merge", "-p",
                json.dumps({"spec": {"paused": True, "replicas": 3}}))
    wait_for(lambda: any(c["reason"] == "Paused" for c in resource(
        k8s, namespace)["status"]["conditions"]), 30, "the pause was not reported")
    time.sleep(10)
    assert resource(k8s, namespace)["status"]["replicas"] == 5
    assert k8s.kubectl("-n", namespace, "get", "statefulset", "example", "-o",
                       "jsonpath={.spec.replicas}") == "5"
    k8s.kubectl("-n", namespace, "patch", "paxoskvcluster/example", "--type=merge", "-p",
                json.dumps({"spec": {"paused": False}}))
    wait_for(lambda: whole(k8s, namespace, 3), 300, "never whole with 3 after unpausing")


def test_pods_bound_keys_end_with_their_readiness_and_deletion_collects_children(
        k8s: K8s, operator: None, namespace: str) -> None:
    apply_example(k8s, namespace)
    app = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "app", "namespace": namespace, "labels": {"paxoskv.io/cluster": "example"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "app", "image": k8s.image, "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-c", "import time; open('/tmp/ready', 'w'); "
                        "time.sleep(100000)"],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                               "periodSeconds": 1, "failureThreshold": 1}}]}}
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(app))
    k8s.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/app", "--timeout=60s")

    def bound_put(key: str) -> bool:
        answer = k8s.kubectl("-n", namespace, "exec", "example-0", "--", "paxoskv", "put",
                             key, "mine", "--node", "app", "--endpoints",
                             LOCAL, check=False)
        return '"created": true' in answer

    def gone(key: str) -> bool:
        answer = k8s.kubectl("-n", namespace, "exec", "example-0", "--", "paxoskv", "get",
                             key, "--endpoints", LOCAL, check=False)
        return '"found": false' in answer

    wait_for(lambda: bound_put("lock-1"), 30, "the app pod was never reported alive")
    assert not gone("lock-1")
    k8s.kubectl("-n", namespace, "exec", "app", "--", "rm", "/tmp/ready")  # NotReady
    wait_for(lambda: gone("lock-1"), 20, "the key outlived its pod's readiness")

    k8s.kubectl("-n", namespace, "exec", "app", "--", "touch", "/tmp/ready")  # Ready again
    wait_for(lambda: bound_put("lock-2"), 30, "the app pod was not reported alive again")
    k8s.kubectl("-n", namespace, "delete", "pod", "app", "--wait=false")
    wait_for(lambda: gone("lock-2"), 20, "the key outlived its pod")

    # Deleting the resource collects what it owns; the data claims stay (as a
    # StatefulSet's do), so that a resource made again under the name finds its data.
    k8s.kubectl("-n", namespace, "delete", "paxoskvcluster", "example", "--wait=true")
    wait_for(lambda: k8s.kubectl("-n", namespace, "get", "statefulsets,services,secrets,pdb",
                                 "-l", "app.kubernetes.io/instance=example", "-o", "name"
                                 ) == "", 60, "children left after the resource was deleted")
    assert len(k8s.kubectl("-n", namespace, "get", "pvc", "-o", "name").split()) == 3


def test_the_example_workers_elect_one_leader_that_moves_and_is_fenced(
        k8s: K8s, operator: None, namespace: str) -> None:
    """examples/leader-election: two workers with the sidecar elect exactly one leader;
    the leader's pod made NotReady, then a leader's pod deleted, moves leadership to
    another; the former leader's token is refused by the fenced resource."""
    apply_example(k8s, namespace)
    folder = REPO / "examples" / "leader-election"
    k8s.kubectl("-n", namespace, "create", "configmap", "leader-election",
                f"--from-file={folder / 'worker.py'}", f"--from-file={folder / 'fenced.py'}")
    manifests = (folder / "manifests.yaml").read_text().replace("paxoskv:0.1.0", k8s.image)
    k8s.kubectl("-n", namespace, "apply", "-f", "-", stdin=manifests)
    k8s.kubectl("-n", namespace, "rollout", "status", "deployment/leader-worker",
                "--timeout=120s")

    def leader() -> str:
        """The leader's pod, or "" while none leads."""
        said = k8s.kubectl("-n", namespace, "exec", "example-0", "--", "paxoskv", "get",
                           "leader", "--bucket", "leader-election", "--endpoints",
                           LOCAL, check=False)
        entry = json.loads(next(line for line in said.splitlines() if line.startswith("{")))
        return str(entry["value"]) if entry["found"] else ""

    def workers() -> list[str]:
        return sorted(k8s.kubectl("-n", namespace, "get", "pods", "-l", "app=leader-worker",
                                  "--field-selector=status.phase=Running", "-o",
                                  "jsonpath={.items[*].metadata.name}").split())

    def writes() -> list[dict[str, Any]]:
        fenced = k8s.kubectl("-n", namespace, "get", "pods", "-l", "app=fenced", "-o",
                             "jsonpath={.items[0].metadata.name}")
        raw = k8s.kubectl("-n", namespace, "exec", fenced, "--", "python3", "-c",
                          "import urllib.request as u; "
                          "print(u.urlopen('http://127.0.0.1:8080/log').read().decode())")
        loaded: list[dict[str, Any]] = json.loads(raw)
        return loaded

    wait_for(lambda: leader() in workers(), 60, "no leader elected")
    first = leader()
    wait_for(lambda: len(writes()) >= 3, 30, "the leader does no work")
    assert {w["writer"] for w in writes()} == {first}, writes()  # exactly one leader

    # The leader's pod NotReady: the operator reports it, its key ends, the other leads.
    k8s.kubectl("-n", namespace, "exec", first, "-c", "worker", "--", "rm", "/tmp/ready")
    started = time.monotonic()
    wait_for(lambda: leader() not in ("", first), 30, "leadership did not move")
    moved_after = time.monotonic() - started
    second = leader()
    assert second in workers()
    # The former leader, still running, is fenced off by its successor's token.
    wait_for(lambda: any(w["writer"] == first and not w["accepted"] for w in writes()), 30,
             "the former leader's token was not refused")
    tokens = {w["writer"]: w["token"] for w in writes() if w["accepted"]}
    assert tokens[second] > tokens[first]

    # The leader's pod deleted: leadership moves again (to the replacement pod: the
    # former leader is still NotReady, so it cannot win).
    k8s.kubectl("-n", namespace, "delete", "pod", second, "--wait=false")
    wait_for(lambda: leader() not in ("", first, second), 60, "leadership did not move")
    print(f"leadership moved {moved_after:.1f} s after the leader's pod turned NotReady")
