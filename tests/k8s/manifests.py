"""Plain manifests of a PaxosKV cluster for the Kubernetes tests, before the operator
exists: a headless peer Service that publishes not-ready addresses (members must reach
each other before any is ready), a client Service, and a StatefulSet whose pods start
in parallel (ordered start would wait for a first pod that waits for a quorum), address
their peers by stable DNS names, keep their data on a PVC each, and run as UID 10001.
And a pod that kills a container's processes from its node (`process_killer`)."""

from __future__ import annotations

from typing import Any

PORT = 7001
UID = 10001


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "paxoskv", "app.kubernetes.io/instance": name}


def peers(name: str, namespace: str, replicas: int) -> str:
    return ",".join(f"{name}-{i}=http://{name}-{i}.{name}-peers.{namespace}.svc.cluster.local"
                    f":{PORT}" for i in range(replicas))


def node_cluster(name: str, namespace: str, image: str, replicas: int = 3
                 ) -> list[dict[str, Any]]:
    selector = labels(name)
    service_port = {"port": PORT, "targetPort": PORT, "protocol": "TCP"}
    container = {
        "name": "node", "image": image, "imagePullPolicy": "Never",
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "args": ["serve", "--name", "$(POD_NAME)", "--peers", peers(name, namespace, replicas),
                 "--listen", f"0.0.0.0:{PORT}", "--data-dir", "/var/lib/paxoskv/data",
                 "--bootstrap"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PORT}, "periodSeconds": 1,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/paxoskv"}],
    }
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": f"{name}-peers", "namespace": namespace, "labels": selector},
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector,
                  "ports": [{"name": "peer", **service_port}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": namespace, "labels": selector},
         "spec": {"selector": selector, "ports": [{"name": "client", **service_port}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": name, "namespace": namespace, "labels": selector},
         "spec": {
             "serviceName": f"{name}-peers", "replicas": replicas,
             "podManagementPolicy": "Parallel", "selector": {"matchLabels": selector},
             "template": {"metadata": {"labels": selector}, "spec": {
                 "securityContext": {"runAsNonRoot": True, "runAsUser": UID,
                                     "runAsGroup": UID, "fsGroup": UID},
                 "terminationGracePeriodSeconds": 10,
                 "containers": [container]}},
             "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                 "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}]}},
    ]


# Run with the node's PID namespace: SIGKILL every process whose cgroup path names the
# container's ID (cgroup v1 or v2, cgroupfs or systemd driver); print their PIDs.
KILL_SCRIPT = """
import os, signal, sys
container, killed = sys.argv[1], []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            if container in f.read():
                os.kill(int(pid), signal.SIGKILL)
                killed.append(pid)
    except OSError:
        pass
print(*killed)
sys.exit(0 if killed else f"no process of container {container}")
"""


def process_killer(name: str, namespace: str, image: str, node: str, container_id: str
                   ) -> dict[str, Any]:
    """A pod on `node` that SIGKILLs the processes of the container `container_id` (the
    hexadecimal ID, without the runtime's prefix), as root with the node's PID namespace,
    the way a crash or the OOM killer would end them; it prints their PIDs and exits."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "process-killer"}},
        "spec": {
            "nodeName": node, "hostPID": True, "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "kill", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", KILL_SCRIPT, container_id],
                "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                                    "capabilities": {"add": ["KILL"]}}}]}}
