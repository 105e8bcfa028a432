"""A node's proposer: per-key queues and the consensus rounds that decide them.

Concurrent changes of one key queue up and are decided together in one CASPaxos
round (so contention stays live and cheap). A round takes its ballot from the
proposer's own `Ballots`, runs the pure `Proposal` over the node's acceptor
transport (`Node.send`), retries with backoff on conflicts and premature
deadlines, and tells every acceptor what was chosen.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import Accepted, Commit, Fenced, Observed, Promise, Reply, Request
from paxoskv.core.proposer import (
    Decided,
    Outcome,
    Premature,
    Proposal,
    QuorumRead,
    Stale,
)
from paxoskv.core.state import Change, KeyState, Read, Touch, answers, compose
from paxoskv.server.aio import quiet, resolve_within

if TYPE_CHECKING:
    from paxoskv.server.node import Node


class NoQuorum(Exception):
    """No quorum answered in time. The change may or may not have been decided."""


class Repeated(NoQuorum):
    """This run of a put found that the put may have run before: its answer is
    the other run's, which this one cannot give."""


@dataclass(slots=True)
class _Waiter:
    change: Change
    future: asyncio.Future[KeyState]
    deadline: float
    retry: bool


def unknown_outcome(change: Change) -> str:
    """What a client can conclude when `change` got no answer in time."""
    if isinstance(change, Read):
        return "the read did not complete (a read changes nothing)"
    return "the change may or may not have been decided"


def _cancel_timer(timer: asyncio.TimerHandle, _: asyncio.Future[KeyState]) -> None:
    timer.cancel()


def _time_out(future: asyncio.Future[KeyState], change: Change, timeout: float) -> None:
    if not future.done():
        future.set_exception(NoQuorum(f"no quorum answered within {timeout * 1000:.0f} ms; "
                                      f"{unknown_outcome(change)}"))


