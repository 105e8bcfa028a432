"""The objects a PaxosKVCluster owns, built by pure functions of its spec.

- `<name>-peers`: the headless Service that gives each pod a stable DNS name (members'
  URLs in the cluster's configuration). It publishes not-ready addresses: members must
  reach each other, and a joining pod its members, before they are ready.
- `<name>`: the client Service (ready members only).
- `<name>-admin`: the Secret holding the admin token (made once, never logged).
- `<name>`: the StatefulSet of node pods, one data claim per member. Every pod starts with
  `--join`: on an empty volume it waits to be added (or, for the first pod of a new
  cluster, to be told to bootstrap); on its own data it serves as the member it is.
  Pods start in parallel: ordered start would wait for a pod that waits for the operator.
- `<name>`: the PodDisruptionBudget, sized to keep a quorum (none below 3 members: one
  or two members tolerate no disruption, and a budget allowing none would block drains
  forever).
Each carries `paxoskv.io/spec-hash`, a digest of what was built, so the operator patches
an object only when its spec changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GROUP = "paxoskv.io"
VERSION = "v1alpha1"
KIND = "PaxosKVCluster"
PLURAL = "paxoskvclusters"
PORT = 7001
UID = 10001  # the image's user
DATA_DIR = "/var/lib/paxoskv"
MAX_REPLICAS = 9  # the CRD's maximum; every pod's --peers names these many
HASH = f"{GROUP}/spec-hash"
# The label an application pod carries to have its readiness reported as a node binding.
BINDING_LABEL = f"{GROUP}/cluster"

Manifest = dict[str, Any]


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "paxoskv", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "node",
            "app.kubernetes.io/managed-by": "paxoskv-operator"}


def selector(name: str) -> dict[str, str]:
    return {k: v for k, v in labels(name).items() if k != "app.kubernetes.io/managed-by"}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(name).items())


def peer_url(name: str, namespace: str, ordinal: int) -> str:
    return f"http://{name}-{ordinal}.{name}-peers.{namespace}.svc.cluster.local:{PORT}"


def quorum_disruptions(members: int) -> int:
    """How many members may be away while a quorum stays."""
    return (members - 1) // 2


def owner_reference(owner: Manifest) -> Manifest:
    meta = owner["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _object(api_version: str, kind: str, name: str, owner: Manifest, spec_key: str,
            spec: Any, extra_labels: dict[str, str] | None = None) -> Manifest:
    meta = owner["metadata"]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": api_version, "kind": kind,
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {**labels(meta["name"]), **(extra_labels or {})},
            "annotations": {HASH: digest},
            "ownerReferences": [owner_reference(owner)],
        },
        spec_key: spec,
    }


def peer_service(owner: Manifest) -> Manifest:
    name = owner["metadata"]["name"]
    return _object("v1", "Service", f"{name}-peers", owner, "spec", {
        "clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector(name),
        "ports": [{"name": "peer", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]})


def client_service(owner: Manifest) -> Manifest:
    name = owner["metadata"]["name"]
    return _object("v1", "Service", name, owner, "spec", {
        "selector": selector(name),
        "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]})


def admin_secret(owner: Manifest, token: str) -> Manifest:
    name = owner["metadata"]["name"]
    secret = _object("v1", "Secret", f"{name}-admin", owner, "stringData", {"token": token})
    secret["type"] = "Opaque"
    secret["metadata"]["annotations"] = {}  # the hash would be a digest of the token
    return secret


def statefulset(owner: Manifest, image: str, replicas: int) -> Manifest:
    meta, spec = owner["metadata"], owner["spec"]
    name, namespace = meta["name"], meta["namespace"]
    peers = ",".join(f"{name}-{i}={peer_url(name, namespace, i)}"
                     for i in range(MAX_REPLICAS))
    container: Manifest = {
        "name": "node", "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": ["serve", "--name", "$(POD_NAME)", "--peers", peers,
                 "--listen", f"0.0.0.0:{PORT}", "--data-dir", f"{DATA_DIR}/data", "--join",
                 "--log-level", spec.get("logLevel", "info")],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PAXOSKV_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": f"{name}-admin", "key": "token"}}},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Ready: serving, a member, caught up and with a quorum (the node's /readyz).
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PORT},
                           "periodSeconds": 2, "failureThreshold": 2},
        # Alive: the process answers (a member without a quorum is alive).
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORT},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    scheduling = spec.get("scheduling") or {}
    pod_spec: Manifest = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "fsGroup": UID},
        # SIGTERM: the node finishes in-flight requests and stops; membership is left
        # alone (the operator changes it, never a preStop hook).
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "containers": [container],
    }
    affinity = _anti_affinity(name, scheduling.get("antiAffinity", "preferred"))
    if affinity:
        pod_spec["affinity"] = affinity
    for key in ("nodeSelector", "tolerations", "priorityClassName"):
        if scheduling.get(key):
            pod_spec[key] = scheduling[key]
    storage = spec.get("storage") or {}
    claim: Manifest = {"accessModes": ["ReadWriteOnce"],
                       "resources": {"requests": {"storage": storage.get("size", "1Gi")}}}
    if storage.get("storageClassName"):
        claim["storageClassName"] = storage["storageClassName"]
    built = _object("apps/v1", "StatefulSet", name, owner, "spec", {
        "serviceName": f"{name}-peers", "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector(name)},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {"metadata": {"labels": labels(name)}, "spec": pod_spec},
        "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": selector(name)},
                                  "spec": claim}],
    })
    built["spec"]["replicas"] = replicas  # not in the hash: the operator scales it itself
    return built


def _anti_affinity(name: str, mode: str) -> Manifest | None:
    term = {"labelSelector": {"matchLabels": selector(name)},
            "topologyKey": "kubernetes.io/hostname"}
    if mode == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if mode == "preferred":
        return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": term}]}}
    return None


def disruption_budget(owner: Manifest, members: int, api_version: str) -> Manifest | None:
    """The budget for `members` members (None: none), as `api_version` (policy/v1 or
    policy/v1beta1, whichever the server has)."""
    if members < 3 or not (owner["spec"].get("podDisruptionBudget") or {}).get("enabled",
                                                                                True):
        return None
    name = owner["metadata"]["name"]
    return _object(api_version, "PodDisruptionBudget", name, owner, "spec", {
        "maxUnavailable": quorum_disruptions(members),
        "selector": {"matchLabels": selector(name)}})


def claim_name(name: str, ordinal: int) -> str:
    return f"data-{name}-{ordinal}"
