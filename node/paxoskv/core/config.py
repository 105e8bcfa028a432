"""The cluster's configuration: its members and epoch, and how it may change.

A configuration is a value of its own CASPaxos register, so it is agreed by
consensus like any key; each value has an `epoch` one above the one it
replaced. Members change one at a time, and a step is done only when every key
has been re-scanned under it (`settled`). This module is the pure part: what a
configuration is, which member is a key's home, what a step may change, and the
argument that the procedure is safe. The node drives the steps.

Safety argument (why one member at a time, with fencing and a rescan, keeps
every chosen value):

1. Quorums of consecutive configurations intersect. Step e -> e+1 adds or
   removes one member, and quorums are majorities of the step's member set.
   With n members before and n+1 after (or the reverse), a majority of one and
   a majority of the other hold at least (n//2 + 1) + ((n+1)//2 + 1) = n + 2 >
   n + 1 places, so they share a member. Proposers of epochs e and e+1 may
   therefore run side by side: whatever one chose, the other's prepare quorum
   sees (the CASPaxos paper's network-equivalence argument covers this step,
   as it covers its own two-stage steps).
2. Quorums two steps apart need not intersect (3 -> 4 -> 5 members: a majority
   of {a, b} among three and {c, d, e} among five share nothing). So before the
   next step begins, every value chosen under epoch e must also be chosen
   under epoch e+1, and epoch e must be unable to choose anything new:
   - Fencing: every peer message carries its sender's epoch. An acceptor that
     knows epoch e+1 refuses requests of older epochs (and says which epoch it
     knows), and it adopts a newer epoch as soon as a message carries one. The
     step is not taken until a set of members that meets every epoch-e quorum
     knows e+1 (a majority of the old members), so an epoch-e round can no
     longer gather a quorum of fresh votes.
   - Rescan: then every key that any of those members holds is re-decided by
     an epoch-e+1 proposer with a full round (prepare, then accept of the
     unchanged state: the identity change CASPaxos prescribes), written to
     every reachable member, the new one included. Every acceptor of that
     round's prepare quorum knows e+1 by the time it promises (the prepare
     carried it), so it refuses any late accept of an epoch-e round; an
     epoch-e round that still completes did so with acceptors that had
     accepted before they promised the rescan's ballot, which the rescan's
     prepare saw: the rescan re-decides that value (or a successor) at a
     higher ballot under epoch e+1.
   Only then is the configuration marked `settled`, and only a settled
   configuration may take the next step. So at every moment the latest value
   of every key is chosen under the current epoch or the one before it, and
   (by 1) every prepare quorum of the current epoch sees it.
3. The ZERO ballot (one-round-trip first write by the key's home, skipping the
   prepare) is `zero(epoch)`: round 0, tagged with the epoch, so two homes of
   two epochs never share a ballot. It is used only in a settled
   configuration, only by the key's home of that epoch, and only for a key its
   acceptor holds no record of. After the rescan, every key that existed
   before the step holds a promise of a full-round ballot (round >= 1, so above
   every ZERO) at a quorum: a ZERO accept there is refused, and the home's own
   lone accept of it is outranked at every later prepare. A key created after
   the step by a full round is the same. So a ZERO accept that gathers a
   quorum is on a key that no quorum had ever voted on: it is the key's first
   value, as in a static cluster.
4. Cached promises are ballots of one epoch; a new epoch fences them, and the
   node drops them at every step. A quorum read (one round trip: a quorum
   reports one accepted ballot) counts a quorum of the current epoch, which by
   1 and 2 meets every quorum that can hold the key's latest value.

A removed member that comes back with its old data is fenced the same way: its
requests carry an old epoch, and the answer tells it the configuration that no
longer lists it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from paxoskv.core.ballot import Ballot, zero


class ConfigError(ValueError):
    """A membership step that must not be taken; the message says why."""


class StepInProgress(ConfigError):
    """A step may not start: the previous one has not settled."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    url: str
    member_id: str  # made by its data directory at its first start

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "member_id": self.member_id}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Member:
        return Member(str(raw["name"]), str(raw["url"]), str(raw["member_id"]))


