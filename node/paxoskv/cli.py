"""The `paxoskv` command: run nodes, a local cluster, and talk to a cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx

from paxoskv import __version__
from paxoskv.client import (
    DEFAULT_ENDPOINTS,
    Client,
    Entry,
    NoQuorum,
    NoQuorumPolicy,
    Page,
    PaxosKVError,
    check_endpoint,
)
from paxoskv.server.tls import TlsFiles

T = TypeVar("T")

# Exit statuses (documented in `paxoskv --help` and the README).
OK = 0
NO = 1  # a negative answer (not found, put lost, not deleted, no change, not bound) or
#         a request refused as invalid (the message says which)
USAGE = 2  # bad command line, endpoint or configuration
UNAVAILABLE = 3  # no quorum, no endpoint answered, or the server failed: for a put,
#                  delete or session change the outcome is unknown (read it back to find out)
DENIED = 4  # the cluster refused the credentials: no token, a wrong one, or out of scope

EXIT_CODES = """\
exit status:
  0  done: found, put won, swapped, deleted, changed, bound, session kept alive or
     closed
  1  the answer is no (not found; the put lost: the key holds another value; not
     swapped: the key is absent or holds another value or token; not deleted; no
     change in time; not bound; session ended), or the request was refused as invalid
     (the message names the option)
  2  usage: a bad option, endpoint or configuration file
  3  no quorum answered, or no endpoint did: never "not found"; for a put, a delete
     or a session change the outcome is unknown (read it back to find out)
  4  denied: the cluster needs a token (--auth-token) and got none or a wrong one, or
     the token's scopes do not cover the bucket
"""

SETTINGS = """\
settings (each from the first of: option, environment, configuration file, default):
  --endpoints URL,...  $PAXOSKV_ENDPOINTS  endpoints = ["http://h1:7001", ...]
  --bucket NAME        $PAXOSKV_BUCKET     bucket = "default"
  --timeout SECONDS    $PAXOSKV_TIMEOUT    timeout = 5
  --no-quorum POLICY   $PAXOSKV_NO_QUORUM  no_quorum = "fail"
  -o, --output FORMAT  $PAXOSKV_OUTPUT     output = "json"
  --auth-token TOKEN   $PAXOSKV_AUTH_TOKEN auth_token = "..."
  --cacert FILE        $PAXOSKV_CACERT     cacert = "/etc/paxoskv/ca.crt"
  --cert/--key FILE    $PAXOSKV_CERT/_KEY  cert = "...", key = "..."
The configuration file is TOML: --config FILE, $PAXOSKV_CONFIG, or
$XDG_CONFIG_HOME/paxoskv/config.toml (~/.config/paxoskv/config.toml) if present.
Options go before or after the command: `paxoskv -o value get k` = `paxoskv get k -o value`.
"""

EXAMPLES = """\
examples:
  paxoskv dev                          start a 3-node local cluster (Ctrl-C stops it)
  paxoskv put leader pod-a             put if absent; prints the decided entry
  paxoskv get leader -o value          linearizable read; only the value (exit 1 if absent)
  paxoskv delete leader --token 1      delete if the fencing token still matches
  paxoskv swap leader pod-a pod-b      compare-and-swap: pod-b if it holds pod-a
  paxoskv session --ttl 10             open a session, keep it alive until Ctrl-C or SIGTERM
  paxoskv put lock me --session ID     a key that ends with the session
  paxoskv pid lock                     the session the key is bound to
  paxoskv put lease x --ttl 30         a key that ends in 30 seconds
  paxoskv watch lock --token 1         wait until the key changes
  paxoskv list workers/ -o table       live keys beginning with workers/
  paxoskv buckets                      buckets holding a live key (`session list`, `nodes`)
  paxoskv status --all -o table        every endpoint's view of the cluster
  source <(paxoskv completion bash)    tab completion in bash
"""

DEV_EXAMPLES = """\
examples:
  paxoskv dev                               a 3-node cluster on ports 7001-7003
  paxoskv dev --nodes 5 --base-port 8001 --data-dir /tmp/kv
  paxoskv dev add                           (another shell) start n4 and add it
  paxoskv dev remove n2                     remove n2, stop it, delete its data

The data directory keeps the membership: the next `paxoskv dev` on it starts the same
members. Its nodes take the admin token in DATA_DIR/admin-token, so `paxoskv members`
works too: PAXOSKV_ADMIN_TOKEN=$(cat .paxoskv-dev/admin-token) paxoskv members list
"""

COMMAND_EXAMPLES = {
    "put": """\
examples:
  paxoskv put leader pod-a                  {"key": "leader", "found": true, "value": "pod-a", ...}
  paxoskv put config '{"replicas": 3}' --json
  paxoskv put lease x --ttl 30              ends in 30 s (or --until MS since the epoch)
  paxoskv put lock me --session ID          ends with the session (`paxoskv session`)
  paxoskv put shard-7 worker-a --parent lease --node n2

Put-if-absent: the first value decided stays until the key ends. If the key already
holds a live value, the put changes nothing, prints that entry, says on stderr that
it lost, and exits 1.
""",
    "get": """\
examples:
  paxoskv get leader                        the entry as JSON; exit 1 if not found
  paxoskv get leader -o value               only the value (strings as they are)
  paxoskv get leader --local                this node's latest known-chosen copy
""",
    "delete": """\
examples:
  paxoskv delete leader --token 1           ends generation 1, if it is still the live one
  paxoskv delete leader                     ends whatever generation is live

Exit 0 if that generation has ended (by this delete or before it), 1 if not (without
--token: 1 if the key was absent).
""",
    "swap": """\
