"""The operator's installation: RBAC and Deployment, and `deploy/paxoskv.yaml`.

    python -m paxoskv_operator.install [--image IMAGE] > deploy/paxoskv.yaml

The file holds the CRD (crds/), the operator's namespace, ServiceAccount, least-privilege
RBAC and Deployment: what `kubectl apply -f deploy/paxoskv.yaml` installs. A test checks
that the committed file is what this module makes.

RBAC, cluster-wide (the operator watches every namespace): a ClusterRole with exactly the
verbs it uses, and a Role in its own namespace for its Lease:
- paxoskvclusters: watch them (get, list, watch), write their status, and patch them
  (kopf's annotations);
- services, secrets, statefulsets, poddisruptionbudgets: the objects it owns (create,
  get, list, watch, patch, delete); persistentvolumeclaims: list and delete a removed
  member's claim, patch their owner (storage.reclaimPolicy); pods: list and watch (its
  nodes; application pods for node bindings), delete (a pod whose claim was deleted);
  events: create and patch;
- namespaces, customresourcedefinitions: list and watch (kopf's discovery).
To confine it to some namespaces, run it with `--namespace` and bind the same rules with a
Role and RoleBinding in each (README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from . import manifests as m

NAMESPACE = "paxoskv-system"
NAME = "paxoskv-operator"
DEFAULT_IMAGE = "paxoskv:0.1.0"
LIVENESS_PORT = 8080
CRD = Path(__file__).resolve().parents[2] / "crds" / "paxoskvcluster.yaml"

Manifest = dict[str, Any]


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "operator",
            "app.kubernetes.io/part-of": "paxoskv"}


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Manifest:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


OWNED = ["create", "get", "list", "watch", "patch", "delete"]
# What the operator does in the namespaces it watches (a ClusterRole when it watches every
# namespace, else a Role in each; the chart's templates/_helpers.tpl holds the same).
RULES = [
    _rule([m.GROUP], [m.PLURAL], ["get", "list", "watch", "patch"]),
    _rule([m.GROUP], [f"{m.PLURAL}/status"], ["get", "patch"]),
    _rule([""], ["services", "secrets"], OWNED),
    _rule(["apps"], ["statefulsets"], OWNED),
    _rule(["policy"], ["poddisruptionbudgets"], OWNED),
    _rule([""], ["persistentvolumeclaims"], ["get", "list", "patch", "delete"]),
    _rule([""], ["pods"], ["get", "list", "watch", "delete"]),
    _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
]
# kopf's discovery, cluster-wide whatever the scope.
DISCOVERY_RULES = [
    _rule([""], ["namespaces"], ["get", "list", "watch"]),
    _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
]
LEASE_RULES = [_rule(["coordination.k8s.io"], ["leases"], ["create", "get", "patch"])]


def objects(image: str = DEFAULT_IMAGE, replicas: int = 2, namespace: str = NAMESPACE
            ) -> list[Manifest]:
    """Everything but the CRD, in the order to apply it."""
    meta = {"name": NAME, "namespace": namespace, "labels": _labels()}
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    container = {
        "name": "operator", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["paxoskv-operator"],
        "args": ["--all-namespaces", "--liveness",
                 f"http://0.0.0.0:{LIVENESS_PORT}/healthz"],
        "env": [
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            # The nodes run the operator's own image unless a resource names another.
            {"name": "PAXOSKV_IMAGE", "value": image},
        ],
        "ports": [{"name": "health", "containerPort": LIVENESS_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": LIVENESS_PORT},
                          "initialDelaySeconds": 10, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                      "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": _labels()}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": NAME, "labels": _labels()},
         "rules": RULES + DISCOVERY_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": NAME, "labels": _labels()},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": NAME}, "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": LEASE_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
         "subjects": subject},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels()},
            "template": {"metadata": {"labels": _labels()}, "spec": {
                "serviceAccountName": NAME,
                "securityContext": {"runAsNonRoot": True, "runAsUser": m.UID,
                                    "runAsGroup": m.UID},
                "containers": [container]}}}},
    ]


def crd() -> Manifest:
    loaded: Manifest = yaml.safe_load(CRD.read_text())
    return loaded


def document(image: str = DEFAULT_IMAGE, namespace: str = NAMESPACE) -> str:
    """deploy/paxoskv.yaml: the CRD, then the operator."""
    header = ("# PaxosKV: the PaxosKVCluster CRD and its operator, in one file.\n"
              "#   kubectl apply -f deploy/paxoskv.yaml\n"
              "# Made by `python -m paxoskv_operator.install` (make deploy); do not edit.\n")
    parts = [CRD.read_text().strip()] + [
        yaml.safe_dump(o, sort_keys=False).strip() for o in objects(image, namespace=namespace)]
    return header + "---\n" + "\n---\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paxoskv_operator.install",
                                description="Print the manifest that installs PaxosKV's CRD "
                                            "and operator (deploy/paxoskv.yaml).")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"(default {DEFAULT_IMAGE})")
    p.add_argument("--namespace", default=NAMESPACE, help=f"(default {NAMESPACE})")
    args = p.parse_args(argv)
    sys.stdout.write(document(args.image, args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
