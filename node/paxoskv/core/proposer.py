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


Outcome = Decided | Conflict | Premature


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
    ) -> None:
        self.key = key
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
    def proposed(self) -> KeyState | None:
        """The state sent in the accept phase, once there is one."""
        return self._proposed

    def start(self) -> Outgoing:
        if self._prior is not None:
            return self._accept_phase(self._prior)
        return [(a, Prepare(self.key, self.ballot)) for a in self.acceptors]

    def receive(self, sender: str, reply: Reply) -> Outgoing:
        if (self.outcome is not None or isinstance(reply, Observed) or reply.key != self.key
                or reply.ballot != self.ballot or sender not in self.acceptors):
            return []
        match reply:
            case Rejected(promised=promised):
                self.outcome = Conflict(promised)
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
        if new == prior and all(p.accepted == latest.accepted for p in promises):
            # A quorum holds the same ballot, so `prior` is chosen, and the
            # change leaves it as it is: nothing to accept.
            self._prior = prior
            self.outcome = Decided(prior, prior, self.ballot)
            return []
        return self._accept_phase(prior)

    def _accept_phase(self, prior: KeyState) -> Outgoing:
        self._prior = prior
        self._proposed = self.change(prior)
        msg = Accept(self.key, self.ballot, self._proposed, self.next_promise)
        return [(a, msg) for a in self.acceptors]


class QuorumRead:
    """A read in one round trip and without writes, when the key is quiet.

    If a quorum reports the same accepted ballot, that state is chosen and no
    higher one can be (any later choice needs a quorum, which would intersect
    this one), so the read is linearizable. Otherwise it is inconclusive and
    the caller falls back to proposing the identity change.
    """

    def __init__(self, key: str, acceptors: Sequence[str], quorum: int) -> None:
        self.key = key
        self.acceptors = list(acceptors)
        self.quorum = quorum
        self.done = False
        self.result: KeyState | None = None
        self._replies: dict[str, Observed] = {}

    def receive(self, sender: str, reply: Observed) -> None:
        if self.done or reply.key != self.key:
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
