"""The test cluster's volume provisioner stand-in (tests/k8s/provisioner.py): what it
creates and deletes, from the API's claims and volumes; and on the cluster, a claim of the
default class (the stand-in's, which `up` starts) bound and written to by a pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import K8s
from tests.k8s import provisioner as p

# Each test's namespace is deleted in its teardown, which waits up to 120 s for its
# pods to go (longer on a loaded machine): the default limit of 120 s would cut it short.
pytestmark = pytest.mark.timeout(480)


def claim(name: str, uid: str, phase: str = "Pending", storage_class: str | None = p.STORAGE_CLASS,
          volume: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "t1", "uid": uid},
            "spec": {"storageClassName": storage_class, "volumeName": volume,
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": phase}}


def test_a_pending_claim_gets_one_bound_volume_and_a_released_one_goes(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    claims = [claim("data-kv-0", "u0"), claim("other", "u1", storage_class="fast"),
              claim("bound", "u2", phase="Bound", volume="pvc-u2")]
    first = p.plan(claims, [], root)
    assert [v["metadata"]["name"] for v in first.create] == ["pvc-u0"]
    volume = first.create[0]
    assert volume["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                          "namespace": "t1", "name": "data-kv-0", "uid": "u0"}
    assert volume["spec"]["hostPath"]["path"] == str(root / "t1-data-kv-0-u0")
    assert volume["spec"]["capacity"] == {"storage": "1Gi"}
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == p.PROVISIONER
    # Once the volume exists the claim is not provisioned twice, even while still Pending.
    assert p.plan(claims, [volume], root).create == []
    released = {**volume, "status": {"phase": "Released"}}
    foreign = {"metadata": {"name": "by-hand"}, "spec": {"hostPath": {"path": "/srv/x"}},
               "status": {"phase": "Released"}}
    assert p.plan([], [released, foreign], root).delete == [
        ("pvc-u0", root / "t1-data-kv-0-u0")]


def test_the_storage_class_is_the_default_one() -> None:
    sc = p.storage_class()
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert (sc["provisioner"], sc["volumeBindingMode"]) == (p.PROVISIONER, "Immediate")


def test_a_claim_of_the_default_class_binds_and_a_pod_writes_to_it(k8s: K8s,
                                                                  namespace: str) -> None:
    """On the cluster (the local one's stand-in, which `up` starts, or any cluster's own
    default class): a claim that names no class gets a volume, which a pod of the node
    image (non-root) writes to and reads back."""
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "16Mi"}}}}))
    said = k8s.run_pod(namespace, "write", ["sh", "-c", "echo kept > /data/f && cat /data/f"],
                       claim="data")
    assert said == "kept"
    assert k8s.kubectl("-n", namespace, "get", "pvc", "data", "-o",
                       "jsonpath={.status.phase}") == "Bound"