class Rounds:
    """The proposer of `node`: it decides the changes `submit` queues."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._queues: dict[str, list[_Waiter]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, change: Change, timeout: float, retry: bool
               ) -> asyncio.Future[KeyState]:
        """Queue a change; concurrent changes of one key share one round. The future
        holds the key's state after the change, or NoQuorum; cancelling it drops
        the change from later rounds. (A future, not a coroutine: a forwarded
        change is answered from its callback, without a task of its own.)"""
        loop = asyncio.get_running_loop()
        # Quiet: a caller that gave up (a hedge that lost) never reads its failure.
        future: asyncio.Future[KeyState] = quiet(loop.create_future())
        deadline = self.node.clock() + timeout
        self._queues.setdefault(key, []).append(_Waiter(change, future, deadline, retry))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key))
        # Once the future is done the worker skips it: a timeout drops the change
        # from later rounds.
        timer = loop.call_later(timeout, _time_out, future, change, timeout)
        future.add_done_callback(functools.partial(_cancel_timer, timer))
        return future

    async def _work(self, key: str) -> None:
        backoff = 0.05
        try:
            while batch := [w for w in self._queues.pop(key, []) if not w.future.done()]:
                deadline = max(w.deadline for w in batch)
                changes = [w.change for w in batch]
                write = any(isinstance(c, Touch) for c in changes)
                try:
                    decided = await self._decide(key, compose(changes), deadline, write)
                except NoQuorum as exc:
                    now = self.node.clock()
                    again = [w for w in batch if w.retry and w.deadline > now]
                    for w in batch:
                        if w not in again and not w.future.done():
                            w.future.set_exception(NoQuorum(str(exc)))
                    if again:
                        self._queues.setdefault(key, [])[:0] = again
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                        backoff = min(backoff * 2, 1.0)
                    continue
                for w, state in zip(batch, answers(decided.prior, changes, decided.state),
                                    strict=True):
                    if w.future.done():
                        continue
                    if state is None:
                        w.future.set_exception(Repeated("this put may have run already; "
                                                        "its outcome is unknown here"))
                    else:
                        w.future.set_result(state)
        finally:
            del self._workers[key]

    # -- consensus rounds ---------------------------------------------------------

    async def _decide(
        self, key: str, change: Callable[[KeyState], KeyState], deadline: float, write: bool,
    ) -> Decided:
        """Decide `change`, retrying until `deadline` (the outcome holds the state it
        took effect on, and the state it made).
        `write`: with an accept phase even if the change leaves the state as it is."""
        backoff = 0.002
        above: Ballot | None = None  # the highest promise a conflict showed us
        while True:
            if not self.node.has_quorum():
                raise NoQuorum(f"{self.node.reachable()} of {len(self.node.members)} members "
                               f"reachable, {self.node.quorum} needed")
            remaining = deadline - self.node.clock()
            if remaining <= 0:
                raise NoQuorum("deadline passed under contention")
            proposal = self._proposal(key, change, above, write)
            outcome = await self._drive(proposal, min(remaining, self.node.attempt_timeout))
            if isinstance(outcome, Decided):
                self.node.ballots.remember(key, outcome)
                return outcome
            if outcome is None:
                raise NoQuorum("no quorum answered in time")
            if isinstance(outcome, Stale):
                # A member knows a newer configuration: adopt it, then go again
                # under its epoch (its members, its quorum, its home).
                self.node.stats.fenced += 1
                await self.node.learn_config(outcome.source)
                if self.node.config.epoch < outcome.epoch:
                    raise NoQuorum(f"this node's configuration (epoch "
                                   f"{self.node.config.epoch}) is out of date: a member "
                                   f"knows epoch {outcome.epoch}; try again")
                above = None
                continue
            if isinstance(outcome, Premature):
                # A deadline that passed on our clock has not on a majority's
                # yet: wait for their clocks (a "not before" is never early).
                wait = (outcome.not_before - self.node.wall_ms()) / 1000
                await self._pause(max(wait, backoff * random.random()), deadline)
                backoff = min(backoff * 2, 0.5)
                continue
            self.node.stats.conflicts += 1
            above = outcome.promised if above is None else max(above, outcome.promised)
            await self._pause(backoff * random.random(), deadline)
            backoff = min(backoff * 2, 0.5)

    async def _pause(self, seconds: float, deadline: float) -> None:
        """Sleep, but not past `deadline` (then the caller's next check gives up)."""
        await asyncio.sleep(max(0.0, min(seconds, deadline - self.node.clock())))

    def _proposal(self, key: str, change: Callable[[KeyState], KeyState],
                  above: Ballot | None, write: bool) -> Proposal:
        home = self.node.home(key) == self.node.name
        plan = self.node.ballots.plan(key, zero=self.node.config.zero() if home else None,
                                      known_key=self.node.acceptor.has_record(key), above=above,
                                      hint=self.node.acceptor.promised(key))
        if plan.path == "cached":
            self.node.stats.cached_promise += 1
        elif plan.path == "zero":
            self.node.stats.fast_path += 1
        else:
            self.node.stats.full_round += 1
        return Proposal(key, change, plan.ballot, self.node.members, self.node.quorum,
                        prepared=plan.prepared, next_promise=plan.next_promise,
                        epoch=self.node.config.epoch, write=write)

    async def _drive(self, proposal: Proposal, timeout: float) -> Outcome | None:
        """Run `proposal` until it has an outcome or `timeout` passes (None)."""
        attempt = _Attempt(self.node, proposal)
        outgoing = proposal.start()
        if proposal.ballot.is_zero:
            # The ZERO ballot may be used once per key: record its use on this
            # node's disk before any peer can see it, so the peers are sent to
            # from the local acceptor's reply, which waits for its write. (Sending
            # in parallel is not safe, even with a per-boot ballot: a home that
            # lost an unsynced accept which peers had chosen could start over on
            # a higher one.)
            mine = [(d, m) for d, m in outgoing if d == self.node.name]
            if mine:
                peers = [(d, m) for d, m in outgoing if d != self.node.name]
                self.node.send(mine, functools.partial(attempt.then_send, peers))
                outgoing = []
        self.node.send(outgoing, attempt.on_reply)
        await resolve_within(attempt.done, timeout)
        return proposal.outcome

    async def quorum_read(self, key: str, timeout: float) -> KeyState | None:
        """The key's state if a quorum agrees on one accepted ballot (None: inconclusive)."""
        reader = QuorumRead(key, self.node.members, self.node.quorum, self.node.config.epoch)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_reply(sender: str, reply: Reply) -> None:
            if isinstance(reply, Observed | Fenced):
                reader.receive(sender, reply)
            if reader.done and not done.done():
                done.set_result(None)

        self.node.send(reader.start(), on_reply)
        await resolve_within(done, timeout)
        if reader.stale is not None:
            await self.node.learn_config(reader.stale.source)
        return reader.result

    def stop(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()


class _Attempt:
    """One attempt of a proposal: it feeds the acceptors' replies to the proposal
    and announces its decision. An object, not a closure over itself: a closure
    that passes itself on is a reference cycle, which only the garbage collector
    frees (with the whole round it holds), and every round made one."""

    def __init__(self, node: Node, proposal: Proposal) -> None:
        self.node = node
        self.proposal = proposal
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unheard: set[str] = set()  # acceptors not yet told that it was chosen

    def on_reply(self, sender: str, reply: Reply) -> None:
        proposal = self.proposal
        if proposal.outcome is not None:
            if sender in self.unheard and not isinstance(reply, Promise):
                # A straggler's answer to the accept, after the decision.
                self.unheard.discard(sender)
                self._tell(sender, accepted=isinstance(reply, Accepted)
                           and reply.ballot == proposal.ballot)
            return
        if self.done.done():
            return  # the attempt was given up: late replies must not drive it on
        self.node.send(proposal.receive(sender, reply), self.on_reply)
        if proposal.outcome is not None:
            self.done.set_result(None)
            self._announce()

    def then_send(self, outgoing: Sequence[tuple[str, Request]], sender: str,
                  reply: Reply) -> None:
        """Take the local acceptor's reply, then send `outgoing` unless the attempt
        is over (decided, or given up)."""
        self.on_reply(sender, reply)
        if not self.done.done():
            self.node.send(outgoing, self.on_reply)

    def _announce(self) -> None:
        """Tell every acceptor that the proposal's state was chosen: local reads
        serve only chosen states, and the ones that missed it catch up.

        Those that accepted get a bare mark now, those that found it premature
        the state. The others are told when their answer to the accept comes
        (with quorum 2 of 3 the third is usually on its way: a bare mark then,
        not the whole state), or get the state after `attempt_timeout` if it
        never does. A bare mark is safe whatever the acceptor holds: it marks only
        a record accepted at this very ballot, and a ballot carries one state.
        """
        proposal = self.proposal
        if not isinstance(proposal.outcome, Decided) or proposal.proposed is None:
            return
        accepted, refused = proposal.accepted_by, proposal.too_early_for
        for dest in proposal.acceptors:
            if dest in accepted or dest in refused:
                self._tell(dest, accepted=dest in accepted)
            else:
                self.unheard.add(dest)
        if self.unheard:
            asyncio.get_running_loop().call_later(self.node.attempt_timeout,
                                                  self._tell_unheard)

    def _tell(self, dest: str, accepted: bool) -> None:
        proposal = self.proposal
        assert proposal.proposed is not None
        self.node.announce(dest, Commit(proposal.key, proposal.ballot,
                                        None if accepted else proposal.proposed,
                                        proposal.epoch))

    def _tell_unheard(self) -> None:
        for dest in self.proposal.acceptors:  # in order: deterministic under simulation
            if dest in self.unheard:
                self._tell(dest, accepted=False)
        self.unheard.clear()
