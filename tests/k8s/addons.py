"""The test cluster's add-ons, started beside a running cluster (tests/k8s/cluster.py):
the DNS stand-in (tests/k8s/dns.py), as a process inside the cluster's network namespace
listening on the node's address behind the kube-dns Service (10.96.0.10, which kubelet
gives every pod as its nameserver), and the volume provisioner stand-in
(tests/k8s/provisioner.py), as a thread of the caller with its default StorageClass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s import cluster as k8s
from tests.k8s import layout, provisioner

REPO = Path(__file__).resolve().parents[2]
# Entering the cluster's mount namespace resets the working directory: find `tests` so.
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ADMIN = "paxoskv-k8s-admin"


def admin_token(state: Path) -> str:
    """The admin's static token, from the API server's token file."""
    for line in (state / "pki" / "tokens.csv").read_text().splitlines():
        token, user, *_ = line.split(",")
        if user == ADMIN:
            return token
    raise layout.ClusterError(f"no {ADMIN} token in {state / 'pki' / 'tokens.csv'}")


def kube_dns() -> list[dict[str, Any]]:
    """A Service with the cluster DNS address and no selector, and its Endpoints: the
    stand-in on the node's address."""
    ports = [{"name": f"dns-{p.lower()}", "port": 53, "protocol": p} for p in ("UDP", "TCP")]
    meta = {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"app.kubernetes.io/name": "dns-stand-in"}}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"clusterIP": layout.DNS_SERVICE_IP, "ports": ports}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": layout.NODE_IP}], "ports": [
             {"name": p["name"], "port": 53, "protocol": p["protocol"]} for p in ports]}]},
    ]


@dataclass
class Addons:
    dns: subprocess.Popen[bytes]
    volumes: provisioner.Provisioner

    def stop(self) -> None:
        self.volumes.stop()
        self.dns.terminate()
        try:
            self.dns.wait(5)
        except subprocess.TimeoutExpired:
            self.dns.kill()
            self.dns.wait()


def start(info: k8s.ClusterInfo) -> Addons:
    token = admin_token(info.state)
    token_file = info.state / "pki" / "dns-stand-in.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    ca = info.state / "pki" / "ca.crt"
    with open(info.state / "logs" / "dns-stand-in.log", "ab") as log:
        process = subprocess.Popen(
            [*info.enter(), sys.executable, "-m", "tests.k8s.dns", "--listen",
             f"{info.node_ip}:53", "--api", f"https://{info.node_ip}:{layout.API_PORT}",
             "--token-file", str(token_file), "--ca", str(ca)],
            env=ENV, stdout=log, stderr=subprocess.STDOUT)
    volumes = provisioner.Provisioner(info.server, token, ca, info.state / "volumes")
    addons = Addons(process, volumes)
    try:
        manifests = [*kube_dns(), provisioner.storage_class()]
        info.kubectl_run("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": manifests}).encode(),
            check=True, capture_output=True)
        volumes.start()
        deadline = time.monotonic() + 20
        while True:  # answering, and from the API's view (the kubernetes Service)
            try:
                probe = info.run([sys.executable, "-c", (
                    "import sys; from tests.k8s import dns; print(dns.lookup(("
                    f"'{info.node_ip}', 53), 'kubernetes.default.svc.cluster.local'))")],
                    env=ENV, capture_output=True, text=True, timeout=5)
                if "10.96.0.1" in probe.stdout:
                    break
            except subprocess.TimeoutExpired:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise layout.ClusterError("the DNS stand-in did not answer; see "
                                       f"{info.state / 'logs' / 'dns-stand-in.log'}")
            time.sleep(0.2)
    except BaseException:
        addons.stop()
        raise
    return addons
