"""Acceptor requests and replies, with their wire form (plain JSON lists/dicts).

Every request carries its proposer's configuration epoch, and an acceptor that
knows a newer one answers `Fenced` instead (see core.config, 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paxoskv.core.ballot import Ballot
from paxoskv.core.state import KeyState


@dataclass(frozen=True, slots=True)
class Prepare:
    key: str
    ballot: Ballot
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept `state` at `ballot`; then promise `next_promise` (CASPaxos's
    one-round-trip optimisation: the proposer's next change on this key can
    skip the prepare phase)."""

    key: str
    ballot: Ballot
    state: KeyState
    next_promise: Ballot | None = None
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Inspect:
    """Report the accepted ballot and state without promising anything."""

    key: str
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Commit:
    """`ballot`'s state is chosen (a quorum accepted it): the acceptor may serve
    it to local reads. `state` is sent to acceptors that did not accept it, so a
    lagging member catches up (it adopts the state if it holds an older one)."""

    key: str
    ballot: Ballot
    state: KeyState | None = None
    epoch: int = 0


Request = Prepare | Accept | Inspect | Commit


@dataclass(frozen=True, slots=True)
class Promise:
    key: str
    ballot: Ballot
    accepted: Ballot | None
    state: KeyState


@dataclass(frozen=True, slots=True)
class Accepted:
    key: str
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Rejected:
    """The acceptor has promised `promised`, which is higher than the request's ballot."""

    key: str
    ballot: Ballot
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Observed:
    key: str
    accepted: Ballot | None
    state: KeyState


@dataclass(frozen=True, slots=True)
class TooEarly:
    """The acceptor's clock has not reached the deadline that the proposed
    tombstone claims has passed."""

    key: str
    ballot: Ballot
    not_before: int


@dataclass(frozen=True, slots=True)
class Learned:
    key: str
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Fenced:
    """The acceptor knows configuration epoch `epoch`, newer than the request's:
    it refuses requests of older epochs. `ballot` is the request's (None for an
    Inspect)."""

    key: str
    ballot: Ballot | None
    epoch: int


Reply = Promise | Accepted | Rejected | Observed | TooEarly | Learned | Fenced


def _ballot(raw: Any) -> Ballot | None:
    return None if raw is None else Ballot.from_json(raw)


def _raw(ballot: Ballot | None) -> Any:
    return None if ballot is None else ballot.to_json()


def encode(msg: Request | Reply) -> list[Any]:
    match msg:
        case Prepare(key, ballot, epoch):
            return ["prepare", key, ballot.to_json(), epoch]
        case Accept(key, ballot, state, next_promise, epoch):
            return ["accept", key, ballot.to_json(), state.to_json(), _raw(next_promise), epoch]
        case Inspect(key, epoch):
            return ["inspect", key, epoch]
        case Commit(key, ballot, state, epoch):
            return ["commit", key, ballot.to_json(), None if state is None else state.to_json(),
                    epoch]
        case Learned(key, ballot):
            return ["learned", key, ballot.to_json()]
        case Promise(key, ballot, accepted, state):
            return ["promise", key, ballot.to_json(), _raw(accepted), state.to_json()]
        case Accepted(key, ballot):
            return ["accepted", key, ballot.to_json()]
        case Rejected(key, ballot, promised):
            return ["rejected", key, ballot.to_json(), promised.to_json()]
        case Observed(key, accepted, state):
            return ["observed", key, _raw(accepted), state.to_json()]
        case TooEarly(key, ballot, not_before):
            return ["too_early", key, ballot.to_json(), not_before]
        case Fenced(key, ballot, epoch):
            return ["fenced", key, _raw(ballot), epoch]
    raise TypeError(f"not a message: {msg!r}")


def decode(raw: list[Any]) -> Request | Reply:
    kind, key = raw[0], raw[1]
    if kind == "prepare":
        return Prepare(key, Ballot.from_json(raw[2]), int(raw[3]))
    if kind == "accept":
        return Accept(key, Ballot.from_json(raw[2]), KeyState.from_json(raw[3]), _ballot(raw[4]),
                      int(raw[5]))
    if kind == "inspect":
        return Inspect(key, int(raw[2]))
    if kind == "commit":
        return Commit(key, Ballot.from_json(raw[2]),
                      None if raw[3] is None else KeyState.from_json(raw[3]), int(raw[4]))
    if kind == "learned":
        return Learned(key, Ballot.from_json(raw[2]))
    if kind == "promise":
        return Promise(key, Ballot.from_json(raw[2]), _ballot(raw[3]), KeyState.from_json(raw[4]))
    if kind == "accepted":
        return Accepted(key, Ballot.from_json(raw[2]))
    if kind == "rejected":
        return Rejected(key, Ballot.from_json(raw[2]), Ballot.from_json(raw[3]))
    if kind == "observed":
        return Observed(key, _ballot(raw[2]), KeyState.from_json(raw[3]))
    if kind == "too_early":
        return TooEarly(key, Ballot.from_json(raw[2]), int(raw[3]))
    if kind == "fenced":
        return Fenced(key, _ballot(raw[2]), int(raw[3]))
    raise ValueError(f"unknown message kind {kind!r}")
