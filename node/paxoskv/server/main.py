"""Run one node: open storage, start the HTTP server and peer links, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from paxoskv.core.acceptor import Acceptor
from paxoskv.core.config import Config, Member
from paxoskv.server import identity as ident
from paxoskv.server import members_api
from paxoskv.server.api import create_app, identity_app
from paxoskv.server.auth import Tokens
from paxoskv.server.lifetimes import Lifetimes
from paxoskv.server.liveness import Liveness
from paxoskv.server.membership import Membership
from paxoskv.server.node import Node
from paxoskv.server.storage import (
    NO_FSYNC,
    REPLY_BEFORE_DURABLE,
    DataDirInUse,
    LaggingStorage,
    Storage,
)
from paxoskv.server.tls import FilesWatch, NodeTls, TlsFiles
from paxoskv.server.transport import MessageFaults, PeerLink

log = logging.getLogger("paxoskv.server")


@dataclass(frozen=True)
class ServerConfig:
    name: str
    members: dict[str, str]  # name -> base URL, this node's included
    listen_host: str
    listen_port: int
    data_dir: Path
    admin_token: str | None = None  # enables /v1/admin/* for bearers of this token
    bootstrap: bool = False  # may create a new cluster on an empty data directory
    join: bool = False  # on an empty data directory, wait to be added to a running cluster
    tls: TlsFiles | None = None  # HTTPS for clients and peers, mutual for peers (tls.py)
    auth_file: Path | None = None  # bearer tokens for the data API (auth.py)


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        for name in ("node", "peer", "url", "keys", "boot", "epoch", "error", "cluster"):
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# Test-only: shift this node's wall clock, to show that deadlines hold under skew.
CLOCK_SKEW_VARIABLE = "PAXOSKV_TEST_CLOCK_SKEW_MS"
# Test-only: break safety on purpose, to show that the fault tests' checker notices.
# "promise-without-accepted": the acceptor answers prepares as if it had accepted nothing;
# "lose-unsynced-writes": writes are acknowledged and held in memory for seconds before
# they reach the disk; "no-fsync": commits are never fsynced; "reply-before-durable":
# replies leave as soon as the write is queued (storage.py).
BREAK_VARIABLE = "PAXOSKV_TEST_BREAK"
BREAKS = frozenset({"promise-without-accepted", "lose-unsynced-writes", NO_FSYNC,
                    REPLY_BEFORE_DURABLE})


# Test-only: crash at named points, e.g. "after-persist-before-reply=0.01" (a chance).
FAILPOINTS_VARIABLE = "PAXOSKV_TEST_FAILPOINTS"
FAILPOINTS = frozenset({"after-persist-before-reply"})


def failpoints() -> dict[str, float]:
    chosen: dict[str, float] = {}
    for item in filter(None, os.environ.get(FAILPOINTS_VARIABLE, "").split(",")):
        name, _, chance = item.partition("=")
        try:
            if name not in FAILPOINTS:
                raise ValueError(name)
            chosen[name] = float(chance or "1")
        except ValueError:
            raise SystemExit(f"paxoskv: error: {FAILPOINTS_VARIABLE}: expected NAME=CHANCE "
                             f"with NAME one of {', '.join(sorted(FAILPOINTS))}") from None
    return chosen


MESSAGE_FAULTS_VARIABLE = "PAXOSKV_TEST_MESSAGE_FAULTS"
# Test-only: how often a watch re-reads its key (default 1 s); a test sets it long to
# show that a change seen by the node's acceptor wakes its watchers at once.
WATCH_REREAD_VARIABLE = "PAXOSKV_TEST_WATCH_REREAD_S"
# Test-only: the seed of a fault run, for the node's own test randomness (failpoints,
# message faults), so that a run replayed with the same seed draws the same numbers.
SEED_VARIABLE = "PAXOSKV_TEST_SEED"


def test_rng(name: str, boot: int) -> random.Random:
    seed = os.environ.get(SEED_VARIABLE)
    return random.Random(None if seed is None else f"{seed}/{name}/{boot}")


def message_faults(rng: random.Random) -> MessageFaults | None:
    spec = os.environ.get(MESSAGE_FAULTS_VARIABLE)
    if not spec:
        return None
    try:
        faults = dataclasses.replace(MessageFaults.parse(spec), rng=rng)
    except (TypeError, ValueError):
        raise SystemExit(f"paxoskv: error: {MESSAGE_FAULTS_VARIABLE}: expected e.g. "
                         "'drop=0.05,duplicate=0.05,delay_ms=20'") from None
    log.warning("peer messages are faulty, for a test", extra={"node": spec})
    return faults


def safety_breaks() -> frozenset[str]:
    wanted = frozenset(filter(None, os.environ.get(BREAK_VARIABLE, "").split(",")))
    unknown = wanted - BREAKS
    if unknown:
        raise SystemExit(f"paxoskv: error: {BREAK_VARIABLE}: unknown "
                         f"{', '.join(sorted(unknown))}")
    if wanted:
        log.warning("SAFETY DELIBERATELY BROKEN FOR A TEST", extra={"node": ",".join(wanted)})
    return wanted


def wall_clock(skew_ms: int) -> Callable[[], int]:
    """Milliseconds since the epoch, as this node's clock (maybe skewed) says."""
    return lambda: int(time.time() * 1000) + skew_ms


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def adopted_config(storage: ident.Meta, identity: ident.Identity, urls: dict[str, str]
                   ) -> Config:
    """The configuration this node adopted last, or the one its cluster bootstrapped with."""
    stored = storage.meta(ident.CONFIG_META)
    if stored is None:
        return ident.initial_config(identity, urls)
    return Config.from_json(json.loads(stored))


