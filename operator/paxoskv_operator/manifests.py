"""The objects a PaxosKVCluster owns, built by pure functions of its spec.

- `<name>-peers`: the headless Service that gives each pod a stable DNS name (members'
  URLs in the cluster's configuration). It publishes not-ready addresses: members must
  reach each other, and a joining pod its members, before they are ready.
- `<name>`: the client Service (ready members only).
- `<name>-admin`: the Secret holding the admin token (made once, never logged).
- `<name>-tls` (unless spec.tls is off or names a Secret of the user's): the members'
  certificate and its CA (certificates.py), mounted in every pod.
- `<name>-tokens` (unless spec.auth is off): the nodes' tokens file, `tokens.toml`, and
  `token`, a token that may read and write every bucket; made once, then the user's to
  edit (the nodes reload it). The node pods carry that token and the CA in their
  environment, so `kubectl exec <pod> -- paxoskv get KEY` just works.
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


TLS_DIR = "/etc/paxoskv/tls"
AUTH_DIR = "/etc/paxoskv/auth"
CLIENT_TOKEN_NAME = "client"  # the name of the token the operator makes, in tokens.toml


def tls_on(owner: Manifest) -> bool:
    return bool((owner["spec"].get("tls") or {}).get("enabled", True))


def auth_on(owner: Manifest) -> bool:
    return bool((owner["spec"].get("auth") or {}).get("enabled", True))


def tls_secret_name(owner: Manifest) -> str:
    """The Secret with the members' certificate: the user's, or the one made for them."""
    given = (owner["spec"].get("tls") or {}).get("secretName")
    return str(given) if given else f"{owner['metadata']['name']}-tls"


def scheme(owner: Manifest) -> str:
    return "https" if tls_on(owner) else "http"


def pod_host(name: str, namespace: str, ordinal: int) -> str:
    """A member's stable DNS name, which its certificate covers."""
    return f"{name}-{ordinal}.{name}-peers.{namespace}.svc.cluster.local"


def peer_url(owner: Manifest, ordinal: int) -> str:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    return f"{scheme(owner)}://{pod_host(name, namespace, ordinal)}:{PORT}"


def client_url(owner: Manifest) -> str:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    return f"{scheme(owner)}://{name}.{namespace}.svc.cluster.local:{PORT}"


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


def tokens_secret(owner: Manifest, tokens_toml: str, token: str) -> Manifest:
    secret = _object("v1", "Secret", f"{owner['metadata']['name']}-tokens", owner,
                     "stringData", {"tokens.toml": tokens_toml, "token": token})
    secret["type"] = "Opaque"
    secret["metadata"]["annotations"] = {}  # made once, then edited by the user
    return secret


def tls_secret(owner: Manifest, files: dict[str, str]) -> Manifest:
    secret = _object("v1", "Secret", f"{owner['metadata']['name']}-tls", owner,
                     "stringData", files)
    secret["type"] = "kubernetes.io/tls"
    secret["metadata"]["annotations"] = {}  # made once
    return secret


def client_tokens_file(token_sha256: str) -> str:
    """The tokens file the operator starts a cluster with: one token for everything."""
    return (f"# Tokens of the data API (see the PaxosKV README); reloaded when changed.\n"
            f"[[token]]\nname = \"{CLIENT_TOKEN_NAME}\"\nsha256 = \"{token_sha256}\"\n"
            f"read = [\"*\"]\nwrite = [\"*\"]\n")


def _security(owner: Manifest) -> tuple[list[str], list[Manifest], list[Manifest],
                                        list[Manifest]]:
    """The node's arguments, environment, mounts and volumes for TLS and tokens."""
    name = owner["metadata"]["name"]
    args: list[str] = []
    env: list[Manifest] = [{"name": "PAXOSKV_ENDPOINTS", "value": f"{scheme(owner)}://"
                            f"127.0.0.1:{PORT}"}]
    mounts: list[Manifest] = []
    volumes: list[Manifest] = []
    if tls_on(owner):
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key",
                 "--tls-ca", f"{TLS_DIR}/ca.crt"]
        env.append({"name": "PAXOSKV_CACERT", "value": f"{TLS_DIR}/ca.crt"})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret_name(owner)}})
    if auth_on(owner):
        args += ["--auth-file", f"{AUTH_DIR}/tokens.toml"]
        env.append({"name": "PAXOSKV_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": f"{name}-tokens", "key": "token"}}})
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
        volumes.append({"name": "auth", "secret": {
            "secretName": f"{name}-tokens", "items": [{"key": "tokens.toml",
                                                       "path": "tokens.toml"}]}})
    return args, env, mounts, volumes


def statefulset(owner: Manifest, image: str, replicas: int) -> Manifest:
    meta, spec = owner["metadata"], owner["spec"]
    name = meta["name"]
    peers = ",".join(f"{name}-{i}={peer_url(owner, i)}" for i in range(MAX_REPLICAS))
    args, env, mounts, volumes = _security(owner)
    probe_scheme = "HTTPS" if tls_on(owner) else "HTTP"  # kubelet does not verify it
    container: Manifest = {
        "name": "node", "image": image,
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": ["serve", "--name", "$(POD_NAME)", "--peers", peers,
                 "--listen", f"0.0.0.0:{PORT}", "--data-dir", f"{DATA_DIR}/data", "--join",
                 *args, "--log-level", spec.get("logLevel", "info")],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PAXOSKV_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": f"{name}-admin", "key": "token"}}},
            *env,
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Ready: serving, a member, caught up and with a quorum (the node's /readyz).
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PORT,
                                       "scheme": probe_scheme},
                           "periodSeconds": 2, "failureThreshold": 2},
        # Alive: the process answers (a member without a quorum is alive).
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORT,
                                      "scheme": probe_scheme},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, *mounts],
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
    if volumes:
        pod_spec["volumes"] = volumes
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
