"""Proposer-side state machines for one key: a proposal round and a quorum read.

Both are fed replies one at a time and say what to send next and when they are
done. Timers, retries and backoff belong to the driver around them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Fenced,
    Inspect,
    Observed,
    Prepare,
    Promise,
    Rejected,
    Reply,
    TooEarly,
)
from paxoskv.core.state import EMPTY, KeyState

Outgoing = list[tuple[str, Prepare | Accept]]


@dataclass(frozen=True, slots=True)
class Decided:
    """`state` is chosen; it was derived from `prior`.

    `promised` is a ballot for which a quorum has promised and whose phase-1
    result is `state`: the proposer's next change may start at the accept phase
    with it (None when the acceptors made no such promise).
    """

    prior: KeyState
    state: KeyState
    promised: Ballot | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """An acceptor has promised a higher ballot; retry above `promised`."""

    promised: Ballot


@dataclass(frozen=True, slots=True)
class Premature:
    """An acceptor's clock has not reached the deadline of the proposed tombstone."""

    not_before: int


@dataclass(frozen=True, slots=True)
class Stale:
    """Acceptor `source` knows a newer configuration (`epoch`): the proposer must
    adopt it before it tries again."""

    epoch: int
    source: str


Outcome = Decided | Conflict | Premature | Stale


class Proposal:
    """One attempt to apply `change` to `key` at `ballot`.

    Without `prepared`, it runs the prepare phase and derives the state from
    the highest accepted ballot of a quorum. With `prepared`, the caller holds
    the phase-1 result already (a cached promise, or the ZERO ballot on a fresh
    key) and the attempt starts at the accept phase.
    """

    def __init__(
        self,
        key: str,
        change: Callable[[KeyState], KeyState],
        ballot: Ballot,
        acceptors: Sequence[str],
        quorum: int,
        *,
        prepared: KeyState | None = None,
        next_promise: Ballot | None = None,
        epoch: int = 0,
        write: bool = False,
    ) -> None:
        self.key = key
        self.write = write  # always run the accept phase (a rescan's write-through)
        self.epoch = epoch  # the proposer's configuration epoch, carried by its requests
        self.change = change
        self.ballot = ballot
        self.acceptors = list(acceptors)
        self.quorum = quorum
        self.next_promise = next_promise
        self.outcome: Outcome | None = None
        self._promises: dict[str, Promise] = {}
        self._accepted: set[str] = set()
        self._too_early: set[str] = set()
        self._prior = prepared
        self._proposed: KeyState | None = None

    @property
    def accepted_by(self) -> set[str]:
        """The acceptors that accepted this proposal's state."""
        return set(self._accepted)

    @property
    def too_early_for(self) -> set[str]:
        """The acceptors that refused this proposal's state as premature (so far)."""
        return set(self._too_early)

    @property
    def proposed(self) -> KeyState | None:
        """The state sent in the accept phase, once there is one."""
        return self._proposed

    def start(self) -> Outgoing:
        if self._prior is not None:
            return self._accept_phase(self._prior)
        return [(a, Prepare(self.key, self.ballot, self.epoch)) for a in self.acceptors]

    def receive(self, sender: str, reply: Reply) -> Outgoing:
        if (self.outcome is not None or isinstance(reply, Observed) or reply.key != self.key
                or reply.ballot != self.ballot or sender not in self.acceptors):
            return []
        match reply:
            case Rejected(promised=promised):
                self.outcome = Conflict(promised)
            case Fenced(epoch=epoch):
                self.outcome = Stale(epoch, sender)
            case TooEarly(not_before=deadline):
                # Like a missing vote: give up only when no quorum is left.
                self._too_early.add(sender)
                if len(self._too_early) > len(self.acceptors) - self.quorum:
                    self.outcome = Premature(deadline)
            case Promise() if self._proposed is None and self._prior is None:
                self._promises[sender] = reply
                if len(self._promises) >= self.quorum:
                    return self._after_prepare()
            case Accepted() if self._proposed is not None:
                self._accepted.add(sender)
                if len(self._accepted) >= self.quorum:
                    assert self._prior is not None
                    self.outcome = Decided(self._prior, self._proposed, self.next_promise)
        return []

    def _after_prepare(self) -> Outgoing:
        promises = list(self._promises.values())
        latest = max(promises, key=lambda p: (p.accepted is not None, p.accepted or self.ballot))
        prior = latest.state if latest.accepted is not None else EMPTY
        new = self.change(prior)
        if (new == prior and not self.write
                and all(p.accepted == latest.accepted for p in promises)):
            # A quorum holds the same ballot, so `prior` is chosen, and the
            # change leaves it as it is: nothing to accept.
            self._prior = prior
            self.outcome = Decided(prior, prior, self.ballot)
            return []
        return self._accept_phase(prior)

    def _accept_phase(self, prior: KeyState) -> Outgoing:
        self._prior = prior
        self._proposed = self.change(prior)
        msg = Accept(self.key, self.ballot, self._proposed, self.next_promise, self.epoch)
        return [(a, msg) for a in self.acceptors]