class LinkKeeper:
    """Keeps one peer link per other member of the node's configuration."""

    def __init__(self, node: Node, connect: Callable[[Member], PeerLink]) -> None:
        self._node = node
        self._connect = connect
        self._urls: dict[str, str] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def follow(self, config: Config, start: bool = True) -> None:
        """Open links to new members (and start them, unless the node will), close
        the links of members that left or moved."""
        for name, link in list(self._node.links.items()):
            member = config.member(name)
            if member is None or member.url != self._urls.get(name):
                del self._node.links[name]
                task = asyncio.ensure_future(link.stop())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        for member in config.members:
            if member.name != self._node.name and member.name not in self._node.links:
                link = self._connect(member)
                self._node.links[member.name] = link
                self._urls[member.name] = member.url
                if start:
                    link.start()


async def establish(config: ServerConfig, storage: Storage, session: aiohttp.ClientSession,
                    tls: NodeTls | None) -> ident.Identity:
    """This data directory's cluster identity: recorded, or settled now by
    bootstrapping a new cluster or by joining one as a new member."""
    names = list(config.members)
    known = ident.load(storage, names)
    if known is not None:
        return known
    if storage.is_empty() and not (config.bootstrap or config.join):
        raise ident.IdentityError(
            f"data directory {config.data_dir} holds no cluster; start with --bootstrap to "
            "create a new cluster of the members in --peers, or with --join to be added to "
            "a running one (a member that lost its data must not bootstrap: it may rejoin "
            "only as a new member)")
    # An empty directory (or one from before identities: it kept its promises).
    member_id = ident.pending_member_id(storage)
    alone: asyncio.Future[tuple[ident.Identity, Config]] = (
        asyncio.get_running_loop().create_future())

    async def bootstrap_alone(wanted: str) -> str | None:
        member = ident.a_member(await ident.ask(config.name, config.members, session))
        if member is not None:
            return (f"peer {member} is a member of a cluster already: add this node to it "
                    f"(paxoskv members add {config.name} {config.members[config.name]})")
        if not alone.done():
            alone.set_result(ident.alone(config.name, wanted, config.members[config.name]))
        return None

    runner = web.AppRunner(identity_app(config.name, names, member_id, config.join,
                                        config.admin_token, bootstrap_alone),
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True,
                      ssl_context=tls.server if tls else None).start()
    try:
        if config.join:
            joining = asyncio.ensure_future(
                ident.join(config.name, member_id, config.members, session))
            await asyncio.wait([joining, alone], return_when=asyncio.FIRST_COMPLETED)
            joining.cancel()
            settled, joined = alone.result() if alone.done() else await joining
            storage.set_meta({ident.CONFIG_META: json.dumps(joined.to_json()),
                              ident.CAUGHT_UP_META: "1" if alone.done() else "0"})
        else:
            settled = await ident.bootstrap(config.name, member_id, config.members, session)
    finally:
        await runner.cleanup()
    ident.record(storage, settled)
    log.info("cluster joined" if config.join and not alone.done() else "cluster bootstrapped",
             extra={"node": config.name, "url": settled.cluster_id})
    return settled


def secured(config: ServerConfig) -> tuple[NodeTls | None, Tokens | None]:
    """The node's TLS contexts and data tokens, as its files say; a one-line exit
    when a file is missing or wrong, or when the members' URLs do not match."""
    scheme = "https" if config.tls else "http"
    wrong = sorted(name for name, url in config.members.items()
                   if not url.startswith(scheme + "://"))
    if wrong:
        raise SystemExit(f"paxoskv: error: --peers: {', '.join(wrong)} must have {scheme}:// "
                         f"URLs, as this node {'serves' if config.tls else 'does not serve'} "
                         "TLS (--tls-cert)")
    try:
        return (NodeTls(config.tls) if config.tls else None,
                Tokens(config.auth_file) if config.auth_file else None)
    except ValueError as exc:
        raise SystemExit(f"paxoskv: error: {exc}") from None


async def keep_current(watches: list[FilesWatch], every: float = 1.0) -> None:
    """Reload certificates and tokens when their files change (a watch that fails
    in an unforeseen way is logged and tried again: reloads never stop)."""
    while True:
        await asyncio.sleep(every)
        for watch in watches:
            try:
                watch.check()
            except Exception:
                log.exception("checking files for a reload failed")


