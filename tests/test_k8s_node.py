"""PaxosKV on a real Kubernetes (tests/k8s/: apiserver, kubelet, containerd, the node
image built here): a 3-replica StatefulSet of node pods from plain manifests (before the
operator), peers by stable DNS names, one PVC each, probes on /healthz and /readyz."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import K8s
from tests.k8s.manifests import UID, node_cluster

# Each test's namespace is deleted in its teardown, which waits up to 120 s for its
# pods to go (longer on a loaded machine): the default limit of 120 s would cut it short.
pytestmark = pytest.mark.timeout(480)

READY = "condition=Ready"


def apply_cluster(k8s: K8s, namespace: str, replicas: int = 3) -> None:
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "List",
         "items": node_cluster("kv", namespace, k8s.image, replicas)}))
    k8s.kubectl("-n", namespace, "rollout", "status", "statefulset/kv", "--timeout=120s")
    k8s.kubectl("-n", namespace, "wait", f"--for={READY}", "pod", "--all", "--timeout=120s")


def paxoskv(k8s: K8s, namespace: str, pod: str, *args: str,
            endpoint: str = "http://127.0.0.1:7001") -> str:
    return k8s.kubectl("-n", namespace, "exec", pod, "--", "paxoskv", *args,
                       "--endpoints", endpoint).strip()


def ready(k8s: K8s, namespace: str, pod: str) -> bool:
    raw = k8s.kubectl("-n", namespace, "get", "pod", pod, "-o", "json")
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in json.loads(raw)["status"].get("conditions", []))


def wait_for(check: object, within: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_node_pods_serve_survive_restarts_and_keep_their_data(k8s: K8s, namespace: str
                                                              ) -> None:
    apply_cluster(k8s, namespace)
    service = f"http://kv.{namespace}.svc.cluster.local:7001"
    put = json.loads(paxoskv(k8s, namespace, "kv-0", "put", "hello", "k8s", endpoint=service))
    assert (put["value"], put["created"]) == ("k8s", True)
    for i in range(3):  # through every pod, linearizably
        assert paxoskv(k8s, namespace, f"kv-{i}", "get", "hello", "-o", "value") == "k8s"
    assert k8s.kubectl("-n", namespace, "exec", "kv-0", "--", "id", "-u").strip() == str(UID)
    status = json.loads(paxoskv(k8s, namespace, "kv-1", "status"))
    assert status["quorate"] and {m["name"] for m in status["members"]} == {
        "kv-0", "kv-1", "kv-2"}

    # The node process killed -9 (from its node): the container restarts, Ready again,
    # with its data.
    assert k8s.kill_container(namespace, "kv-2"), "no kv-2 process to kill"
    wait_for(lambda: '"restartCount":1' in k8s.kubectl(
        "-n", namespace, "get", "pod", "kv-2", "-o", "jsonpath={.status.containerStatuses[0]}"
    ).replace(" ", ""), 60, "kv-2's container was not restarted")
    k8s.kubectl("-n", namespace, "wait", f"--for={READY}", "pod/kv-2", "--timeout=60s")
    assert paxoskv(k8s, namespace, "kv-2", "get", "hello", "--local", "-o", "value") == "k8s"

    # The pod deleted: it comes back on the same claim and serves every earlier key.
    claim = k8s.kubectl("-n", namespace, "get", "pvc", "data-kv-1", "-o",
                        "jsonpath={.spec.volumeName}")
    k8s.kubectl("-n", namespace, "delete", "pod", "kv-1", "--wait=true")
    k8s.kubectl("-n", namespace, "wait", f"--for={READY}", "pod/kv-1", "--timeout=90s")
    assert k8s.kubectl("-n", namespace, "get", "pvc", "data-kv-1", "-o",
                       "jsonpath={.spec.volumeName}") == claim
    assert paxoskv(k8s, namespace, "kv-1", "get", "hello", "--local", "-o", "value") == "k8s"


def test_a_pod_without_a_quorum_is_not_ready(k8s: K8s, namespace: str) -> None:
    apply_cluster(k8s, namespace)
    # Two of three members gone (scaled away; their claims stay): kv-0 has no quorum.
    k8s.kubectl("-n", namespace, "scale", "statefulset/kv", "--replicas=1")
    wait_for(lambda: not ready(k8s, namespace, "kv-0"), 60,
             "kv-0 stayed Ready without a quorum")
    k8s.kubectl("-n", namespace, "scale", "statefulset/kv", "--replicas=3")
    k8s.kubectl("-n", namespace, "wait", f"--for={READY}", "pod", "--all", "--timeout=120s")
    assert json.loads(paxoskv(k8s, namespace, "kv-0", "put", "after", "quorum"))["created"]
