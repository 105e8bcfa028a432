"""The simulated machines: per-node disks, wall clocks and node processes.

Each member runs the real Node, Lifetimes and Liveness, wired as
paxoskv.server.main.serve wires them, but on a SimStorage, SimLinks and the
virtual clock. The monotonic clock (`Node.clock`) is the loop's time, which a
stall does not stop (as with SIGSTOP); the wall clock (`Node.wall_ms`) is
virtual time plus the node's skew and drift.

Identity, as paxoskv.server.identity keeps it: the cluster is bootstrapped
once (every disk records the cluster id, its member id and the members'
table, settled by the real `identity.decide`). A member restarted on a wiped
disk asks the running peers, as a node started with --bootstrap does, and the
real `identity.decide` refuses it (IdentityError): it stays down. Under the
planted bug "wiped-votes" (`amnesia`) it is let in anyway, with a fresh
acceptor and boot 1.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from dataclasses import dataclass, field
from typing import Any

from paxoskv.core.acceptor import Acceptor
from paxoskv.core.config import Config
from paxoskv.server import identity
from paxoskv.server.identity import IdentityError
from paxoskv.server.lifetimes import Lifetimes
from paxoskv.server.liveness import Liveness
from paxoskv.server.main import adopted_config
from paxoskv.server.node import Link, Node
from tests.sim import checks
from tests.sim.loop import Proc, SimLoop
from tests.sim.network import Network
from tests.sim.storage import DiskMeta, DiskTiming, SimDisk, SimStorage

EPOCH_S = 1_700_000_000.0  # virtual time 0, as a wall clock reads it (the test's clock)
# The log of commit marks folds after this many marks (FOLD_MIN: 100,000), this many
# keys per commit (server.lazy_writes): small, so that every run folds it often.
SIM_FOLD_MIN, SIM_FOLD_CHUNK = 8, 2


@dataclass(frozen=True)
class Clock:
    """A node's wall clock: off by `skew_s`, running `drift` faster (a fraction)."""

    skew_s: float = 0.0
    drift: float = 0.0

    def wall_ms(self, t: float) -> int:
        return int((EPOCH_S + t * (1 + self.drift) + self.skew_s) * 1000)

    def reaches(self, ms: int) -> float:
        """The virtual time at which this clock first reads `ms`."""
        return (ms / 1000 - EPOCH_S - self.skew_s) / (1 + self.drift)


@dataclass
class Member:
    name: str
    clock: Clock
    disk: SimDisk = field(default_factory=SimDisk)
    incarnations: int = 0
    proc: Proc | None = None  # None while down
    node: Node | None = None
    lifetimes: Lifetimes | None = None
    liveness: Liveness | None = None
    storage: SimStorage | None = None
    wiped: bool = False  # its disk was wiped at least once
    joining: bool = False  # an empty disk waiting to be added (serve --join)
    refused: list[str] = field(default_factory=list)  # why restarts were refused


