"""An in-memory peer network: links with the PeerLink surface, and its faults.

Each node dials every peer, as with the real WebSocket links: `SimLink` is the
dialling side (what `Node.links` holds), a `Connection` is one connected
session of it. A request travels to the peer, which serves it with the real
`Node.serve_frame`; the reply comes back on the same connection. Bodies go
through orjson both ways, as on the wire.

Faults, per message, from the seeded rng: a random latency (so reordering),
an occasional long delay, drops, and duplicates of acceptor messages ("m": the
Paxos core must not mind; TCP never duplicates, so forwarded changes "p" are
not duplicated). Partitions cut the dialling side's connections one way or
both: while cut, messages wait (TCP retransmits); the connection drops a
heartbeat's time later (then what waited is lost), or survives if the cut heals
first. A crashed peer drops its connections at once (RST); a stalled one after
a heartbeat's time. A dropped connection fails its pending calls with
PeerUnavailable and `connected` turns False until a redial succeeds, as with
PeerLink. Deliveries run in the receiver's process, so a stalled receiver
holds them until it resumes.

A scripted test (tests/test_regressions.py) can also lose chosen messages:
`Network.lose`, if set, is asked about every message (sender, receiver,
envelope) and those it returns True for are lost.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from paxoskv.server.node import Node
from paxoskv.server.transport import NOTICE, Envelope, PeerUnavailable
from tests.sim.loop import NO_PROC, Proc

HEARTBEAT_S = (1.0, 3.0)  # how long until a silent peer's connection is dropped
REDIAL_S = (0.05, 1.0)  # PeerLink's redial backoff: first delay, cap


@dataclass(frozen=True)
class MessageFaults:
    latency_s: tuple[float, float] = (0.0002, 0.002)
    drop: float = 0.0
    duplicate: float = 0.0  # acceptor messages only
    delay: float = 0.0  # chance of a long delay
    delay_s: tuple[float, float] = (0.005, 0.5)

    def deliveries(self, rng: random.Random, kind: str) -> list[float]:
        """The delays after which one message arrives: none, one or two."""
        if self.drop and rng.random() < self.drop:
            return []
        copies = 2 if kind == "m" and self.duplicate and rng.random() < self.duplicate else 1
        delays = []
        for _ in range(copies):
            delay = rng.uniform(*self.latency_s)
            if self.delay and rng.random() < self.delay:
                delay += rng.uniform(*self.delay_s)
            delays.append(delay)
        return delays


class Connection:
    """One connected session of a link: dies once, never comes back."""

    def __init__(self, number: int, link: SimLink, dst_proc: Proc, dst_node: Node) -> None:
        self.number = number
        self.link = link
        self.dst_proc = dst_proc
        self.dst_node = dst_node
        self.alive = True
        self.waiting: list[tuple[bool, bytes, str]] = []  # held by a cut: (to_dst, body, kind)
        self.tasks: dict[asyncio.Task[None], None] = {}  # forwarded changes served at dst

    @property
    def path(self) -> tuple[str, str]:
        return self.link.src, self.link.name

    def reply(self, envelope: Envelope) -> None:
        """The receiving node's `send`: carries a reply back to the caller."""
        if self.alive:
            self.link.network.transmit(self, False, envelope)

    def spawn(self, coro: Awaitable[None]) -> None:
        """The receiving node's `spawn`: the task ends when the connection does."""
        task = asyncio.ensure_future(coro)
        self.tasks[task] = None
        task.add_done_callback(lambda t: self.tasks.pop(t, None))


class SimLink:
    """The surface of paxoskv.server.transport.PeerLink, over the Network."""

    def __init__(self, network: Network, proc: Proc, src: str, dst: str) -> None:
        self.network = network
        self.proc = proc
        self.src = src
        self.name = dst
        self.last_heard = 0.0  # loop time the peer last sent us anything
        self._conn: Connection | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._redial = REDIAL_S[0]
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def start(self) -> None:
        self._dial_later(0.0)

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self.network.drop(self._conn, "closed")

    def notify(self, kind: str, body: Any) -> None:
        # Sent at once: the network's own delays stand for PeerLink's batching delay.
        if self._conn is not None:
            self.network.transmit(self._conn, True, [NOTICE, kind, body])

    def call(self, kind: str, body: Any) -> asyncio.Future[Any]:
        conn = self._conn
        if conn is None:
            raise PeerUnavailable(self.name)
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self.network.transmit(conn, True, [self._next_id, kind, body])
        return future

    # -- used by the Network ----------------------------------------------------

    def _dial_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._dial, context=self.proc.context)

    def _dial(self) -> None:
        if self._closed or self._conn is not None:
            return
        conn = self.network.connect(self)
        if conn is None:
            self._dial_later(self._redial)
            self._redial = min(self._redial * 2, REDIAL_S[1])
            return
        self._conn = conn
        self._redial = REDIAL_S[0]

    def _answered(self, conn: Connection, envelope: Envelope) -> None:
        if conn is not self._conn:
            return
        self.last_heard = asyncio.get_running_loop().time()
        future = self._pending.pop(envelope[0], None)
        if future is not None and not future.done():
            future.set_result(envelope[2])

    def _dropped(self, conn: Connection) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable(self.name))
        if not self._closed:
            self._dial_later(REDIAL_S[0])