class Homes:
    """Which member (of `names`) decides a key, by rendezvous hashing on member
    names: the member with the highest blake2b-64 of "name\0key" (the hash is
    part of the protocol: members of two versions must agree on every home). So
    adding a member moves only the keys it wins, and removing one only the keys
    it held (a member replaced under its old name gets its old keys back; one home
    per epoch is all that ZERO needs, see 3)."""

    def __init__(self, names: Iterable[str]) -> None:
        # Each member's hash state after "name\0", so a key is hashed once per member
        # without building the string again (every change asks: the hot path).
        self._prefixes = [(name, hashlib.blake2b(f"{name}\0".encode(), digest_size=8))
                          for name in names]

    def __call__(self, key: str) -> str:
        data = key.encode()
        best, best_digest = "", b""
        for name, prefix in self._prefixes:
            hashed = prefix.copy()
            hashed.update(data)
            digest = hashed.digest()
            if digest > best_digest:
                best, best_digest = name, digest
        return best


def home_of(names: Iterable[str], key: str) -> str:
    """The home of `key` among `names` (see `Homes`; a configuration keeps its own)."""
    return Homes(names)(key)


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration: the members (sorted by name), its epoch, and whether
    the step that made it has finished its rescan."""

    epoch: int
    members: tuple[Member, ...]
    settled: bool = True
    # The member names, computed once: every round and quorum check reads them.
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    home: Homes = field(init=False, repr=False, compare=False)  # key -> its home member

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(m.name for m in self.members))
        object.__setattr__(self, "home", Homes(self.names))
        if not self.members:
            raise ConfigError("a configuration needs at least one member")
        if list(self.names) != sorted(set(self.names)):
            raise ConfigError("member names must be unique (and kept sorted)")
        if len({m.member_id for m in self.members}) != len(self.members):
            raise ConfigError("member ids must be unique")

    @staticmethod
    def initial(members: list[Member]) -> Config:
        """The configuration a cluster bootstraps with (epoch 0: its ZERO ballot is
        the one of clusters from before membership change)."""
        return Config(0, tuple(sorted(members, key=lambda m: m.name)))

    def newer_than(self, other: Config) -> bool:
        """Whether a node that holds `other` should adopt this one (a step's settled
        form is newer than its unsettled form)."""
        return (self.epoch, self.settled) > (other.epoch, other.settled)

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def zero(self) -> Ballot | None:
        """The ZERO ballot of this epoch, or None while a step's rescan runs (see 3)."""
        return zero(self.epoch) if self.settled else None

    # -- steps ----------------------------------------------------------------

    def adding(self, member: Member) -> Config:
        """The next configuration, with `member` added (its rescan still to run)."""
        self._check_settled()
        if self.member(member.name) is not None:
            raise ConfigError(f"{member.name!r} is already a member")
        if any(m.member_id == member.member_id for m in self.members):
            raise ConfigError(f"member id {member.member_id} is already in use "
                              f"(by {self._by_id(member.member_id)!r})")
        members = tuple(sorted((*self.members, member), key=lambda m: m.name))
        return Config(self.epoch + 1, members, settled=False)

    def removing(self, name: str) -> Config:
        """The next configuration, without member `name` (its rescan still to run)."""
        self._check_settled()
        if self.member(name) is None:
            raise ConfigError(f"{name!r} is not a member")
        if len(self.members) == 1:
            raise ConfigError(f"{name!r} is the last member: a cluster cannot be empty")
        return Config(self.epoch + 1, tuple(m for m in self.members if m.name != name),
                      settled=False)

    def settle(self) -> Config:
        """This configuration once its rescan is done (the same epoch: the members
        and quorums do not change, so nothing needs fencing)."""
        return replace(self, settled=True)

    def _check_settled(self) -> None:
        if not self.settled:
            raise StepInProgress(f"a membership change is in progress (epoch {self.epoch} "
                                 "is still re-scanning its keys)")

    def _by_id(self, member_id: str) -> str:
        return next(m.name for m in self.members if m.member_id == member_id)

    # -- wire form --------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "settled": self.settled,
                "members": [m.to_json() for m in self.members]}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Config:
        return Config(int(raw["epoch"]), tuple(Member.from_json(m) for m in raw["members"]),
                      bool(raw["settled"]))
