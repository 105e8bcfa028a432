"""`paxoskv-operator`: run the PaxosKV operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf

from paxoskv.server.main import JsonFormatter

from . import handlers  # noqa: F401 - importing it registers the handlers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paxoskv-operator",
        description="Runs PaxosKVCluster resources (group paxoskv.io) as StatefulSets of "
                    "PaxosKV nodes: keeps their Services, admin Secret, StatefulSet and "
                    "disruption budget, changes membership one step at a time, and reports "
                    "application pods' readiness for `node` bindings. Credentials: the "
                    "pod's service account, else the kubeconfig ($KUBECONFIG). Several "
                    "replicas may run: one acts at a time (a Lease).",
        epilog="Example: paxoskv-operator --all-namespaces --liveness http://0.0.0.0:8080/healthz")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeat for more; default: all)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (the default)")
    p.add_argument("--liveness", metavar="URL",
                   help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="(default: info)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the liveness probes
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace, namespaces=args.namespace,
        liveness_endpoint=args.liveness, standalone=True,
        registry=kopf.get_default_registry()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
