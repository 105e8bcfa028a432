"""The test cluster's DNS stand-in (tests/k8s/dns.py): the names it builds from the
API's objects, real UDP and TCP queries to an instance of its own on loopback, and a pod on
the cluster resolving names through the cluster's DNS (the stand-in `up` starts)."""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import RCODE, DNSRecord  # type: ignore[import-untyped]

from paxoskv.devcluster import free_ports
from tests.conftest import K8s
from tests.k8s import dns

# Each test's namespace is deleted in its teardown, which waits up to 120 s for its
# pods to go (longer on a loaded machine): the default limit of 120 s would cut it short.
pytestmark = pytest.mark.timeout(480)


def meta(name: str, namespace: str = "t1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}}


SERVICES = [
    {**meta("kubernetes", "default"), "spec": {"clusterIP": "10.96.0.1"}},
    {**meta("kv"), "spec": {"clusterIP": "10.96.3.7"}},
    {**meta("kv-peers"), "spec": {"clusterIP": "None", "publishNotReadyAddresses": True}},
    {**meta("quiet"), "spec": {"clusterIP": "None"}},
]
ENDPOINTS = [
    {**meta("kv-peers"), "subsets": [{
        "addresses": [{"ip": "10.244.0.5", "hostname": "kv-0"}],
        "notReadyAddresses": [{"ip": "10.244.0.6", "hostname": "kv-1"}]}]},
    {**meta("quiet"), "subsets": [{"addresses": [{"ip": "10.244.0.9"}],
                                   "notReadyAddresses": [{"ip": "10.244.0.8"}]}]},
]
PODS = [{**meta("kv-0"), "status": {"podIP": "10.244.0.5"}}, {**meta("pending")}]


def test_names_follow_the_services_endpoints_and_pods() -> None:
    found = dns.records(SERVICES, ENDPOINTS, PODS)
    assert found == {
        "kubernetes.default.svc.cluster.local": ["10.96.0.1"],
        "kv.t1.svc.cluster.local": ["10.96.3.7"],
        # A headless Service that publishes not-ready addresses lists them too.
        "kv-peers.t1.svc.cluster.local": ["10.244.0.5", "10.244.0.6"],
        "kv-0.kv-peers.t1.svc.cluster.local": ["10.244.0.5"],
        "kv-1.kv-peers.t1.svc.cluster.local": ["10.244.0.6"],
        "quiet.t1.svc.cluster.local": ["10.244.0.9"],  # ready ones only
        "10-244-0-5.t1.pod.cluster.local": ["10.244.0.5"],
    }


def test_it_answers_over_udp_and_tcp_and_refuses_other_names() -> None:
    port = free_ports(1)[0]
    server = dns.DnsStandIn("127.0.0.1", port, dns.StaticReader(
        dns.records(SERVICES, ENDPOINTS, PODS)))
    server.start()
    try:
        assert dns.lookup(("127.0.0.1", port), "kv-1.kv-peers.t1.svc.cluster.local") == [
            "10.244.0.6"]
        assert dns.lookup(("127.0.0.1", port), "KV.t1.svc.cluster.local.") == ["10.96.3.7"]
        question = DNSRecord.question("kv.t1.svc.cluster.local")
        over_tcp = DNSRecord.parse(question.send("127.0.0.1", port, tcp=True, timeout=2))
        assert [str(rr.rdata) for rr in over_tcp.rr] == ["10.96.3.7"]
        for outside in ("example.com", "kv.t2.svc.cluster.local"):
            answer = DNSRecord.parse(DNSRecord.question(outside).send("127.0.0.1", port,
                                                                      timeout=2))
            assert answer.header.rcode == RCODE.NXDOMAIN and not answer.rr, outside
        # Another record type of a known name: no answer, but the name exists.
        aaaa = DNSRecord.parse(DNSRecord.question("kv.t1.svc.cluster.local", "AAAA").send(
            "127.0.0.1", port, timeout=2))
        assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
    finally:
        server.stop()


def test_a_pod_resolves_the_cluster_s_names(k8s: K8s, namespace: str) -> None:
    """On the cluster (the local one's stand-in, which `up` starts, or any cluster's own
    DNS): a pod of the node image resolves the API server's Service by its full name and,
    through its search domains, by a short one."""
    api_ip = k8s.kubectl("-n", "default", "get", "service", "kubernetes", "-o",
                         "jsonpath={.spec.clusterIP}")
    said = k8s.run_pod(namespace, "resolve", [
        "python3", "-c", "import socket\n"
        "for name in ('kubernetes.default.svc.cluster.local', 'kubernetes.default'):\n"
        "    print(name, socket.gethostbyname(name))"])
    assert said.split("\n") == [f"kubernetes.default.svc.cluster.local {api_ip}",
                                f"kubernetes.default {api_ip}"]
