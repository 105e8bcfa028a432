"""Prometheus metrics, one registry per node (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from paxoskv.server.node import Node


class Metrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("paxoskv_requests", "Client requests by operation and result",
                                ["op", "code"], registry=self.registry)
        self.latency = Histogram(
            "paxoskv_request_seconds", "Client request latency by operation", ["op"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self._counts: dict[tuple[str, str], Counter] = {}
        self._latencies: dict[str, Histogram] = {}
        gauges = {
            "paxoskv_peers_connected": ("Peers with an open connection",
                                        lambda: node.reachable() - 1),
            "paxoskv_quorate": ("1 if a quorum of members is reachable",
                                lambda: float(node.has_quorum())),
            "paxoskv_keys": ("Keys this acceptor holds", lambda: len(node.acceptor)),
            "paxoskv_storage_commits": ("Group commits (one fsync each)",
                                        lambda: node.storage.commits),
            "paxoskv_storage_records_written": ("Records written to disk",
                                                lambda: node.storage.records_written),
        }
        for name, path in (("fast_path", "fast"), ("cached_promise", "cached"),
                           ("full_round", "full"), ("quorum_reads", "quorum_read"),
                           ("conflicts", "conflict"), ("forwarded", "forwarded"),
                           ("hedged", "hedged"), ("fenced", "fenced")):
            gauges[f"paxoskv_rounds_{path}"] = (
                f"Consensus rounds by path: {name.replace('_', ' ')}",
                lambda name=name: getattr(node.stats, name))  # type: ignore[misc]
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, registry=self.registry).set_function(read)

    def observe(self, op: str, code: str, seconds: float) -> None:
        """Count one client request and its latency. (The labelled children are looked
        up once: `labels()` costs a lock and validation, on every request.)"""
        count = self._counts.get((op, code))
        if count is None:
            count = self._counts[op, code] = self.requests.labels(op, code)
        latency = self._latencies.get(op)
        if latency is None:
            latency = self._latencies[op] = self.latency.labels(op)
        count.inc()
        latency.observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
