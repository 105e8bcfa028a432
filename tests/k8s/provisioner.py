"""The test cluster's volumes: a STAND-IN for a dynamic provisioner (none ships with a
bare Kubernetes), making hostPath PersistentVolumes under one directory of the machine.

Every REFRESH_S seconds it reads the claims and volumes from the API server and:
- for each Pending claim of STORAGE_CLASS with no volume yet, creates a directory
  `<root>/<namespace>-<claim>-<uid>` and a PersistentVolume on it, bound to the claim
  (claimRef), with the claim's size and access modes and reclaim policy Delete;
- for each of its volumes that is Released (its claim was deleted, as the operator does
  after scaling down), deletes the directory and the volume.

The directories are world-writable: hostPath volumes ignore a pod's fsGroup, and the
node image runs as a non-root user. This is a test stand-in; the plan (what to create
and delete) is a pure function, `plan`.
"""

from __future__ import annotations

import shutil
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

STORAGE_CLASS = "standard"
PROVISIONER = "paxoskv.test/hostpath-stand-in"
REFRESH_S = 0.5


def storage_class() -> dict[str, Any]:
    """The default StorageClass the harness installs: claims without a class get it."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate"}


@dataclass(frozen=True)
class Plan:
    create: list[dict[str, Any]]  # PersistentVolume manifests
    delete: list[tuple[str, Path]]  # (volume name, its directory)


def plan(claims: list[dict[str, Any]], volumes: list[dict[str, Any]], root: Path) -> Plan:
    ours = [v for v in volumes if v["metadata"].get("annotations", {}).get(
        "pv.kubernetes.io/provisioned-by") == PROVISIONER]
    claimed = {v["spec"].get("claimRef", {}).get("uid") for v in volumes}
    create = [_volume(c, root) for c in claims
              if c.get("status", {}).get("phase") == "Pending"
              and c["spec"].get("storageClassName") == STORAGE_CLASS
              and not c["spec"].get("volumeName") and c["metadata"]["uid"] not in claimed]
    delete = [(v["metadata"]["name"], Path(v["spec"]["hostPath"]["path"])) for v in ours
              if v.get("status", {}).get("phase") == "Released"]
    return Plan(create, delete)


def _volume(claim: dict[str, Any], root: Path) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}",
                     "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": str(root / f"{meta['namespace']}-{meta['name']}-{meta['uid']}"),
                         "type": "Directory"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": meta["namespace"], "name": meta["name"],
                         "uid": meta["uid"]},
        },
    }


class Provisioner:
    """Applies `plan` against the API server every REFRESH_S seconds, in a thread."""

    def __init__(self, api: str, token: str, ca: Path, root: Path) -> None:
        self.root = root
        trust = ssl.create_default_context(cafile=str(ca))
        self._http = httpx.Client(base_url=api, verify=trust, timeout=5.0,
                                  headers={"Authorization": f"Bearer {token}"})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def threads(self) -> list[threading.Thread]:
        """The threads that must run while it works (for a supervisor to watch)."""
        return [self._thread]

    def once(self) -> Plan:
        claims = self._items("/api/v1/persistentvolumeclaims")
        volumes = self._items("/api/v1/persistentvolumes")
        todo = plan(claims, volumes, self.root)
        for volume in todo.create:
            path = Path(volume["spec"]["hostPath"]["path"])
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            self._http.post("/api/v1/persistentvolumes", json=volume).raise_for_status()
        for name, path in todo.delete:
            shutil.rmtree(path, ignore_errors=True)
            answer = self._http.delete(f"/api/v1/persistentvolumes/{name}")
            if answer.status_code != 404:
                answer.raise_for_status()
        return todo

    def _items(self, path: str) -> list[dict[str, Any]]:
        answer = self._http.get(path)
        answer.raise_for_status()
        return list(answer.json().get("items") or [])

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.once()
            except Exception as exc:  # any: a stand-in that keeps working
                print(f"k8s-provisioner: {exc.__class__.__name__}: {exc}", file=sys.stderr,
                      flush=True)