async def serve(config: ServerConfig) -> None:
    breaks = safety_breaks()
    tls, tokens = secured(config)
    try:
        storage = (LaggingStorage if "lose-unsynced-writes" in breaks else Storage)(
            config.data_dir, breaks)
    except DataDirInUse as exc:
        raise SystemExit(f"paxoskv: error: {exc}") from None
    # Peer connections leave from this node's own address (not the default
    # 127.0.0.1 on loopback), so that per-address firewall rules, such as the
    # fault tests' partitions, see which node a packet comes from.
    local = None if config.listen_host in ("", "0.0.0.0", "::") else (config.listen_host, 0)
    # No DNS cache: a peer's name keeps its address only while its pod lives (a pod made
    # anew has a new IP), and aiohttp's default 10 s cache kept a link reconnecting to the
    # old address that long, a member short of its quorum meanwhile. Links are long-lived,
    # so names are resolved only when one (re)connects.
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=1.0),
            connector=aiohttp.TCPConnector(local_addr=local, use_dns_cache=False,
                                           ssl=tls.client if tls else True)) as session:
        watching = asyncio.ensure_future(keep_current(
            [w.watch for w in (tls, tokens) if w is not None]))
        try:
            await _serve(config, storage, session, breaks, tls, tokens)
        finally:
            watching.cancel()


async def _serve(config: ServerConfig, storage: Storage, session: aiohttp.ClientSession,
                 breaks: frozenset[str], tls: NodeTls | None, tokens: Tokens | None) -> None:
    """Run the node until SIGTERM or SIGINT; `session` carries its peer links."""
    try:
        identity = await establish(config, storage, session, tls)
    except ident.IdentityError as exc:
        raise SystemExit(f"paxoskv: error: {exc}") from None
    acceptor = Acceptor(storage.load())
    boot = storage.next_boot()
    node = Node(config.name, adopted_config(storage, identity, config.members), acceptor,
                storage, boot, wall_ms=wall_clock(int(os.environ.get(CLOCK_SKEW_VARIABLE, "0"))),
                breaks=breaks, failpoints=failpoints(), rng=test_rng(config.name, boot),
                watch_reread_s=float(os.environ.get(WATCH_REREAD_VARIABLE, "1")),
                member_id=identity.member_id,
                caught_up=storage.meta(ident.CAUGHT_UP_META) != "0")
    scheme = "https" if tls else "http"
    wrong = sorted(m.name for m in node.config.members if not m.url.startswith(scheme + "://"))
    if wrong:
        raise SystemExit(f"paxoskv: error: the cluster's members {', '.join(wrong)} are not at "
                         f"{scheme}:// URLs in its configuration, and this node "
                         f"{'serves' if tls else 'does not serve'} TLS: TLS is fixed when a "
                         "cluster is made")
    faults = message_faults(test_rng(config.name + "/network", boot))
    identity.follow(node.config)
    links = LinkKeeper(node, lambda m: PeerLink(m.name, m.url, session, identity, config.name,
                                                faults))
    node.config_observers += [identity.follow, links.follow]
    links.follow(node.config, start=False)  # node.start() starts them
    lifetimes = Lifetimes(node)
    liveness = Liveness(node)
    app = create_app(node, lifetimes, liveness, identity, config.admin_token, faults,
                     tokens, peers_need_certificates=tls is not None)
    members_api.install(app, Membership(node), session)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True,
                      ssl_context=tls.server if tls else None).start()
    node.start()
    lifetimes.start()
    liveness.start()
    tune_garbage_collector()
    log.info("node started", extra={"node": config.name, "boot": boot,
                                    "keys": len(acceptor),
                                    "url": f"{'https' if tls else 'http'}://"
                                           f"{config.listen_host}:{config.listen_port}"})
    if node.config.member(config.name) is None:
        log.warning("this node is not a member of its cluster: it was removed (epoch "
                    f"{node.config.epoch}); the members refuse it, so it serves nothing. "
                    "To bring it back, empty its data directory and start it with --join",
                    extra={"node": config.name, "peer": ",".join(node.config.names)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"node": config.name})
    await liveness.stop()
    await lifetimes.stop()
    await node.stop()
    await runner.cleanup()
    await storage.close()
    log.info("stopped", extra={"node": config.name})


# The cyclic garbage collector's thresholds. A node under load frees nearly all
# it allocates by reference counting, but every young collection scans the
# objects of the requests in flight (some 10,000 at 64 concurrent puts): with
# Python's default (one every 700 allocations) the collector took 5-10 % of a
# node's CPU under the put benchmark. Every 10,000: about 1 %, in pauses of 10-30
# ms (fewer and longer pauses the higher this is; measured with gc.callbacks).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collector() -> None:
    """Once started: move what start-up made (modules, the loaded records) out of
    every later collection's scan, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(config: ServerConfig, log_level: str = "info") -> None:
    setup_logging(log_level)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config))