examples:
  paxoskv swap leader pod-a pod-b           pod-b (a new generation) if it holds pod-a
  paxoskv swap counter 41 42 --json         values as JSON: the number 41, not "41"
  paxoskv swap config '{"v": 1}' '{"v": 2}' --json --token 3

Compare-and-swap: if the key is live and holds EXPECTED (and the fencing token --token,
if given), VALUE replaces it as a new generation (a larger token) that keeps the key's
bindings (deadline, session, node, parent); keys bound to it with --parent end. Prints
the entry; if it did not swap (the key is absent or holds another value or token),
says so on stderr and exits 1. Values compare as JSON: with --json, 1 is not 1.0.
""",
    "watch": """\
examples:
  paxoskv watch leader --token 3 --timeout 120
  paxoskv watch job --token 0               wait for the first put of a key

Exit 0 once the key's token differs from --token (the entry is printed), 1 if
--timeout seconds pass first.
""",
    "pid": """\
examples:
  paxoskv pid lock                          the session id the key is bound to
  paxoskv pid lock -o value

Exit 1 if the key is absent or not bound to a session.
""",
    "node": """\
examples:
  paxoskv node shard-7                      the node the key is bound to

Exit 1 if the key is absent or not bound to a node.
""",
    "session": """\
examples:
  paxoskv session --ttl 10                  open, print the id, keep alive until Ctrl-C
  id=$(paxoskv session open --ttl 30 -o value)
  paxoskv session keepalive "$id"           renew for another TTL (exit 1 if it ended)
  paxoskv session close "$id"               end it and every key bound to it
  paxoskv session list -o table             the open sessions: TTL, deadline, bound keys
""",
    "session list": """\
examples:
  paxoskv session list                      one JSON object per line: session, ttl_ms,
                                            until, remaining_ms, keys ("bucket/key")
  paxoskv session list -o table --all       every page, as a table
  paxoskv session list -o value             the ids only

Linearizable by default: the sessions are gathered from a quorum of members and each is
read through a quorum (every one listed was open when read; none open throughout is
missed). A session's keys are those the answering node knows bound to it, each read
live and still bound. Exit 3 without a quorum.
""",
    "buckets": """\
examples:
  paxoskv buckets                           buckets holding a live key, one per line
  paxoskv buckets --local -o table          this node's view, with its count of live keys
  paxoskv buckets -o value --all            the names only, every page

