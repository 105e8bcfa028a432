"""The `paxoskv` command: run nodes, a local cluster, and talk to a cluster."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from paxoskv import __version__
from paxoskv.client import DEFAULT_ENDPOINTS, Client, Entry, PaxosKVError

EXAMPLES = """\
examples:
  paxoskv dev                          start a 3-node local cluster (Ctrl-C stops it)
  paxoskv put leader pod-a             put if absent; prints the decided entry
  paxoskv get leader                   linearizable read (exit 1 if not found)
  paxoskv delete leader --token 1      delete if the fencing token still matches
  paxoskv session --ttl 10             open a session, keep it alive until Ctrl-C or SIGTERM
  paxoskv put lock me --session ID     a key that ends with the session
  paxoskv put lease x --ttl 30         a key that ends in 30 seconds
  paxoskv watch lock --token 1         wait until the key changes
  paxoskv status                       the contacted node's view of the cluster

Endpoints come from --endpoints or $PAXOSKV_ENDPOINTS (comma-separated URLs).
"""


class CliError(Exception):
    """A one-line error for the user; exit status 1."""


def _parse_listen(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {raw!r}")
    return host or "0.0.0.0", int(port)


def _parse_peers(raw: str) -> dict[str, str]:
    peers = {}
    for item in raw.split(","):
        name, sep, url = item.strip().partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(
                f"expected NAME=http://HOST:PORT[,...], got {item!r}")
        peers[name] = url
    return peers


def _parse_value(raw: str, as_json: bool) -> Any:
    if not as_json:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"value is not valid JSON ({exc.msg} at column {exc.colno})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paxoskv", description="PaxosKV: a strongly consistent, leaderless key-value "
        "store for coordination.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"paxoskv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run one node",
                           description="Run one PaxosKV node until SIGTERM or Ctrl-C.")
    serve.add_argument("--name", required=True, help="this node's member name, e.g. n1")
    serve.add_argument("--peers", required=True, type=_parse_peers,
                       help="every member, this one included: n1=http://h1:7001,n2=...")
    serve.add_argument("--listen", type=_parse_listen, default=None,
                       help="HOST:PORT to listen on (default: this node's address in --peers)")
    serve.add_argument("--data-dir", type=Path, required=True,
                       help="directory for the acceptor's durable state")
    serve.add_argument("--bootstrap", action="store_true",
                       help="if the data directory is empty, create a new cluster of the "
                       "members in --peers (every one started with --bootstrap on an empty "
                       "directory); ignored once the directory belongs to a cluster. Never "
                       "use it to restart a member that lost its data")
    serve.add_argument("--admin-token", default=os.environ.get("PAXOSKV_ADMIN_TOKEN"),
                       help="enable the admin endpoint (node liveness reports) for this "
                       "bearer token (default: $PAXOSKV_ADMIN_TOKEN; unset: disabled)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])

    dev = sub.add_parser("dev", help="run a local cluster on 127.0.0.1",
                         description="Start N node processes on 127.0.0.1 with their own "
                         "data directories, wait until they are ready, and keep them "
                         "running until Ctrl-C.")
    dev.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    dev.add_argument("--base-port", type=int, default=7001,
                     help="port of the first node; the others follow (default 7001)")
    dev.add_argument("--data-dir", type=Path, default=Path(".paxoskv-dev"),
                     help="root of the nodes' data directories (default .paxoskv-dev)")

    def client_command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_ + ".")
        p.add_argument("--endpoints", default=os.environ.get("PAXOSKV_ENDPOINTS",
                                                             ",".join(DEFAULT_ENDPOINTS)),
                       help="comma-separated node URLs (default: $PAXOSKV_ENDPOINTS or the "
                       "local dev cluster)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        if name not in ("status", "session"):
            p.add_argument("key")
            p.add_argument("--bucket", default="default", help="namespace (default 'default')")
            p.add_argument("--no-quorum", choices=["return", "fail", "retry"], default="fail",
                           help="without a quorum: fail at once (default) or retry until "
                           "--timeout")
        return p

    put = client_command("put", "put a value if the key is absent; print the decided entry")
    put.add_argument("value")
    put.add_argument("--json", action="store_true", help="parse VALUE as JSON")
    put.add_argument("--until", type=int, metavar="MS",
                     help="the key ends at this deadline (ms since the epoch)")
    put.add_argument("--ttl", type=float, metavar="SECONDS",
                     help="the key ends this many seconds from now (sets --until)")
    put.add_argument("--parent", metavar="KEY", help="the key ends when KEY (same bucket) does")
    put.add_argument("--session", metavar="ID", help="the key ends when the session does "
                     "(see `paxoskv session`)")
    put.add_argument("--node", metavar="NAME", help="the key ends when node NAME is not alive")
    get = client_command("get", "read a key; exit status 1 if it is not found")
    get.add_argument("--local", action="store_true",
                     help="read this node's copy: cheaper, possibly stale")
    delete = client_command("delete", "delete a key if its fencing token still matches")
    delete.add_argument("--token", type=int, required=True, help="the fencing token to end")
    watch = client_command("watch", "wait until the key's fencing token differs from --token; "
                           "print the entry (exit status 1 if it did not change in time)")
    watch.add_argument("--token", type=int, default=0,
                       help="the token last seen (default 0: wait for the first put)")
    session = client_command("session", "open a session, print its id and keep it alive "
                             "until Ctrl-C or SIGTERM, then close it (ending every key "
                             "bound to it)")
    session.add_argument("--ttl", type=float, default=10.0,
                         help="seconds the session outlives its last keep-alive (default 10)")
    client_command("status", "show the contacted node's view of the cluster")
    return parser


def _print_entry(entry: Entry) -> None:
    fields = {"bucket": entry.bucket, "key": entry.key, "found": entry.found,
              "value": entry.value, "token": entry.token}
    print(json.dumps(fields))


def _hold_session(kv: Client, ttl: float) -> int:
    """Keep a session until Ctrl-C or SIGTERM (as containers and service managers stop
    processes), then close it, so that its keys end now rather than a TTL later."""
    stopped: list[int] = []
    # A flag, not an exception or an Event: a handler may run at any point of the
    # main thread, even inside a lock, and must neither raise nor take one.
    handlers = {sig: signal.signal(sig, lambda signum, _: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with kv.session(ttl) as session:
            print(session.id, flush=True)
            print(f"paxoskv: session open (ttl {ttl:g}s); bind keys with --session "
                  f"{session.id}; Ctrl-C or SIGTERM closes it", file=sys.stderr, flush=True)
            while not stopped and not session.lost.is_set():
                time.sleep(0.1)
            if stopped:
                return 0
        print("paxoskv: error: the session ended (keep-alives failed for a whole TTL)",
              file=sys.stderr)
        return 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _client_command(args: argparse.Namespace) -> int:
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not endpoints:
        raise CliError("no endpoints given")
    with Client(endpoints, timeout=args.timeout) as kv:
        if args.command == "status":
            print(json.dumps(kv.status(), indent=2))
            return 0
        if args.command == "session":
            return _hold_session(kv, args.ttl)
        options: dict[str, Any] = {"bucket": args.bucket, "no_quorum": args.no_quorum}
        if args.command == "put":
            until = args.until
            if args.ttl is not None:
                until = int((time.time() + args.ttl) * 1000)
            entry = kv.put(args.key, _parse_value(args.value, args.json), until=until,
                           parent=args.parent, session=args.session, node=args.node,
                           **options)
        elif args.command == "watch":
            entry = kv.watch(args.key, args.token, timeout=args.timeout, **options)
            _print_entry(entry)
            return 0 if entry.changed else 1
        elif args.command == "get":
            entry = kv.get(args.key, local=args.local, **options)
        else:
            entry = kv.delete(args.key, args.token, **options)
            if not entry.deleted:
                print(f"paxoskv: not deleted: the key's token is {entry.token} "
                      f"({'live' if entry.found else 'not found'})", file=sys.stderr)
                return 1
        _print_entry(entry)
        if args.command == "get" and not entry.found:
            print("paxoskv: not found", file=sys.stderr)
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from paxoskv.server.main import ServerConfig, run

            if args.name not in args.peers:
                raise CliError(f"--name {args.name!r} is not one of --peers "
                               f"({', '.join(args.peers)})")
            if args.listen is None:
                url = httpx.URL(args.peers[args.name])
                args.listen = (url.host, url.port or 80)
            run(ServerConfig(args.name, args.peers, args.listen[0], args.listen[1],
                             args.data_dir, args.admin_token, args.bootstrap), args.log_level)
            return 0
        if args.command == "dev":
            from paxoskv import devcluster

            if not 1 <= args.nodes <= 9:
                raise CliError("--nodes must be from 1 to 9")
            return devcluster.run(args.nodes, args.base_port, args.data_dir)
        return _client_command(args)
    except PaxosKVError as exc:
        print(f"paxoskv: error: {exc}", file=sys.stderr)
        return 1
    except (CliError, OSError) as exc:
        print(f"paxoskv: error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"paxoskv: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
