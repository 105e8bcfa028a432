"""The test cluster's add-ons, STAND-INS for CoreDNS and a volume provisioner, as one process
of the cluster (tests/k8s/cluster.py):

    python -m tests.k8s.addons --state DIR

`up` starts it inside the cluster's network and mount namespaces once the API server is
ready, tracks it by PID like the other daemons (`addons` in `status`; its log
`<state>/logs/addons.log`), and `down` (or the next `up`, after a crash) stops it with them.
It serves, as threads:

- the DNS stand-in (tests/k8s/dns.py) on the node's address, port 53, behind the kube-dns
  Service (10.96.0.10, which kubelet gives every pod as its nameserver): a Service without a
  selector and its Endpoints, made here;
- the volume provisioner stand-in (tests/k8s/provisioner.py) for claims of its StorageClass,
  `standard`, made here as the default class: hostPath volumes under `<state>/volumes`.

It talks to the API server on the node's address with a static token of its own
(`paxoskv-k8s-stand-ins` in `<state>/pki/tokens.csv`). Once the objects exist, its DNS
answers `kubernetes.default.svc.cluster.local` and the provisioner's first pass is done, it
writes `<state>/addons.ready` (what `up` waits for). Then it watches its threads: should one
end, it says so and exits 1, which `status` shows, rather than serve half.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.k8s import dns, layout, provisioner

USER = "paxoskv-k8s-stand-ins"  # its static token's user (tests/k8s/components.py)
READY = "addons.ready"  # in the state directory: written once it serves
START_TIMEOUT_S = 60.0
WATCH_S = 1.0

T = TypeVar("T")


def say(message: str) -> None:
    print(f"k8s-addons: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def token(state: Path, user: str = USER) -> str:
    """A user's static token, from the API server's token file."""
    for line in (state / "pki" / "tokens.csv").read_text().splitlines():
        value, name, *_ = line.split(",")
        if name == user:
            return value
    raise layout.ClusterError(f"no {user} token in {state / 'pki' / 'tokens.csv'}")


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


def objects() -> list[tuple[str, dict[str, Any]]]:
    """What it makes in the cluster: (the collection's path, the object)."""
    service, endpoints = kube_dns()
    return [("/api/v1/namespaces/kube-system/services", service),
            ("/api/v1/namespaces/kube-system/endpoints", endpoints),
            ("/apis/storage.k8s.io/v1/storageclasses", provisioner.storage_class())]


def until(what: str, attempt: Callable[[], T], deadline: float) -> T:
    """`attempt()`'s result once it succeeds (the API server's namespaces or a first list may
    not be there yet); the last error past the deadline."""
    while True:
        try:
            return attempt()
        except Exception as exc:  # any: retried until the deadline
            if time.monotonic() > deadline:
                raise layout.ClusterError(f"{what}: {exc.__class__.__name__}: {exc}") from None
        time.sleep(0.2)


def create(client: httpx.Client, collection: str, manifest: dict[str, Any]) -> None:
    answer = client.post(collection, json=manifest)
    if answer.status_code != 409:  # already there: from an earlier start of this process
        answer.raise_for_status()


def check_dns() -> None:
    found = dns.lookup((layout.NODE_IP, 53), "kubernetes.default.svc.cluster.local")
    if found != [layout.API_SERVICE_IP]:
        raise layout.ClusterError(f"kubernetes.default.svc.cluster.local is {found}")


def serve(state: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    secret, ca = token(state), state / "pki" / "ca.crt"
    api = f"https://{layout.NODE_IP}:{layout.API_PORT}"
    client = httpx.Client(base_url=api, verify=ssl.create_default_context(cafile=str(ca)),
                          timeout=5.0, trust_env=False,
                          headers={"Authorization": f"Bearer {secret}"})
    for collection, manifest in objects():
        until(f"creating {manifest['kind']} {manifest['metadata']['name']}",
              functools.partial(create, client, collection, manifest), deadline)
    server = dns.DnsStandIn(layout.NODE_IP, 53, dns.ApiReader(api, secret, ca))
    until("the DNS stand-in's first read of the API", server.start, deadline)
    until("the DNS stand-in answering kubernetes.default", check_dns, deadline)
    volumes = provisioner.Provisioner(api, secret, ca, state / "volumes")
    volumes.root.mkdir(parents=True, exist_ok=True)
    until("the provisioner's first pass", volumes.once, deadline)
    volumes.start()
    layout.write_atomic(state / READY, json.dumps({
        "dns": f"{layout.NODE_IP}:53", "service": layout.DNS_SERVICE_IP,
        "storage_class": provisioner.STORAGE_CLASS, "volumes": str(volumes.root)}) + "\n")
    say(f"serving: DNS on {layout.NODE_IP}:53 (Service {layout.DNS_SERVICE_IP}), volumes "
        f"of StorageClass {provisioner.STORAGE_CLASS} under {volumes.root}")
    watched = {"DNS": server.threads(), "volume provisioner": volumes.threads()}
    while True:
        time.sleep(WATCH_S)
        for name, threads in watched.items():
            if not all(thread.is_alive() for thread in threads):
                say(f"error: the {name} stand-in's thread has ended: exiting")
                return 1


def stopped(signum: int, frame: object) -> None:
    """SIGTERM (from `down`): nothing to put away, the API server goes next."""
    say("stopped")
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.addons", description=(
        "The local test cluster's DNS and volume provisioner stand-ins, as one process "
        "inside the cluster's namespaces (started by `python -m tests.k8s.cluster up`)."))
    parser.add_argument("--state", type=Path, required=True, help="the cluster's state")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stopped)
    try:
        return serve(args.state.absolute())
    except (layout.ClusterError, OSError) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
