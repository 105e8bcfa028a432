"""The test cluster's DNS: a STAND-IN for CoreDNS, which Debian does not package.

It answers what PaxosKV's pods need and nothing more, from the API server's Services,
Endpoints and Pods, re-read every REFRESH_S seconds:

- `<service>.<namespace>.svc.<domain>`: the Service's cluster IP, or for a headless
  Service the addresses of its endpoints (not-ready ones included where the Service
  publishes them, as StatefulSet peers need before they are ready);
- `<hostname>.<service>.<namespace>.svc.<domain>`: a headless Service's endpoint with that
  hostname (a StatefulSet pod's stable name);
- `<a-b-c-d>.<namespace>.pod.<domain>`: a pod's IP;
- anything else: NXDOMAIN. Nothing is forwarded out of the cluster.

Only A queries get answers (the cluster is IPv4); the others get an empty NOERROR when
the name exists. A pod's resolver tries its search domains first, so these names arrive
fully qualified. The cluster (tests/k8s/cluster.py) runs it in its stand-ins' process
(tests/k8s/addons.py), in the cluster's network namespace, behind the kube-dns Service's
address. Alone, for trying it:

    python -m tests.k8s.dns --listen 10.200.0.1:53 --api https://10.200.0.1:6443 \\
        --token-file TOKEN --ca CA.crt [--log-queries]
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from dnslib import QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # type: ignore[import-untyped]

DOMAIN = "cluster.local"
REFRESH_S = 0.5
TTL = 5

Records = dict[str, list[str]]  # lower-case name, without the final dot -> IPv4 addresses


def records(services: list[dict[str, Any]], endpoints: list[dict[str, Any]],
            pods: list[dict[str, Any]], domain: str = DOMAIN) -> Records:
    """The names the stand-in answers, from the API's lists (their `items`)."""
    found: Records = {}
    by_service = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec", {})
        name = f"{meta['name']}.{meta['namespace']}.svc.{domain}".lower()
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            found[name] = [cluster_ip]
            continue
        # Headless: the endpoints themselves, each also under its hostname.
        addresses: list[dict[str, Any]] = []
        for subset in by_service.get((meta["namespace"], meta["name"]), {}).get("subsets") or []:
            addresses += subset.get("addresses") or []
            if spec.get("publishNotReadyAddresses"):
                addresses += subset.get("notReadyAddresses") or []
        found[name] = sorted({a["ip"] for a in addresses})
        for address in addresses:
            if address.get("hostname"):
                found.setdefault(f"{address['hostname']}.{name}".lower(), []).append(address["ip"])
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if ip:
            namespace = pod["metadata"]["namespace"]
            found[f"{ip.replace('.', '-')}.{namespace}.pod.{domain}".lower()] = [ip]
    return found


class Resolver(BaseResolver):  # type: ignore[misc]
    """Answers from the latest `Records` (swapped whole by the refresher)."""

    def __init__(self) -> None:
        self.records: Records = {}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        addresses = self.records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        return reply


class ApiReader:
    """Lists Services, Endpoints and Pods of every namespace with a bearer token."""

    def __init__(self, api: str, token: str, ca: Path) -> None:
        trust = ssl.create_default_context(cafile=str(ca))
        self._http = httpx.Client(base_url=api, verify=trust, timeout=5.0,
                                  headers={"Authorization": f"Bearer {token}"})

    def items(self, path: str) -> list[dict[str, Any]]:
        answer = self._http.get(path)
        answer.raise_for_status()
        return list(answer.json().get("items") or [])

    def records(self) -> Records:
        return records(self.items("/api/v1/services"), self.items("/api/v1/endpoints"),
                       self.items("/api/v1/pods"))


class StaticReader:
    """Fixed records instead of the API's (for testing the server alone)."""

    def __init__(self, fixed: Records) -> None:
        self.fixed = fixed

    def records(self) -> Records:
        return self.fixed


class DnsStandIn:
    """The server (UDP and TCP) and the thread that keeps its records fresh. Each query
    and answer is logged only with `log_queries` (a cluster up for days would fill its log
    otherwise); errors always are."""

    def __init__(self, host: str, port: int, reader: ApiReader | StaticReader,
                 log_queries: bool = False) -> None:
        self.resolver = Resolver()
        self.reader = reader
        logger = DNSLogger("" if log_queries else "error",
                           logf=lambda line: print(line, file=sys.stderr, flush=True))
        self._servers = [DNSServer(self.resolver, address=host, port=port, tcp=tcp,
                                   logger=logger)
                         for tcp in (False, True)]
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, daemon=True)

    def start(self) -> None:
        self.resolver.records = self.reader.records()  # answer correctly from the start
        for server in self._servers:
            server.start_thread()
        self._refresher.start()

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.stop()

    def threads(self) -> list[threading.Thread]:
        """The threads that must all run while it serves (for a supervisor to watch)."""
        return [*(server.thread for server in self._servers), self._refresher]

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.resolver.records = self.reader.records()
            except Exception as exc:  # any: a stand-in that keeps serving
                # Keep answering from the last good view; the API server may restart.
                print(f"k8s-dns: refresh failed ({exc.__class__.__name__}: {exc})",
                      file=sys.stderr, flush=True)


def lookup(server: tuple[str, int], name: str) -> list[str]:
    """The A records `server` gives for `name` (for tests and for checking it is up)."""
    answer = DNSRecord.parse(DNSRecord.question(name).send(server[0], server[1], timeout=2))
    return [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]


def _address(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    ipaddress.IPv4Address(host)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.dns",
                                     description="The test cluster's DNS stand-in.")
    parser.add_argument("--listen", type=_address, required=True, metavar="IP:PORT")
    parser.add_argument("--api", required=True, help="the API server's URL")
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--ca", type=Path, required=True, help="the API server's CA")
    parser.add_argument("--log-queries", action="store_true", help="log every query")
    args = parser.parse_args(argv)
    try:
        reader = ApiReader(args.api, args.token_file.read_text().strip(), args.ca)
        host, port = args.listen
        stand_in = DnsStandIn(host, port, reader, args.log_queries)
        stand_in.start()
    except (OSError, httpx.HTTPError) as exc:
        print(f"k8s-dns: error: {exc}", file=sys.stderr)
        return 1
    print(f"k8s-dns: serving on {args.listen[0]}:{args.listen[1]}", file=sys.stderr,
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stand_in.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