class Network:
    def __init__(self, rng: random.Random, faults: MessageFaults,
                 trace: Callable[[str], None]) -> None:
        self.rng = rng
        self.faults = faults
        self.trace = trace
        self.cuts: Counter[tuple[str, str]] = Counter()  # (dialler, peer) -> active cuts
        self._up: dict[str, tuple[Proc, Node]] = {}  # node name -> its running process
        self._connections: dict[int, Connection] = {}  # live ones, in dial order
        self._links: dict[str, list[SimLink]] = {}  # node name -> its process's links
        self._numbers = 0
        self.lose: Callable[[str, str, Envelope], bool] | None = None
        self.heartbeat_s = HEARTBEAT_S  # a scripted test may fix it

    # -- nodes come and go ---------------------------------------------------------

    def attach(self, name: str, proc: Proc, node: Node, peers: list[str]) -> dict[str, SimLink]:
        """A started node: reachable from now on; its links to `peers`."""
        self._up[name] = (proc, node)
        links = {peer: SimLink(self, proc, name, peer) for peer in peers}
        self._links[name] = list(links.values())
        return links

    def detach(self, name: str) -> None:
        """A crashed node: its connections drop at once, both ways (RST)."""
        self._up.pop(name, None)
        for link in self._links.pop(name, []):
            link.close()
        for conn in list(self._connections.values()):
            if conn.link.name == name:
                self.drop(conn, f"{name} crashed")

    def stalled(self, name: str, proc: Proc) -> None:
        """A stalled node stops answering heartbeats: its connections drop after a while."""
        for conn in list(self._connections.values()):
            if name in conn.path:
                after = self.rng.uniform(*self.heartbeat_s)
                asyncio.get_running_loop().call_later(after, self._heartbeat, conn, proc,
                                                      context=NO_PROC)

    def _heartbeat(self, conn: Connection, proc: Proc) -> None:
        if conn.alive and proc.stalled:
            self.drop(conn, f"{proc.name} silent (stalled)")

    def connect(self, link: SimLink) -> Connection | None:
        up = self._up.get(link.name)
        if up is None or up[0].stalled or self.cuts[(link.src, link.name)]:
            return None
        self._numbers += 1
        conn = Connection(self._numbers, link, *up)
        self._connections[conn.number] = conn
        self.trace(f"link {link.src}->{link.name} up")
        return conn

    def drop(self, conn: Connection, why: str) -> None:
        if not conn.alive:
            return
        conn.alive = False
        conn.waiting = []
        del self._connections[conn.number]
        self.trace(f"link {conn.link.src}->{conn.link.name} down ({why})")
        conn.link._dropped(conn)
        for task in list(conn.tasks):  # as the peer endpoint does when its socket ends
            task.cancel()

    # -- partitions ------------------------------------------------------------------

    def cut(self, paths: list[tuple[str, str]]) -> None:
        for path in paths:
            self.cuts[path] += 1
        for conn in list(self._connections.values()):
            if conn.path in paths:
                after = self.rng.uniform(*self.heartbeat_s)
                asyncio.get_running_loop().call_later(after, self._cut_noticed, conn,
                                                      context=NO_PROC)

    def _cut_noticed(self, conn: Connection) -> None:
        if conn.alive and self.cuts[conn.path]:
            self.drop(conn, "cut")

    def heal(self, paths: list[tuple[str, str]]) -> None:
        for path in paths:
            self.cuts[path] -= 1
        for conn in list(self._connections.values()):
            if conn.waiting and not self.cuts[conn.path]:
                waiting, conn.waiting = conn.waiting, []
                for to_dst, body, kind in waiting:
                    self._send(conn, to_dst, body, kind)

    # -- messages ------------------------------------------------------------------------

    def transmit(self, conn: Connection, to_dst: bool, envelope: Envelope) -> None:
        if self.lose is not None:
            src, dst = conn.path if to_dst else conn.path[::-1]
            if self.lose(src, dst, envelope):
                self.trace(f"lost {src}->{dst}: {envelope[1]} {envelope[2]!r:.120}")
                return
        body = orjson.dumps(envelope)
        if self.cuts[conn.path]:
            conn.waiting.append((to_dst, body, envelope[1]))
        else:
            self._send(conn, to_dst, body, envelope[1])

    def _send(self, conn: Connection, to_dst: bool, body: bytes, kind: str) -> None:
        loop = asyncio.get_running_loop()
        receiver = conn.dst_proc if to_dst else conn.link.proc
        for delay in self.faults.deliveries(self.rng, kind):
            loop.call_later(delay, self._arrive, conn, to_dst, body, context=receiver.context)

    def _arrive(self, conn: Connection, to_dst: bool, body: bytes) -> None:
        if not conn.alive:
            return  # the connection it travelled on is gone
        envelope = orjson.loads(body)
        if to_dst:
            conn.dst_node.serve_frame(conn.link.src, [envelope], conn.reply, conn.spawn)
        else:
            conn.link._answered(conn, envelope)