class QuorumRead:
    """A read in one round trip and without writes, when the key is quiet.

    If a quorum reports the same accepted ballot, that state is chosen and no
    higher one can be (any later choice needs a quorum, which would intersect
    this one), so the read is linearizable. Otherwise it is inconclusive and
    the caller falls back to proposing the identity change.
    """

    def __init__(self, key: str, acceptors: Sequence[str], quorum: int, epoch: int = 0) -> None:
        self.key = key
        self.acceptors = list(acceptors)
        self.quorum = quorum
        self.epoch = epoch
        self.done = False
        self.result: KeyState | None = None
        self.stale: Stale | None = None  # an acceptor knew a newer configuration
        self._replies: dict[str, Observed] = {}

    def start(self) -> list[tuple[str, Inspect]]:
        return [(a, Inspect(self.key, self.epoch)) for a in self.acceptors]

    def receive(self, sender: str, reply: Observed | Fenced) -> None:
        if self.done or reply.key != self.key:
            return
        if isinstance(reply, Fenced):
            self.done, self.stale = True, Stale(reply.epoch, sender)  # inconclusive
            return
        self._replies[sender] = reply
        counts: dict[Ballot | None, int] = {}
        for r in self._replies.values():
            counts[r.accepted] = counts.get(r.accepted, 0) + 1
        best, count = max(counts.items(), key=lambda kv: kv[1])
        if count >= self.quorum:
            self.done = True
            states = [r.state for r in self._replies.values() if r.accepted == best]
            self.result = states[0] if best is not None else EMPTY
        elif count + len(self.acceptors) - len(self._replies) < self.quorum:
            self.done = True  # no quorum can agree any more: inconclusive


MAX_CACHED_PROMISES = 10_000


@dataclass(frozen=True, slots=True)
class Plan:
    """How a proposer starts its next attempt on a key: `path` is "cached", "zero" or
    "full"; `prepared` is the phase-1 result it already holds (None: run prepare)."""

    path: str
    ballot: Ballot
    prepared: KeyState | None
    next_promise: Ballot


class Ballots:
    """A proposer's ballots, as a pure state machine (the driver and the property
    tests use this one class).

    Every ballot comes from the proposer's own counter, which is above every
    ballot and next-promise it issued during this boot, and carries the boot
    counter, which is durable; so no ballot is ever issued twice, whatever any
    acceptor (the local one included) saw or forgot. A promise that a quorum
    made for a decided round is cached and used at most once (it leaves the
    cache when used). A ZERO ballot is used only by the key's home of its epoch,
    on a key its own acceptor has no record of, and the driver records that use
    on the home's disk before any peer sees it, so it too is used once per key.
    """

    def __init__(self, node: str, boot: int) -> None:
        self.node = node
        self.boot = boot
        self._round = 0
        self._cached: dict[str, tuple[Ballot, KeyState]] = {}

    def issue(self, above: Ballot | None = None) -> Ballot:
        """A ballot never issued before, higher than `above`."""
        self._round = max(self._round, 0 if above is None else above.round) + 1
        return Ballot(self._round, self.boot, self.node)

    def plan(self, key: str, *, zero: Ballot | None, known_key: bool, above: Ballot | None,
             hint: Ballot | None = None) -> Plan:
        """The next attempt on `key`. `zero`: the ZERO ballot this proposer may use
        for the key (it is the key's home in a settled configuration; else None);
        `known_key`: its acceptor has a record of the key; `above`: the highest
        promise a conflict showed (None on a first attempt); `hint`: a promise
        seen locally, to skip a likely conflict (never a source of ballots)."""
        cached = self._cached.pop(key, None)
        if cached is not None and above is None:
            ballot, state = cached
            return Plan("cached", ballot, state, self.issue(ballot))
        if above is None and zero is not None and not known_key:
            return Plan("zero", zero, EMPTY, self.issue())
        if hint is not None and (above is None or hint > above):
            above = hint
        ballot = self.issue(above)
        return Plan("full", ballot, None, self.issue(ballot))

    def remember(self, key: str, decided: Decided) -> None:
        """Cache the promise a decided round earned. Only the most recently decided
        keys are kept: memory stays bounded."""
        if decided.promised is None:
            return
        self._cached.pop(key, None)
        self._cached[key] = (decided.promised, decided.state)
        if len(self._cached) > MAX_CACHED_PROMISES:
            del self._cached[next(iter(self._cached))]

    def forget(self) -> None:
        """Drop every cached promise (they stay valid; this only costs round trips)."""
        self._cached.clear()
