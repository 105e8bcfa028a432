"""`paxoskv sidecar` as a real process beside a real 3-node cluster: it speaks for its
pod only, binds keys to the pod or to the pod's session, fails over past a dead
endpoint, and closes the pod's session on SIGTERM so that its keys end at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paxoskv.devcluster import free_ports
from tests.harness import LocalCluster, running, wait_until

TOKEN = "sidecar-test-token"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3, env={"PAXOSKV_ADMIN_TOKEN": TOKEN})


def test_the_sidecar_speaks_for_its_pod_only_and_closes_its_session_on_sigterm(
        cluster: LocalCluster, tmp_path: Path) -> None:
    port, dead = free_ports(2)
    endpoints = ",".join([f"http://127.0.0.1:{dead}", *cluster.urls])  # the first is down
    log = open(tmp_path / "sidecar.log", "wb")  # noqa: SIM115 - the child's
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "paxoskv", "sidecar", "--endpoints", endpoints, "--listen",
         f"127.0.0.1:{port}", "--session-ttl", "30"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "POD_NAME": "app-1", "POD_NAMESPACE": "apps"})
    log.close()
    local = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)
    try:
        def ready() -> bool:
            try:
                return local.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 20, "the sidecar never opened the pod's session")
        me = local.get("/v1/sidecar").json()
        assert (me["pod"], me["namespace"], me["node"]) == ("app-1", "apps", "app-1")

        # Bound to the pod's session ("self"): the key ends when the sidecar stops.
        put = local.post("/v1/put", json={"key": "lease", "value": "app-1",
                                          "bindings": {"pid": "self"}})
        assert put.status_code == 200 and put.json()["created"], put.text
        assert put.json()["bindings"]["pid"] == me["session"]

        # Bound to the pod itself, once the cluster hears it is alive (as the operator
        # reports a Ready pod).
        reported = httpx.post(cluster.url(0) + "/v1/admin/nodes", timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"source": "operator", "nodes": {"app-1": True}})
        assert reported.status_code == 200, reported.text
        bound = local.post("/v1/put", json={"key": "pod-key", "value": 1,
                                            "bindings": {"node": "self"}})
        assert bound.status_code == 200 and bound.json()["bindings"]["node"]["name"] == "app-1"

        # It cannot speak for another pod, or pass session and admin calls.
        for bindings, field in (({"node": "app-2"}, "bindings.node"),
                                ({"pid": "0" * 32}, "bindings.pid")):
            refused = local.post("/v1/put", json={"key": "x", "value": 1,
                                                  "bindings": bindings})
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["field"] == field
        for path in ("/v1/session/close", "/v1/admin/nodes"):
            assert local.post(path, json={}).status_code == 403
        assert local.post("/v1/get", json={"key": "x"}).json()["found"] is False

        # SIGTERM: the session is closed, so its key ends now, not 30 s later.
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(20) == 0
        with httpx.Client(base_url=cluster.url(1), timeout=10) as direct:
            assert direct.post("/v1/get", json={"key": "lease"}).json()["found"] is False
            assert direct.post("/v1/get", json={"key": "pod-key"}).json()["found"] is True
        assert "session closed" in (tmp_path / "sidecar.log").read_text()
    finally:
        local.close()
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait()


def test_the_sidecar_refuses_to_start_without_its_pod() -> None:
    env = {k: v for k, v in os.environ.items() if k != "POD_NAME"}
    done = subprocess.run([sys.executable, "-m", "paxoskv", "sidecar", "--endpoints",
                           "http://127.0.0.1:1"], capture_output=True, text=True, env=env,
                          timeout=30)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "paxoskv: error: --pod is required (or $POD_NAME, from the downward API: "
        "valueFrom.fieldRef.fieldPath: metadata.name)"]
