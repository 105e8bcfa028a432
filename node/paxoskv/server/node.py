"""The node: drives the pure core over the network and the disk.

Routing: every change of a key goes to the key's *home* member, whose proposer
(`rounds.Rounds`) queues concurrent changes per key and decides them together in
one CASPaxos round (so contention stays live and cheap). If the home is unreachable, or has not
answered within a few times its usual latency (stalled, overloaded), the node
that got the request proposes too (a hedge), with full rounds and randomised
backoff. That is safe because every change takes effect at most once however
often it runs: deletes and renewals are conditional on a generation, reads
change nothing, and puts carry an id that the key remembers (`PutIfAbsent`).
Reads try a one-round-trip quorum read first.

Ballots belong to the proposer (`core.proposer.Ballots`): no ballot is ever
used twice, whatever the local acceptor saw (it records nothing when it answers
TooEarly, for instance), so each ballot carries one state: `QuorumRead` and the
prepare phase rely on that.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import orjson

from paxoskv.core import messages
from paxoskv.core.acceptor import Acceptor, Write
from paxoskv.core.ballot import Ballot
from paxoskv.core.config import Config
from paxoskv.core.messages import Commit, Promise, Reply, Request
from paxoskv.core.proposer import Ballots
from paxoskv.core.state import (
    Change,
    DeleteIf,
    KeyState,
    PutIfAbsent,
    Read,
    SwapIf,
    change_from_json,
)
from paxoskv.server.aio import mapped, quiet, wait_until
from paxoskv.server.identity import CAUGHT_UP_META, CONFIG_META
from paxoskv.server.lazy_writes import Disk, LazyWrites
from paxoskv.server.rounds import NoQuorum, Repeated, Rounds, unknown_outcome
from paxoskv.server.transport import NOTICE, Envelope, PeerUnavailable

__all__ = ["Disk", "Link", "NoQuorum", "Node", "Repeated", "Stats"]

log = logging.getLogger("paxoskv.node")
C = TypeVar("C", bound=Change)


# Hedging: propose here too if the home has not answered within HEDGE_FACTOR
# times its usual latency (an average), but never sooner than HEDGE_MIN_S.
HEDGE_FACTOR = 4.0
HEDGE_MIN_S = 0.1
# How often a node that holds an unsettled configuration asks its peers for theirs.
SETTLED_POLL_S = 1.0


class Link(Protocol):
    """This node's connection to one peer (transport.Link; a simulated link)."""

    name: str
    last_heard: float  # loop time of the peer's latest message

    @property
    def connected(self) -> bool: ...
    def call(self, kind: str, body: Any) -> asyncio.Future[Any]: ...
    def notify(self, kind: str, body: Any) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class Stats:
    fast_path: int = 0
    cached_promise: int = 0
    full_round: int = 0
    conflicts: int = 0
    quorum_reads: int = 0
    forwarded: int = 0
    hedged: int = 0
    fenced: int = 0  # rounds refused by a member that knew a newer configuration