Linearizable by default: a bucket is listed if one of its keys reads live through a
quorum (none that held a live key throughout is missed); counts only with --local (this
node's chosen states). The reserved buckets (`_sessions`, `_nodes`) are never listed.
Exit 3 without a quorum.
""",
    "nodes": """\
examples:
  paxoskv nodes -o table                    every node ever alive: live, token, source
  paxoskv nodes --after n2                  the next page

A node's token is its incarnation: a node that goes down and comes back is a new
incarnation with a larger token, and keys bound to the old one (--node) are gone.
Linearizable by default (each node key read through a quorum). Exit 3 without a quorum.
""",
    "list": """\
examples:
  paxoskv list                              the first 100 keys, one JSON object per line
  paxoskv list pod- -o table --all          every key beginning with pod-, as a table
  paxoskv list --after pod-41 --limit 10    the next page (a page ends by naming its last key)
  paxoskv list --local -o value             this node's known-chosen values, no round trip

Linearizable by default: the keys are gathered from a quorum of members and each is read
through a quorum in turn (no key live since before the listing is missed; the page is
not one snapshot). Exit 3 without a quorum.
""",
    "status": """\
examples:
  paxoskv status                            the first answering endpoint's view
  paxoskv status --all -o table             every endpoint, answering or not
  paxoskv status -o value                   true if that node reaches a quorum

Exit 3 if no endpoint answers (each one is named, with the reason).
""",
    "members": """\
examples:
  export PAXOSKV_ADMIN_TOKEN=...            the admin token the nodes were started with
  paxoskv members list -o table             members, epoch, reachability, step in progress
  paxoskv members add n4 http://h4:7001     add a node started with `serve --join`
  paxoskv members remove n2                 remove a member (it may be down)
  paxoskv members resume                    finish a step whose driver stopped

A step returns once settled: every key re-decided under the new configuration.
Exit 1 if another step is in progress, 2 if refused (the reason is printed), 3 if no
endpoint answers or the answer was lost mid-step (see `members list`, then `resume`).
""",
    "completion": """\
examples:
  source <(paxoskv completion bash)                     in this shell
  paxoskv completion bash > /etc/bash_completion.d/paxoskv
  paxoskv completion zsh > "${fpath[1]}/_paxoskv"
""",
}

# What the CLI calls the request fields the server names in its errors.
FLAGS = {
    "key": "key", "value": "value", "expected": "expected", "bucket": "--bucket",
    "token": "--token",
    "timeout_ms": "--timeout", "ttl_ms": "--ttl", "no_quorum": "--no-quorum",
    "consistency": "--local", "session": "session id", "bindings.until": "--until",
    "bindings.key": "--parent", "bindings.pid": "--session", "bindings.node": "--node",
    "after": "--after", "limit": "--limit",
}
OUTPUTS = ("json", "table", "value")
POLICIES = ("fail", "retry", "return")


class CliError(Exception):
    """A one-line error for the user; exit status `status` (1 unless told)."""

    def __init__(self, message: str, status: int = NO) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def _seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {raw!r}") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {raw!r}")
    return seconds


def _natural(least: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            number = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {least}, "
                                             f"got {raw!r}")
        return number

    parse.__name__ = "integer"
    return parse


def _parse_value(raw: str, as_json: bool, name: str = "value") -> Any:
    if not as_json:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"{name} is not valid JSON ({exc.msg} at column {exc.colno})") from None


# -- the parser ---------------------------------------------------------------------------


def _global_options() -> Parser:
    """The options every client command takes, before or after the command. Their
    defaults are suppressed so that a value given before the command survives; the
    real defaults come from `settings`."""
    common = Parser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    suppress: dict[str, Any] = {"default": argparse.SUPPRESS}
    group.add_argument("--endpoints", metavar="URL,...", **suppress,
                       help="comma-separated node URLs (default: $PAXOSKV_ENDPOINTS, the "
                       "configuration file, or the local dev cluster 127.0.0.1:7001-7003)")
    group.add_argument("--bucket", metavar="NAME", **suppress,
                       help="namespace (default 'default')")
    group.add_argument("--timeout", metavar="SECONDS", type=_seconds, **suppress,
                       help="how long to wait, for a watch or with --no-quorum retry too "
                       "(default 5; any length)")
    group.add_argument("--no-quorum", choices=POLICIES, **suppress,
                       help="without a quorum: fail at once with exit 3 (default), retry "
                       "until --timeout, or return: print the error entry and exit 3")
    group.add_argument("-o", "--output", choices=OUTPUTS, **suppress,
                       help="json (default: one object per line), table, or value (only "
                       "the value)")
    group.add_argument("--auth-token", metavar="TOKEN", **suppress,
                       help="bearer token for a cluster whose data API needs one (default: "
                       "$PAXOSKV_AUTH_TOKEN or the configuration file; prefer those: a command "
                       "line is visible to other users)")
    group.add_argument("--cacert", metavar="FILE", **suppress,
                       help="CA certificate (PEM) to trust for https:// endpoints (default: "
                       "$PAXOSKV_CACERT, the configuration file, or the system's CAs)")
    group.add_argument("--cert", metavar="FILE", **suppress,
                       help="client certificate (PEM), for a cluster that asks for one "
                       "(default: $PAXOSKV_CERT)")
    group.add_argument("--key", metavar="FILE", dest="keyfile", **suppress,
                       help="its private key (PEM; default: $PAXOSKV_KEY)")
    group.add_argument("--config", metavar="FILE", type=Path, **suppress,
                       help="TOML file of defaults (default: $PAXOSKV_CONFIG or "
                       "~/.config/paxoskv/config.toml)")
    return common


def _paging(parser: Parser, what: str, name: str) -> None:
    """The options of a listing, a page at a time."""
    parser.add_argument("--limit", type=_natural(1), default=100, metavar="N",
                        help=f"{what} per page, 1-1000 (default 100)")
    parser.add_argument("--after", metavar=name,
                        help=f"start after this {name.lower()} (the `next` a previous page "
                        "printed)")
    parser.add_argument("--all", action="store_true", help="every page, not just the first")
    parser.add_argument("--local", action="store_true",
                        help=f"this node's known-chosen {what}: cheaper, maybe stale or "
                        "incomplete")


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = Parser(
        prog="paxoskv", description="PaxosKV: a strongly consistent, leaderless key-value "
        "store for coordination.", epilog=f"{EXAMPLES}\n{SETTINGS}\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    parser.add_argument("--version", action="version", version=f"paxoskv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=Parser)

    serve = sub.add_parser("serve", help="run one node",
                           description="Run one PaxosKV node until SIGTERM or Ctrl-C.",
                           epilog="example:\n  paxoskv serve --name n1 --data-dir /var/lib/"
                           "paxoskv --bootstrap \\\n    --peers n1=http://10.0.0.1:7001,"
                           "n2=http://10.0.0.2:7001,n3=http://10.0.0.3:7001\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--name", required=True, help="this node's member name, e.g. n1")
    serve.add_argument("--peers", required=True, type=_parse_peers,
                       help="every member, this one included: n1=http://h1:7001,n2=...")
    serve.add_argument("--listen", type=_parse_listen, default=None,
                       help="HOST:PORT to listen on (default: this node's address in --peers)")
    serve.add_argument("--data-dir", type=Path, required=True,
                       help="directory for the acceptor's durable state")
    start = serve.add_mutually_exclusive_group()
    start.add_argument("--bootstrap", action="store_true",
                       help="if the data directory is empty, create a new cluster of the "
                       "members in --peers (every one started with --bootstrap on an empty "
                       "directory); ignored once the directory belongs to a cluster. Never "
                       "use it to restart a member that lost its data")
    start.add_argument("--join", action="store_true",
                       help="if the data directory is empty, wait to be added to the running "
                       "cluster of the other members in --peers (paxoskv members add NAME "
                       "URL, run against any member); ignored once the directory belongs "
                       "to a cluster. A member that lost its data joins this way, as a new "
                       "member")
    serve.add_argument("--admin-token", default=os.environ.get("PAXOSKV_ADMIN_TOKEN"),
                       help="enable the admin endpoint (node liveness reports) for this "
                       "bearer token (default: $PAXOSKV_ADMIN_TOKEN; unset: disabled)")
    tls = serve.add_argument_group(
        "security", "TLS for clients and peers (mutual for peers) and tokens for the data "
        "API; every file is reloaded when it changes")
    tls.add_argument("--tls-cert", type=Path, metavar="FILE",
                     help="this node's certificate (PEM), for serving and, as a client "
                     "certificate, for its peer links: give it both usages and the names "
                     "in --peers. Every URL in --peers is then https://")
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    tls.add_argument("--tls-ca", type=Path, metavar="FILE",
                     help="the CA that signs the members' certificates (PEM); a connection "
                     "to the peer endpoint must present a certificate it signed")
    tls.add_argument("--auth-file", type=Path, metavar="FILE",
                     help="bearer tokens for the data API, with read/write scopes per "
                     "bucket (TOML; see the README). Unset: the data API is open")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])

    sidecar = sub.add_parser(
        "sidecar", help="run beside an application in its pod: the store on localhost, "
        "speaking for the pod", parents=[common],
        description="Serve the data API on localhost of an application pod, forwarded to the\n"
        "cluster at --endpoints (failing over between them). Puts may bind keys to the\n"
        'pod ("bindings": {"node": "self"}: reported alive by the operator while the pod\n'
        'is Ready) or to a session the sidecar keeps for the pod ({"pid": "self"}: closed\n'
        "on SIGTERM). Bindings naming another pod or session are refused. The pod comes\n"
        "from the downward API ($POD_NAME, $POD_NAMESPACE).",
        epilog="example (a container of the application's pod):\n  paxoskv sidecar "
        "--endpoints http://kv.apps.svc.cluster.local:7001\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sidecar.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 7001),
                         help="HOST:PORT to listen on (default: 127.0.0.1:7001; keep it on "
                         "loopback: whoever reaches it speaks for the pod)")
    sidecar.add_argument("--pod", default=os.environ.get("POD_NAME"),
                         help="this pod's name (default: $POD_NAME, from the downward API)")
    sidecar.add_argument("--pod-namespace", default=os.environ.get("POD_NAMESPACE", ""),
                         help="this pod's namespace (default: $POD_NAMESPACE)")
    sidecar.add_argument("--session-ttl", type=float, default=10.0, metavar="SECONDS",
                         help="TTL of the pod's session: how long its keys outlive the "
                         "sidecar if it dies without closing it (default: 10)")
    sidecar.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"])

    dev = sub.add_parser("dev", help="run a local cluster on 127.0.0.1; add or remove "
                         "its nodes while it runs",
                         description="Start N node processes on 127.0.0.1 with their own "
                         "data directories, wait until they are ready, and keep them "
                         "running (restarting those that exit) until Ctrl-C. While it "
                         "runs, `paxoskv dev add` and `paxoskv dev remove NAME` (in another "
                         "shell) scale it one member at a time.",
                         epilog=DEV_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    dev.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    dev.add_argument("--base-port", type=int, default=7001,
                     help="port of node n1; node nI listens on base + I - 1 (default 7001)")
    data_dir_help = "root of the nodes' data directories (default .paxoskv-dev)"
    dev.add_argument("--data-dir", type=Path, default=Path(".paxoskv-dev"), help=data_dir_help)

    def command(name: str, help_: str, keyed: bool = True,
                into: argparse._SubParsersAction[Parser] = sub,
                examples: str | None = None) -> Parser:
        p = into.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                            parents=[common], epilog=examples or COMMAND_EXAMPLES.get(name),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if keyed:
            p.add_argument("key", help="the key (1-1024 bytes of UTF-8)")
        return p

    put = command("put", "put a value if the key is absent; print the decided entry")
    put.add_argument("value", help="the value (a string; with --json, any JSON but null)")
    put.add_argument("--json", action="store_true", help="parse VALUE as JSON")
    put.add_argument("--until", type=_natural(0), metavar="MS",
                     help="the key ends at this deadline (ms since the epoch)")
    put.add_argument("--ttl", type=_seconds, metavar="SECONDS",
                     help="the key ends this many seconds from now (sets --until)")
    put.add_argument("--parent", metavar="KEY", help="the key ends when KEY (same bucket) does")
    put.add_argument("--session", metavar="ID", help="the key ends when the session does "
                     "(see `paxoskv session`)")
    put.add_argument("--node", metavar="NAME", help="the key ends when node NAME is not alive")
    get = command("get", "read a key; exit status 1 if it is not found")
    get.add_argument("--local", action="store_true",
                     help="read this node's latest known-chosen copy: cheaper, maybe stale")
    delete = command("delete", "delete a key: the generation --token if it is still live, "
                     "else (without --token) whatever is live")
    delete.add_argument("--token", type=_natural(1),
                        help="the fencing token (generation) to end; without it, the live one")
    swap = command("swap", "compare-and-swap: replace the key's value with VALUE if it is "
                   "EXPECTED, as a new generation that keeps its bindings")
    swap.add_argument("expected", help="the value the key must hold (a string; with "
                      "--json, any JSON but null)")
    swap.add_argument("value", help="its new value (a string; with --json, any JSON but "
                      "null)")
    swap.add_argument("--json", action="store_true", help="parse EXPECTED and VALUE as JSON")
    swap.add_argument("--token", type=_natural(1),
                      help="swap only if the fencing token (generation) is still this one")
    watch = command("watch", "wait until the key's fencing token differs from --token, "
                    "for up to --timeout seconds; print the entry")
    watch.add_argument("--token", type=_natural(0), default=0,
                       help="the token last seen (default 0: wait for the first put)")
    command("pid", "print the session a key is bound to")
    command("node", "print the node a key is bound to")

    session = command("session", "open a session, print its id and keep it alive until "
                      "Ctrl-C or SIGTERM, then close it (ending every key bound to it)",
                      keyed=False)
    ttl_help = "seconds the session outlives its last keep-alive (1-3600, default 10)"
    session.add_argument("--ttl", type=_seconds, default=argparse.SUPPRESS, help=ttl_help)
    actions = session.add_subparsers(dest="session_command", metavar="ACTION",
                                     parser_class=Parser)
    opened = command("open", "open a session, print its id and exit (keep it alive with "
                     "`paxoskv session keepalive ID`)", keyed=False, into=actions)
    opened.add_argument("--ttl", type=_seconds, default=argparse.SUPPRESS, help=ttl_help)
    for name, what in (("keepalive", "renew a session for another TTL; exit 1 if it has "
                        "ended"), ("close", "close a session, ending every key bound to "
                                   "it; exit 1 if it had already ended")):
        action = command(name, what, keyed=False, into=actions)
        action.add_argument("id", metavar="ID", help="the session id")
    listed = command("list", "list the open sessions (TTL, deadline, bound keys), by id, a "
                     "page at a time", keyed=False, into=actions,
                     examples=COMMAND_EXAMPLES["session list"])
    _paging(listed, "sessions", "ID")

    listing = command("list", "list the bucket's live keys beginning with PREFIX, in key "
                      "order, a page at a time", keyed=False)
    listing.add_argument("prefix", nargs="?", default="",
                         help="only keys beginning with it (default: every key)")
    _paging(listing, "keys", "KEY")
    _paging(command("buckets", "list the buckets holding a live key, by name, a page at a "
                    "time", keyed=False), "buckets", "NAME")
    _paging(command("nodes", "list the node incarnations (every node ever alive, live or "
                    "ended, with its token), by name, a page at a time", keyed=False),
            "nodes", "NAME")
    status = command("status", "show the cluster as the first answering endpoint sees it",
                     keyed=False)
    status.add_argument("--all", action="store_true",
                        help="ask every endpoint; list the ones that do not answer too")
    dev_steps = dev.add_subparsers(dest="dev_command", metavar="{add,remove}",
                                   parser_class=Parser)
    dev_add = command("add", "start the next local node and add it as a member; returns "
                      "once it holds every key", keyed=False, into=dev_steps)
    dev_remove = command("remove", "remove a member of the local cluster, then stop its "
                         "node and delete its data", keyed=False, into=dev_steps)
    dev_remove.add_argument("name", help="the member's name, e.g. n2")
    for p in (dev_add, dev_remove):
        # SUPPRESS: `paxoskv dev --data-dir D add` keeps D.
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=data_dir_help)

    members = command("members", "list the members; add, remove (one at a time, agreed by "
                      "consensus) or resume a step (admin)", keyed=False)
    steps = members.add_subparsers(dest="members_command", metavar="ACTION", required=True,
                                   parser_class=Parser)
    step_parsers = [
        command("list", "the members, the epoch and the step in progress", keyed=False,
                into=steps),
        command("add", "add a node started with `paxoskv serve --join`; returns once the "
                "step settled (the new member holds every key)", keyed=False, into=steps),
        command("remove", "remove a member (it may be down); returns once the step "
                "settled", keyed=False, into=steps),
        command("resume", "finish a step whose driver stopped before it settled",
                keyed=False, into=steps),
    ]
    for p in [members, *step_parsers]:
        p.add_argument("--admin-token", default=argparse.SUPPRESS,
                       help="the cluster's admin token (default: $PAXOSKV_ADMIN_TOKEN)")
    step_parsers[1].add_argument("name", help="the new member's name (its --name)")
    step_parsers[1].add_argument("url", help="its base URL, e.g. http://10.0.0.4:7001")
    step_parsers[2].add_argument("name", help="the member's name")
    completion = sub.add_parser("completion", help="print a shell completion script",
                                description="Print a completion script for bash or zsh.",
                                epilog=COMMAND_EXAMPLES["completion"],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    completion.add_argument("shell", choices=["bash", "zsh"])
    return parser


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    endpoints: list[str]
    bucket: str
    timeout: float
    no_quorum: NoQuorumPolicy
    output: str
    security: dict[str, str]  # Client options: auth_token, cafile, certfile, keyfile

    def client(self) -> Client:
        try:
            return Client(self.endpoints, timeout=self.timeout, bucket=self.bucket,
                          no_quorum=self.no_quorum, **self.security)
        except ValueError as exc:
            raise CliError(str(exc), USAGE) from None


CONFIG_SETTINGS = ("endpoints", "bucket", "timeout", "no_quorum", "output", "auth_token",
                   "cacert", "cert", "key")
# Client option: (settings name and attribute, environment variable, flag).
SECURITY = {"auth_token": ("auth_token", "PAXOSKV_AUTH_TOKEN", "--auth-token"),
            "cafile": ("cacert", "PAXOSKV_CACERT", "--cacert"),
            "certfile": ("cert", "PAXOSKV_CERT", "--cert"),
            "keyfile": ("key", "PAXOSKV_KEY", "--key")}


def _config_file(args: argparse.Namespace) -> dict[str, Any]:
    explicit: Path | None = getattr(args, "config", None)
    if explicit is None and os.environ.get("PAXOSKV_CONFIG"):
        explicit = Path(os.environ["PAXOSKV_CONFIG"])
    if explicit is not None:
        path = explicit
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        path = Path(base) / "paxoskv" / "config.toml"
        if not path.is_file():
            return {}
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read configuration file {path}: {exc.strerror}", USAGE) from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"configuration file {path} is not valid TOML: {exc}", USAGE) from None
    unknown = sorted(set(data) - set(CONFIG_SETTINGS))
    if unknown:
        raise CliError(f"configuration file {path}: unknown setting {unknown[0]!r} (known: "
                       f"{', '.join(CONFIG_SETTINGS)})", USAGE)
    return {"path": path, **data}


def settings(args: argparse.Namespace) -> Settings:
    """The client settings: option, then environment, then configuration file, then
    default; a bad one is a usage error naming where it came from."""
    config = _config_file(args)

    def pick(name: str, env: str, flag: str, attr: str | None = None
             ) -> tuple[Any, str] | None:
        if hasattr(args, attr or name):
            return getattr(args, attr or name), flag
        if os.environ.get(env):
            return os.environ[env], f"${env}"
        if name in config:
            return config[name], f"{name} in {config['path']}"
        return None

    def endpoints() -> list[str]:
        chosen = pick("endpoints", "PAXOSKV_ENDPOINTS", "--endpoints")
        if chosen is None:
            return list(DEFAULT_ENDPOINTS)
        raw, where = chosen
        urls = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise CliError(f"{where}: expected URLs", USAGE)
        urls = [u.strip() for u in urls if u.strip()]
        if not urls:
            raise CliError(f"{where}: no endpoints given", USAGE)
        try:
            return [check_endpoint(u) for u in urls]
        except ValueError as exc:
            raise CliError(f"{where}: {exc}", USAGE) from None

    def timeout() -> float:
        chosen = pick("timeout", "PAXOSKV_TIMEOUT", "--timeout")
        if chosen is None:
            return 5.0
        raw, where = chosen
        try:
            return _seconds(str(raw))
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"{where}: {exc}", USAGE) from None

    def choice(name: str, env: str, flag: str, allowed: Sequence[str], default: str) -> str:
        chosen = pick(name, env, flag)
        if chosen is None:
            return default
        raw, where = chosen
        if raw not in allowed:
            raise CliError(f"{where}: expected one of {', '.join(allowed)}, got {raw!r}",
                           USAGE)
        return str(raw)

    def security() -> dict[str, str]:
        chosen: dict[str, str] = {}
        for option, (name, env, flag) in SECURITY.items():
            # --key's attribute is `keyfile`: commands take a positional KEY.
            found = pick(name, env, flag, "keyfile" if name == "key" else None)
            if found is not None:
                if not isinstance(found[0], str) or not found[0]:
                    raise CliError(f"{found[1]}: expected a non-empty string", USAGE)
                chosen[option] = found[0]
        if "keyfile" in chosen and "certfile" not in chosen:
            raise CliError("--key needs --cert (the client certificate it belongs to)", USAGE)
        return chosen

    bucket = pick("bucket", "PAXOSKV_BUCKET", "--bucket")
    policy = choice("no_quorum", "PAXOSKV_NO_QUORUM", "--no-quorum", POLICIES, "fail")
    return Settings(endpoints(), str(bucket[0]) if bucket else "default", timeout(),
                    "retry" if policy == "retry" else "return" if policy == "return"
                    else "fail",
                    choice("output", "PAXOSKV_OUTPUT", "--output", OUTPUTS, "json"),
                    security())


# -- output -------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and not value:
        return "-"
    return json.dumps(value, separators=(",", ":"))


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(name for row in rows for name in row))
    cells = [[name.upper() for name in columns]]
    cells += [[_cell(row.get(name)) for name in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


class Output:
    def __init__(self, form: str) -> None:
        self.form = form

    def emit(self, data: dict[str, Any], value: Any = None, pretty: bool = False) -> None:
        """Print `data` as JSON or a table, or just `value` (nothing if None)."""
        if self.form == "value":
            if value is not None:
                print(value if isinstance(value, str) else json.dumps(value))
        elif self.form == "table":
            print(_table([data]))
        else:
            print(json.dumps(data, indent=2 if pretty else None))

    def entry(self, entry: Entry, *extra: str) -> None:
        """An entry: its state with `extra` ("deleted", "changed"), or its error."""
        full = entry.to_dict()
        if not entry.ok:
            self.emit(full)
            return
        shown = ["bucket", "key", "found", "value", "token", "bindings", *extra]
        self.emit({name: full[name] for name in shown}, entry.value)


def say(message: str) -> None:
    print(f"paxoskv: {message}", file=sys.stderr, flush=True)


# -- commands -----------------------------------------------------------------------------


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
            say(f"session open (ttl {ttl:g}s); bind keys with --session {session.id}; "
                "Ctrl-C or SIGTERM closes it")
            while not stopped and not session.lost.is_set():
                time.sleep(0.1)
            if stopped:
                return OK
        say("error: the session ended (keep-alives failed for a whole TTL)")
        return NO
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _check_ttl(ttl: float) -> float:
    if not 1 <= ttl <= 3600:
        raise CliError(f"--ttl must be from 1 to 3600 seconds, not {ttl:g}", USAGE)
    return ttl


def _session_command(kv: Client, args: argparse.Namespace, out: Output) -> int:
    action = args.session_command
    ttl = _check_ttl(getattr(args, "ttl", 10.0))
    if action is None:
        return _hold_session(kv, ttl)
    if action == "list":
        return _list_command(kv, args, out)
    if action == "open":
        session_id = kv.open_session(ttl)
        out.emit({"session": session_id, "ttl": ttl}, session_id)
        say(f"session open (ttl {ttl:g}s): keep it alive with `paxoskv session keepalive "
            f"{session_id}` within every {ttl:g} s; `paxoskv session close` ends it")
        return OK
    if action == "keepalive":
        until = kv.keep_alive(args.id)
        out.emit({"session": args.id, "alive": until is not None, "until": until}, until)
        if until is None:
            say(f"session {args.id} has ended (closed, expired or unknown)")
            return NO
        return OK
    closed = kv.close_session(args.id)
    out.emit({"session": args.id, "closed": closed}, closed)
    if not closed:
        say(f"session {args.id} had already ended (closed, expired or unknown)")
        return NO
    return OK


def _list_command(kv: Client, args: argparse.Namespace, out: Output) -> int:
    """A listing (of a bucket's keys, the buckets, the sessions or the nodes)."""
    if args.command == "list":
        return _paged(args, out, "keys", lambda after: kv.list_keys(
            args.prefix, after=after, limit=args.limit, local=args.local),
            lambda e: ({name: e.to_dict()[name]
                        for name in ("key", "value", "token", "bindings")}, e.value))
    if args.command == "buckets":
        return _paged(args, out, "buckets", lambda after: kv.list_buckets(
            after=after, limit=args.limit, local=args.local),
            lambda b: ({"bucket": b.name, "keys": b.keys}, b.name))
    if args.command == "nodes":
        return _paged(args, out, "nodes", lambda after: kv.list_nodes(
            after=after, limit=args.limit, local=args.local),
            lambda n: ({"name": n.name, "live": n.live, "token": n.token,
                        "source": n.source}, n.name))
    return _paged(args, out, "sessions", lambda after: kv.list_sessions(
        after=after, limit=args.limit, local=args.local),
        lambda s: ({"session": s.id, "ttl_ms": s.ttl_ms, "until": s.until,
                    "remaining_ms": s.remaining_ms,
                    "keys": [f"{bucket}/{key}" for bucket, key in s.keys]}, s.id))


def _paged(args: argparse.Namespace, out: Output, what: str,
           fetch: Callable[[str | None], Page[T]], row: Callable[[T], tuple[dict[str, Any], Any]]
           ) -> int:
    """Entries one per line (JSON), as a table, or values only; `next` on stderr."""
    if args.limit > 1000:
        raise CliError("--limit must be from 1 to 1000", USAGE)
    rows: list[dict[str, Any]] = []
    after = args.after
    while True:
        page = fetch(after)
        for entry in page.entries:
            shown, value = row(entry)
            if out.form == "table":
                rows.append(shown)
            else:
                out.emit(shown, value)
        after = page.next
        if after is None or not args.all:
            break
    if out.form == "table":
        print(_table(rows) if rows else f"(no {what})")
    if after is not None:
        say(f"more {what} follow: --after {shlex.quote(after)} (or --all)")
    return OK


def _status_command(kv: Client, args: argparse.Namespace, out: Output) -> int:
    if not args.all:
        status = kv.status()
        if out.form == "table":
            print(f"{status['name']} at {status['endpoint']}: "
                  f"{'quorate' if status['quorate'] else 'NOT QUORATE'} (quorum "
                  f"{status['quorum']}), {status['keys']} keys, version {status['version']}")
            print(_table([{k: v for k, v in m.items()} for m in status["members"]]))
        else:
            out.emit(status, status["quorate"], pretty=True)
        return OK
    views = kv.status_all()
    if out.form == "json":
        print(json.dumps(views, indent=2))
    elif out.form == "value":
        for view in views:
            print(f"{view['endpoint']} {view.get('quorate', view.get('error'))}")
    else:
        rows = []
        for view in views:
            members = view.get("members", [])
            rows.append({"endpoint": view["endpoint"], "name": view.get("name"),
                         "quorate": view.get("quorate"),
                         "connected": f"{sum(m['connected'] for m in members)}/"
                                      f"{len(members)}" if members else None,
                         "keys": view.get("keys"),
                         "error": (f"{view['error']}: {view['message']}"
                                   if "error" in view else None)})
        print(_table(rows))
    answered = [v for v in views if "error" not in v]
    if not answered:
        say("error: unreachable: no endpoint answered")
        return UNAVAILABLE
    return OK


def _key_command(kv: Client, args: argparse.Namespace, out: Output, policy: NoQuorumPolicy
                 ) -> int:
    command = args.command
    if command in ("pid", "node"):
        lookup = kv.pid if command == "pid" else kv.node
        bound = lookup(args.key, no_quorum=policy)
        out.emit({"bucket": kv.bucket, "key": args.key, "found": bound is not None,
                  command: bound}, bound)
        if bound is None:
            what = "a session" if command == "pid" else "a node"
            say(f"not bound: key {args.key!r} is absent or not bound to {what}")
            return NO
        return OK
    if command == "put":
        until = args.until
        if args.ttl is not None:
            if until is not None:
                raise CliError("give --ttl or --until, not both", USAGE)
            until = int((time.time() + args.ttl) * 1000)
        value = _parse_value(args.value, args.json)
        entry = kv.put(args.key, value, until=until, parent=args.parent,
                       session=args.session, node=args.node, no_quorum=policy)
        out.entry(entry, "created")
        if entry.ok and not entry.created:
            say(f"put lost: key {args.key!r} already holds "
                f"{'another value' if entry.value != value else 'this value, put by another'}"
                f" (token {entry.token}); nothing was written")
            return NO
    elif command == "get":
        entry = kv.get(args.key, local=args.local, no_quorum=policy)
        out.entry(entry)
        if entry.ok and not entry.found:
            say("not found")
            return NO
    elif command == "swap":
        expected = _parse_value(args.expected, args.json, "expected")
        entry = kv.swap(args.key, expected, _parse_value(args.value, args.json),
                        args.token, no_quorum=policy)
        out.entry(entry, "swapped")
        if entry.ok and not entry.swapped:
            held = ("is absent" if not entry.found else f"is at token {entry.token}, not "
                    f"--token {args.token}" if args.token not in (None, entry.token)
                    else f"holds another value (token {entry.token})")
            say(f"not swapped: key {args.key!r} {held}; nothing was written")
            return NO
    elif command == "delete":
        entry = kv.delete(args.key, args.token, no_quorum=policy)
        out.entry(entry, "deleted")
        if entry.ok and not entry.deleted:
            say(f"not deleted: the key's token is {entry.token} "
                f"({'live' if entry.found else 'not found'})")
            return NO
    else:
        if sys.stderr.isatty():
            say(f"waiting up to {kv.timeout:g} s for {args.key!r} to change from token "
                f"{args.token} (Ctrl-C stops)")
        entry = kv.watch(args.key, args.token, timeout=kv.timeout, no_quorum=policy)
        out.entry(entry, "changed")
        if entry.ok and not entry.changed:
            say(f"no change within {kv.timeout:g} s")
            return NO
    if not entry.ok:
        say(f"error: {entry.error}: {entry.message}")
        return UNAVAILABLE
    return OK


def _client_command(args: argparse.Namespace) -> int:
    chosen = settings(args)
    out = Output(chosen.output)
    if chosen.no_quorum == "retry" and sys.stderr.isatty():
        say(f"retrying without a quorum for up to {chosen.timeout:g} s (Ctrl-C stops)")
    with chosen.client() as kv:
        if args.command == "status":
            return _status_command(kv, args, out)
        if args.command == "session":
            return _session_command(kv, args, out)
        if args.command in ("list", "buckets", "nodes"):
            return _list_command(kv, args, out)
        return _key_command(kv, args, out, chosen.no_quorum)


def _sidecar_command(args: argparse.Namespace) -> int:
    from paxoskv import sidecar
    from paxoskv.server.main import setup_logging

    if not args.pod:
        raise CliError("--pod is required (or $POD_NAME, from the downward API: "
                       "valueFrom.fieldRef.fieldPath: metadata.name)")
    if not 1 <= args.session_ttl <= 3600:
        raise CliError(f"--session-ttl must be 1 to 3600 seconds, not {args.session_ttl:g}")
    chosen = settings(args)
    chosen.client().close()  # a missing or bad CA or certificate file: a usage error now
    setup_logging(args.log_level)
    asyncio.run(sidecar.serve(sidecar.Pod(args.pod, args.pod_namespace), chosen.endpoints,
                              args.listen[0], args.listen[1], args.session_ttl,
                              chosen.security))
    return OK


def _error_line(exc: PaxosKVError) -> str:
    if exc.field is None:
        return f"{exc.code}: {exc.message}"
    return f"{exc.code} ({FLAGS.get(exc.field, exc.field)}): {exc.message}"


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(given.values()):
        return None
    missing = [flag for flag, path in given.items() if path is None]
    if missing:
        raise CliError(f"{', '.join(missing)} missing: TLS needs --tls-cert, --tls-key "
                       "and --tls-ca together")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


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
                args.listen = (url.host, url.port or (443 if url.scheme == "https" else 80))
            run(ServerConfig(args.name, args.peers, args.listen[0], args.listen[1],
                             args.data_dir, args.admin_token, args.bootstrap, args.join,
                             _tls_files(args), args.auth_file),
                args.log_level)
            return OK
        if args.command == "sidecar":
            return _sidecar_command(args)
        if args.command == "dev" and args.dev_command is not None:
            from paxoskv import devcontrol

            return devcontrol.run(args, settings(args).output)
        if args.command == "dev":
            from paxoskv import devcluster

            if not 1 <= args.nodes <= 9:
                raise CliError("--nodes must be from 1 to 9")
            return devcluster.run(args.nodes, args.base_port, args.data_dir)
        if args.command == "completion":
            print(completion_script(build_parser(), args.shell))
            return OK
        if args.command == "members":
            from paxoskv import members_cli

            chosen = settings(args)
            return members_cli.run(args, chosen.endpoints, chosen.output, chosen.security)
        return _client_command(args)
    except NoQuorum as exc:
        say(f"error: {_error_line(exc)}")
        return UNAVAILABLE
    except PaxosKVError as exc:
        say(f"error: {_error_line(exc)}")
        if exc.status in (401, 403):
            return DENIED
        return UNAVAILABLE if exc.status is None or exc.status >= 500 else NO
    except CliError as exc:
        say(f"error: {exc}")
        return exc.status
    except OSError as exc:
        say(f"error: {exc}")
        return NO
    except httpx.HTTPError as exc:
        say(f"error: {exc}")
        return UNAVAILABLE
    except KeyboardInterrupt:
        return 130


# -- shell completion ---------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")
            or o == "-o"]


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash completion function for `paxoskv` (zsh runs it through bashcompinit)."""
    commands = _subcommands(parser)
    cases = []
    for name, sub in commands.items():
        words = _options(sub) + list(_subcommands(sub))
        cases.append(f'        {name}) opts="{" ".join(words)}" ;;')
    values = {o: " ".join(str(c) for c in a.choices) for p in [parser, *commands.values()]
              for a in p._actions if a.choices and not isinstance(a, argparse._SubParsersAction)
              for o in a.option_strings}
    value_cases = [f'        {o}) COMPREPLY=($(compgen -W "{w}" -- "$cur")); return ;;'
                   for o, w in values.items()]
    script = f"""\
# paxoskv completion for {shell}: source <(paxoskv completion {shell})
_paxoskv() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" i opts
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(commands)}) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$prev" in
{chr(10).join(value_cases)}
        --config|--data-dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "$cmd" in
{chr(10).join(cases)}
        *) opts="{" ".join(commands)} {" ".join(_options(parser))}" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _paxoskv paxoskv"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