class SimCluster:
    def __init__(self, loop: SimLoop, network: Network, clocks: dict[str, Clock],
                 rng: random.Random, disk_timing: DiskTiming,
                 storage_class: type[SimStorage] = SimStorage,
                 breaks: frozenset[str] = frozenset(), amnesia: bool = False,
                 joining: tuple[str, ...] = ()) -> None:
        """`joining`: members that are not in the configuration the cluster bootstraps
        with; they wait, on empty disks, to be added (see `join`)."""
        self.loop = loop
        self.network = network
        self.names = sorted(clocks)
        self.initial = [name for name in self.names if name not in joining]
        # How many clocks must reach a deadline before a key bound to it may be gone: a
        # majority of the members. While membership changes (members joining), the
        # configuration of the moment may be one member whose clock alone decides: then
        # the check counts from the earliest clock.
        self.quorum = 1 if joining else len(self.names) // 2 + 1
        self.members = {name: Member(name, clocks[name]) for name in self.names}
        self.rng = rng
        self.disk_timing = disk_timing
        self.storage_class = storage_class
        self.breaks = breaks
        self.amnesia = amnesia
        self.ledger = checks.BallotLedger()
        self._bootstrap()
        for name in joining:
            self.join(name)

    def now(self) -> float:
        """The test's clock (seconds since the epoch): one clock for the whole history."""
        return EPOCH_S + self.loop.time()

    def earliest_end(self, until_ms: int) -> float:
        """The test-clock time before which no quorum of clocks has reached `until_ms`:
        a key bound to that deadline must not be gone before it."""
        times = sorted(m.clock.reaches(until_ms) for m in self.members.values())
        return EPOCH_S + times[self.quorum - 1]

    def new_id(self, hex_digits: int) -> str:
        return f"{self.rng.getrandbits(4 * hex_digits):0{hex_digits}x}"

    # -- identity ------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Every member's first start with --bootstrap on an empty disk: each makes
        a member id, and the real `identity.decide`, given every peer's answer,
        settles the cluster, which each disk records."""
        for name in self.initial:
            self.members[name].disk.meta["member_id"] = self.new_id(16)
        for name in self.initial:
            answers = {peer: self._answer(peer) for peer in self.initial if peer != name}
            disk = self.members[name].disk
            settled = identity.decide(name, disk.meta["member_id"], self.initial, answers)
            assert settled is not None
            identity.record(DiskMeta(disk), settled)

    def join(self, name: str) -> str:
        """Member `name` gets an empty disk and waits to join, as `serve --join` on an
        empty data directory: a new member id (returned); it starts once a running
        member's configuration lists it (see `_admit`)."""
        self.wipe(name)
        member = self.members[name]
        member.disk.meta["member_id"] = self.new_id(16)
        member.joining = True
        return member.disk.meta["member_id"]

    def _answer(self, name: str) -> dict[str, Any]:
        """What member `name` answers on /v1/identity."""
        member = self.members[name]
        known = identity.load(DiskMeta(member.disk), self.initial)
        config = None if member.node is None else member.node.config
        return identity.describe(name, self.initial, known, member.disk.meta.get("member_id"),
                                 config, joining=member.joining)

    def config_of(self, member: Member) -> Config:
        """The configuration `member` starts with, as main.serve picks it: the one its
        disk adopted last, else the one its identity records (with amnesia, a wiped
        disk records none: then a peer's)."""
        known = identity.load(DiskMeta(member.disk), self.initial) or next(
            found for m in self.members.values()
            if (found := identity.load(DiskMeta(m.disk), self.initial)) is not None)
        return adopted_config(DiskMeta(member.disk), known,
                              {name: f"sim://{name}" for name in self.names})

    def _admit(self, member: Member) -> None:
        """As main.establish with --bootstrap: a disk that records the cluster starts;
        one that does not asks the peers that are up, and gets IdentityError if the
        cluster knows this member by another id (its data was lost), or while no
        peer answers (a real node would wait; here it stays down)."""
        meta = DiskMeta(member.disk)
        if self.amnesia or identity.load(meta, self.initial) is not None:
            return
        member_id = meta.meta("member_id") or self.new_id(16)
        meta.set_meta({"member_id": member_id})
        answers = {peer: self._answer(peer) for peer, m in self.members.items()
                   if peer != member.name and m.proc is not None and not m.proc.stalled}
        if member.joining:  # as main.establish with --join
            joined = identity.joined(member.name, member_id, answers)
            if joined is None:
                raise IdentityError("joining: no member's configuration lists it yet")
            known, config = joined
            meta.set_meta({identity.CONFIG_META: json.dumps(config.to_json()),
                           identity.CAUGHT_UP_META: "0"})
            identity.record(meta, known)
            member.joining = False
            return
        settled = identity.decide(member.name, member_id, self.initial, answers)
        if settled is None:
            raise IdentityError("bootstrapping: no peer answers (it would keep waiting)")
        identity.record(meta, settled)

    # -- a member's process --------------------------------------------------------

    def start(self, name: str) -> None:
        """Start a process on the member's disk (a restart: a new boot). Raises
        IdentityError if the disk holds no cluster and the peers refuse it; the
        member then stays down."""
        member = self.members[name]
        assert member.proc is None, f"{name} is running"
        try:
            self._admit(member)
        except IdentityError as exc:
            member.refused.append(str(exc))
            raise
        member.incarnations += 1
        proc = Proc(name, member.incarnations)
        proc.context.run(self._boot, member, proc)

    def _boot(self, member: Member, proc: Proc) -> None:
        """Wired as paxoskv.server.main.serve does; runs in the new process's context."""
        storage = self.storage_class(member.disk, proc, self.rng, self.disk_timing)
        acceptor = Acceptor(storage.load())
        clock = member.clock
        node = Node(member.name, self.config_of(member), acceptor, storage,
                    storage.next_boot(), clock=self.loop.time,
                    wall_ms=lambda: clock.wall_ms(self.loop.time()), breaks=self.breaks,
                    member_id=member.disk.meta.get("member_id", ""),
                    caught_up=member.disk.meta.get(identity.CAUGHT_UP_META) != "0")
        storage.on_durable = functools.partial(self.ledger.saw, member.name)
        # Fold the log of commit marks often, so that crashes and restarts land in folds.
        node.lazy.fold_min, node.lazy.fold_chunk = SIM_FOLD_MIN, SIM_FOLD_CHUNK
        peers = [n for n in self.names if n != member.name]
        links: dict[str, Link] = dict(self.network.attach(member.name, proc, node, peers))
        node.links = links
        lifetimes = Lifetimes(node)
        lifetimes.new_id = lambda: self.new_id(32)  # session ids, instead of uuid4
        liveness = Liveness(node)
        member.proc, member.node, member.storage = proc, node, storage
        member.lifetimes, member.liveness = lifetimes, liveness
        node.start()
        lifetimes.start()
        liveness.start()

    def crash(self, name: str) -> None:
        """kill -9: unsynced writes are lost, tasks end, connections drop."""
        member = self.members[name]
        assert member.proc is not None and member.storage is not None
        self.network.detach(name)
        member.storage.kill()
        self.loop.kill(member.proc)
        member.proc = member.node = member.storage = None
        member.lifetimes = member.liveness = None

    def wipe(self, name: str) -> None:
        """The member's data directory is lost (a pod back with an empty volume):
        crash it if it runs, and give it an empty disk."""
        member = self.members[name]
        if member.proc is not None:
            self.crash(name)
        member.disk = SimDisk()
        member.wiped = True

    def stall(self, name: str) -> Proc | None:
        proc = self.members[name].proc
        if proc is None or proc.stalled:
            return None
        self.loop.stall(proc)
        self.network.stalled(name, proc)
        return proc

    def resume(self, proc: Proc) -> bool:
        """Resume a stalled process; False if it is gone (crashed meanwhile)."""
        if not (proc.alive and proc.stalled):
            return False
        self.loop.resume(proc)
        return True

    async def stop(self) -> list[str]:
        """Stop every running member cleanly, as on SIGTERM; what went wrong."""
        errors = []
        for member in self.members.values():
            if member.proc is None:
                continue
            self.resume(member.proc)
            assert member.node and member.lifetimes and member.liveness and member.storage
            for part in (member.liveness, member.lifetimes, member.node, member.storage):
                stopping = part.close() if isinstance(part, SimStorage) else part.stop()
                task = self.loop.create_task(stopping, context=member.proc.context.copy())
                await asyncio.wait([task])
                if task.exception() is not None:
                    errors.append(f"{member.name}: {type(part).__name__} stopped with "
                                  f"{task.exception()!r}")
            self.network.detach(member.name)
            self.loop.kill(member.proc)  # whatever is left (requests being served)
            member.proc = member.node = member.storage = None
        return errors