@dataclass
class Node:
    name: str
    config: Config  # the members (this node included), agreed by consensus
    acceptor: Acceptor
    storage: Disk
    boot: int
    links: dict[str, Link] = field(default_factory=dict)
    attempt_timeout: float = 1.0
    clock: Callable[[], float] = time.monotonic  # for timeouts
    wall_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))  # deadlines
    stats: Stats = field(default_factory=Stats)
    # Called with (key, state) whenever this node's acceptor records a new state.
    observers: list[Callable[[str, KeyState], None]] = field(default_factory=list)
    # Called with each configuration this node adopts (its links and peer checks follow).
    config_observers: list[Callable[[Config], None]] = field(default_factory=list)
    # Test-only ways to break safety, to show that the fault tests notice (see main.py).
    breaks: frozenset[str] = frozenset()
    # Test-only named failpoints: name -> probability of crashing there (see main.py).
    failpoints: dict[str, float] = field(default_factory=dict)
    watch_reread_s: float = 1.0  # how often a watch re-reads its key (see watch)
    # Test randomness (failpoints), seeded by a fault run so that a replay is a replay.
    rng: random.Random = field(default_factory=random.Random)
    # The member id this node's data directory was made with (default: the configuration's
    # for this name). Ballots and put ids carry it, not the name: a member replaced under
    # its old name starts its boot counter again, and must not reuse its predecessor's.
    member_id: str = ""
    # False for a member that joined and has not yet seen its step settle (the rescan
    # that writes every key through it): its /readyz says so. Kept on disk (CAUGHT_UP).
    caught_up: bool = True

    def __post_init__(self) -> None:
        self.acceptor.epoch = self.config.epoch
        self._learning: dict[str, asyncio.Future[None]] = {}  # peer -> its config, coming
        if not self.member_id:
            me = self.config.member(self.name)
            self.member_id = self.name if me is None else me.member_id
        self.ballots = Ballots(self.member_id, self.boot)
        self.rounds = Rounds(self)
        self._watchers: dict[str, list[asyncio.Future[None]]] = {}
        self._latency: dict[str, float] = {}  # member -> average forward latency (s)
        self._heard: dict[str, float] = {}  # member -> loop time of its latest request to us
        # Commit marks and catch-ups: no reply waits for them (see lazy_writes).
        self.lazy = LazyWrites(self.storage, self.acceptor)
        self._settling: asyncio.Future[None] | None = None  # see _learn_the_settled_form
        # Put ids: unique as ballots are, by (member id, durable boot counter), then a
        # counter of this boot: no two runs of different puts share one.
        self._puts = itertools.count(1)
        self.new_id: Callable[[], str] = lambda: (f"{self.member_id}.{self.boot}."
                                                  f"{next(self._puts)}")

    # -- membership view ------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        return self.config.names

    @property
    def quorum(self) -> int:
        return self.config.quorum

    def home(self, key: str) -> str:
        return self.config.home(key)

    # -- configuration ------------------------------------------------------------

    def adopt(self, config: Config) -> asyncio.Future[None] | None:
        """Take `config` if it is newer than this node's (see core.config); the future
        resolves once it is durable (it rides with the next group commit); None if
        it is not newer. From now on the acceptor refuses requests of older epochs,
        and the proposer uses the new members and quorum; its cached promises, of
        the old epoch, are dropped (they would only be refused)."""
        if not config.newer_than(self.config):
            return None
        log.info("configuration adopted", extra={"node": self.name, "epoch": config.epoch,
                                                 "peer": ",".join(config.names)})
        if self.config.member(self.name) is not None and config.member(self.name) is None:
            log.warning("this node was removed from the cluster", extra={
                "node": self.name, "epoch": config.epoch, "peer": ",".join(config.names)})
        self.config = config
        self.acceptor.epoch = max(self.acceptor.epoch, config.epoch)
        self.ballots.forget()
        for follow in self.config_observers:
            follow(config)
        meta = {CONFIG_META: orjson.dumps(config.to_json()).decode()}
        if not self.caught_up and config.settled and config.member(self.name) is not None:
            self.caught_up = True  # the step that added it re-scanned every key through it
            meta[CAUGHT_UP_META] = "1"
        return self.storage.write([], meta)

    async def learn_config(self, peer: str) -> None:
        """Ask `peer` for its configuration and adopt it if it is newer (one request
        per peer at a time; a peer that does not answer is left for the next try)."""
        if peer not in self._learning:
            self._learning[peer] = quiet(asyncio.ensure_future(self._ask_config(peer)))
            self._learning[peer].add_done_callback(lambda _: self._learning.pop(peer, None))
        await wait_until(self._learning[peer], self.attempt_timeout)

    async def _ask_config(self, peer: str) -> None:
        link = self.links.get(peer)
        if link is None:
            return
        try:
            raw = await link.call("c", None)
            config = Config.from_json(raw)
        except PeerUnavailable:
            return
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignored a malformed configuration from %s: %s", peer, exc)
            return
        durable = self.adopt(config)
        if durable is not None:
            await durable

    def reachable(self) -> int:
        """Members of the configuration this node can reach, itself included (a link to
        a node that is no member, or no longer one, does not count)."""
        return sum(name == self.name or (name in self.links and self.links[name].connected)
                   for name in self.config.names)

    def has_quorum(self) -> bool:
        return self.reachable() >= self.quorum

    # -- the acceptor, local and remote --------------------------------------

    def accept_request(self, msg: Request) -> tuple[Reply, Write | None]:
        """This node's acceptor answers; the caller must persist the write before replying."""
        reply, write = self.acceptor.handle(msg, self.wall_ms())
        if "promise-without-accepted" in self.breaks and isinstance(reply, Promise):
            reply = Promise(reply.key, reply.ballot, None, KeyState())  # forget what it took
        if write is not None:
            key, record = write
            if not (isinstance(msg, Commit) and msg.state is None):
                # (A bare commit mark changes no state: the observers saw it accepted.)
                for observe in self.observers:
                    observe(key, record.state)
            self._wake_watchers(key)
        return reply, write

    def commit_notice(self, commit: Commit) -> None:
        """A proposer's word that `commit`'s ballot was chosen: a bare mark, or the
        chosen state for an acceptor that missed it (a catch-up)."""
        if commit.state is None:
            self.learn(commit.key, commit.ballot)
            return
        write = self.accept_request(commit)[1]
        if write is not None:
            self.lazy.record(write[0])

    def learn(self, key: str, ballot: Ballot) -> None:
        """A commit mark: this node's acceptor's state of `key` at `ballot` was
        chosen. Nothing waits on it: no reply, no fsync of its own."""
        if self.acceptor.mark_chosen(key, ballot):
            self._wake_watchers(key)
            self.lazy.mark(key, ballot)

    def _wake_watchers(self, key: str) -> None:
        # Watchers wake on commits too: a read right after the accept may not have
        # found it chosen yet.
        for waiter in self._watchers.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def failpoint(self, name: str) -> None:
        """Crash here (as kill -9 would: no flush, no goodbye) if the test asked for it."""
        chance = self.failpoints.get(name)
        if chance is not None and self.rng.random() < chance:
            log.warning("failpoint: crashing", extra={"node": f"{self.name} at {name}"})
            os._exit(86)

    def send(self, outgoing: Sequence[tuple[str, Request]],
             on_reply: Callable[[str, Reply], None]) -> None:
        """Send acceptor requests; `on_reply(dest, reply)` runs as each reply arrives
        (never for one that is lost, or to a peer whose link is down). A callback,
        not a future per message: this is the hot path of every round. A message
        sent to several acceptors is encoded once."""
        encoded: dict[int, list[Any]] = {}
        for dest, msg in outgoing:
            if dest == self.name:
                # This node's own acceptor: its reply, too, waits for the disk.
                reply, write = self.accept_request(msg)
                self.lazy.durable([write] if write else []).add_done_callback(
                    functools.partial(_local_reply, on_reply, dest, reply))
                continue
            link = self.links.get(dest)
            if link is None or not link.connected:
                continue
            body = encoded.get(id(msg))
            if body is None:
                body = encoded[id(msg)] = messages.encode(msg)
            link.call("m", body).add_done_callback(
                functools.partial(_peer_reply, on_reply, dest))

    def announce(self, dest: str, commit: Commit) -> None:
        """Tell acceptor `dest` that `commit`'s ballot was chosen: a bare mark (one-way,
        no fsync of its own) to one that accepted it, the state to one that did not."""
        if dest == self.name:
            self.commit_notice(commit)
            return
        link = self.links.get(dest)
        if link is None:
            return
        if commit.state is None:
            link.notify("chosen", [commit.key, commit.ballot.to_json()])
        else:
            link.notify("m", messages.encode(commit))

    # -- client operations ------------------------------------------------------

    def stamped(self, change: C, timeout: float) -> C:
        """`change` with an id and an expiry if it takes them (a put, a delete, a swap)
        and has none: the id makes every run of it after the first a no-op, and the
        expiry bounds how long any node may still start a run of it. Every put needs
        one (`change` stamps it). The API stamps a client's delete, which may name a
        generation not made yet, and its swap, whose answer must tell whether it took
        effect. The nodes' own deletes end generations they read live: conditional on
        a generation that exists, they take effect at most once without an id."""
        if isinstance(change, PutIfAbsent | DeleteIf | SwapIf) and not change.id:
            return replace(change, id=self.new_id(),
                           expires=self.wall_ms() + int(timeout * 1000))
        return change

    async def change(self, key: str, change: Change, timeout: float, retry: bool) -> KeyState:
        """Apply `change` by consensus and return the key's resulting state."""
        if isinstance(change, PutIfAbsent):
            change = self.stamped(change, timeout)
        deadline = self.clock() + timeout
        home = self.home(key)
        link = self.links.get(home)
        if link is None or not link.connected:
            return await self.submit(key, change, timeout, retry)
        try:
            answer = self._forward(link, key, change, timeout, retry)
        except PeerUnavailable:
            return await self.submit(key, change, timeout, retry)
        if (await self._home_answers(link, answer, deadline) and answer.exception() is None
                and "error" not in answer.result()):
            return _forwarded_state(answer.result())
        log.debug("home %s silent or failed for %s; proposing here too", home, key)
        self.stats.hedged += 1
        forward = quiet(mapped(answer, _forwarded_state))
        local = asyncio.ensure_future(self.submit(key, change, deadline - self.clock(), retry))
        try:
            return await _first_answer([forward, local], deadline - self.clock(), change)
        finally:
            local.cancel()

    async def _home_answers(self, link: Link, forward: asyncio.Future[Any],
                            deadline: float) -> bool:
        """Wait for the home's answer while the home shows signs of life; False when
        it has been silent for a few times its usual latency (stalled, cut off).

        A working home keeps sending: replies to other requests, and the
        prepares and accepts of its rounds to this node's acceptor. Such a home
        is left to work: hedging against it would only make proposers duel.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self._hedge_delay(link.name)
        while not forward.done():
            heard = max(link.last_heard, self._heard.get(link.name, 0.0))
            silent_until = max(started, heard) + delay
            wait = min(silent_until, started + (deadline - self.clock())) - loop.time()
            if wait <= 0:
                return False
            await wait_until(forward, wait)
        self._note_latency(link.name, loop.time() - started)
        return True

    def _hedge_delay(self, home: str) -> float:
        return max(HEDGE_MIN_S, HEDGE_FACTOR * self._latency.get(home, HEDGE_MIN_S))

    def _note_latency(self, home: str, seconds: float) -> None:
        average = self._latency.get(home, seconds)
        self._latency[home] = 0.8 * average + 0.2 * seconds

    async def read(self, key: str, timeout: float, retry: bool) -> KeyState:
        """A linearizable read."""
        if self.has_quorum():
            state = await self.rounds.quorum_read(key, min(timeout, self.attempt_timeout))
            if state is not None:
                self.stats.quorum_reads += 1
                return state
        return await self.change(key, Read(), timeout, retry)

    def read_local(self, key: str) -> KeyState:
        """The latest state this node knows was chosen: possibly stale, never dirty."""
        return self.acceptor.chosen_state(key)

    async def watch(self, key: str, token: int, timeout: float) -> tuple[KeyState, bool]:
        """Wait until the key's fencing token differs from `token`.

        Returns the key's state (read linearizably) and whether it changed. A
        change this node's acceptor sees wakes the watcher at once; it also
        re-reads every `watch_reread_s` seconds, for changes decided without this node.
        """
        deadline = self.clock() + timeout
        loop = asyncio.get_running_loop()
        while True:
            # Listen before reading: a change that lands while the read runs wakes
            # the next wait at once instead of being missed until the re-read.
            waiter: asyncio.Future[None] = loop.create_future()
            self._watchers.setdefault(key, []).append(waiter)
            try:
                remaining = deadline - self.clock()
                state = await self.read(key, max(remaining, self.attempt_timeout), retry=False)
                if state.token != token:
                    return state, True
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return state, False
                await wait_until(waiter, min(remaining, self.watch_reread_s))
            finally:
                waiting = self._watchers.get(key)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._watchers[key]

    def _forward(self, link: Link, key: str, change: Change, timeout: float, retry: bool
                 ) -> asyncio.Future[dict[str, Any]]:
        """Ask the key's home to run `change`; the future holds its answer, as sent
        (`_forwarded_state` reads it)."""
        self.stats.forwarded += 1
        body = {"key": key, "change": change.to_json(), "timeout": timeout, "retry": retry}
        return quiet(link.call("p", body))

    def serve_frame(self, sender: str, envelopes: list[Envelope],
                    send: Callable[[Envelope], None],
                    spawn: Callable[[Awaitable[None]], None]) -> None:
        """Serve one frame of peer `sender`'s requests; `send` carries replies back.

        Acceptor replies leave together once the frame's writes are durable (one
        group commit for the whole frame); forwarded changes run as tasks.
        """
        self._heard[sender] = asyncio.get_running_loop().time()
        replies, writes = [], []
        for request_id, kind, body in envelopes:
            if kind == "m":
                request = messages.decode(body)
                if isinstance(request, Request) and request.epoch > self.config.epoch:
                    spawn(self.learn_config(sender))  # the sender knows a newer one
                if request_id == NOTICE:
                    # A commit mark: nothing waits on it, so no reply and no fsync
                    # of its own (a crash before the next one loses only the mark).
                    if isinstance(request, Commit):
                        self.commit_notice(request)
                    else:
                        log.warning("ignored a notice that is not a commit mark from %s",
                                    sender)
                    continue
                reply, write = self.accept_request(request)  # type: ignore[arg-type]
                replies.append([request_id, kind, messages.encode(reply)])
                if write is not None:
                    writes.append(write)
            elif kind == "chosen" and request_id == NOTICE:
                # A bare commit mark, [key, ballot]: the cheapest message there is
                # (one per acceptor and decision), so it skips messages.decode.
                self.learn(body[0], Ballot.from_json(body[1]))
            elif kind == "p":
                self._serve_forwarded(request_id, body, send)
            elif kind == "c" and request_id == NOTICE:
                self._config_notice(sender, body)
            elif kind == "c":
                # Answered once durable: a membership driver counts this answer as
                # this member's fence against the older epochs.
                answer: Envelope = [request_id, "c", self.config.to_json()]
                self.storage.flushed().add_done_callback(functools.partial(_send_when_done,
                                                                           send, answer))
            elif kind == "k":  # the keys this acceptor holds (beginning with a prefix)
                keys = self.acceptor.all_keys()
                if isinstance(body, str):
                    keys = [k for k in keys if k.startswith(body)]
                send([request_id, "k", keys])
        if replies:
            durable = self.lazy.durable(writes)

            def send_replies(_: asyncio.Future[None]) -> None:
                self.failpoint("after-persist-before-reply")
                for envelope in replies:
                    send(envelope)

            durable.add_done_callback(send_replies)

    def _config_notice(self, sender: str, body: Any) -> None:
        """A peer's word of a newer configuration (a membership step's broadcast)."""
        try:
            self.adopt(Config.from_json(body))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignored a malformed configuration from %s: %s", sender, exc)

    def _serve_forwarded(self, request_id: int, body: dict[str, Any],
                         send: Callable[[Envelope], None]) -> None:
        """Run a change a peer forwarded to this node, its home; answer when decided.
        (If the peer's link drops meanwhile, the answer is lost: the peer has
        already reported an unknown outcome, or proposed it too, at most once.)"""
        answer = self.submit(body["key"], change_from_json(body["change"]),
                             float(body["timeout"]), bool(body["retry"]))
        answer.add_done_callback(functools.partial(_answer_forwarded, send, request_id))

    def submit(self, key: str, change: Change, timeout: float, retry: bool
               ) -> asyncio.Future[KeyState]:
        """Decide `change` with this node as the proposer (see Rounds.submit)."""
        return self.rounds.submit(key, change, timeout, retry)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        for link in self.links.values():
            link.start()
        self._settling = asyncio.ensure_future(self._learn_the_settled_form())

    async def stop(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
        for link in self.links.values():
            await link.stop()
        self.rounds.stop()
        self.lazy.stop()  # keeps the commit marks across a clean restart

    async def _learn_the_settled_form(self) -> None:
        """While this node holds an unsettled configuration, ask its peers for theirs
        every SETTLED_POLL_S. A step's settled form has the same epoch as its
        unsettled one, so no request gives it away, and its broadcast is sent once:
        a member whose links were not up yet (one just added, above all) would
        otherwise hold the unsettled form, and stay not caught up, until the next step."""
        while True:
            await asyncio.sleep(SETTLED_POLL_S)
            for peer in self.config.names:  # in order: deterministic under simulation
                link = self.links.get(peer)
                if self.config.settled:
                    break
                if link is not None and link.connected:
                    await self.learn_config(peer)


def _local_reply(on_reply: Callable[[str, Reply], None], dest: str, reply: Reply,
                 _: asyncio.Future[None]) -> None:
    on_reply(dest, reply)


def _peer_reply(on_reply: Callable[[str, Reply], None], dest: str,
                answer: asyncio.Future[Any]) -> None:
    if answer.cancelled() or answer.exception() is not None:
        return  # the link dropped before the reply came: as if it were lost
    try:
        reply = messages.decode(answer.result())
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignored a malformed reply from %s: %s", dest, exc)
        return
    on_reply(dest, reply)  # type: ignore[arg-type]


def _answer_forwarded(send: Callable[[Envelope], None], request_id: int,
                      answer: asyncio.Future[KeyState]) -> None:
    exc = answer.exception()  # (never cancelled: nothing here cancels it)
    if isinstance(exc, NoQuorum):
        send([request_id, "p", {"error": str(exc)}])
    elif exc is not None:
        raise exc  # a bug: the event loop logs it
    else:
        send([request_id, "p", {"state": answer.result().to_json()}])


def _send_when_done(send: Callable[[Envelope], None], envelope: Envelope,
                    _: asyncio.Future[None]) -> None:
    send(envelope)


def _forwarded_state(answer: dict[str, Any]) -> KeyState:
    """The state in a home's answer to a forwarded change (NoQuorum: its error)."""
    if "error" in answer:
        raise NoQuorum(answer["error"])
    return KeyState.from_json(answer["state"])


async def _first_answer(futures: list[asyncio.Future[KeyState]], timeout: float,
                        change: Change) -> KeyState:
    """The first state any of `futures` gives; NoQuorum if none gives one in time."""
    pending = set(futures)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while pending:
        done, pending = await asyncio.wait(pending, timeout=max(0.0, end - loop.time()),
                                           return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break
        for future in futures:  # in order, not the set's: deterministic under simulation
            if future in done and not future.cancelled() and future.exception() is None:
                return future.result()
    raise NoQuorum(f"no quorum answered in time; {unknown_outcome(change)}")
