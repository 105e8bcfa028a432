"""Ballots: totally ordered, unique per proposer, and unique across restarts."""

from __future__ import annotations

from typing import Any, NamedTuple


class Ballot(NamedTuple):
    """A proposal number, ordered as a tuple.

    `boot` is the proposer's durable restart counter, so a proposer that
    crashed and forgot which rounds it used can never reuse a ballot.
    (Ballots, key states and records are tuples so that the garbage collector
    can stop tracking them: a node holds one of each per key.)
    """

    round: int
    boot: int
    node: str

    @property
    def is_zero(self) -> bool:
        """A ZERO ballot (of any epoch): see `zero`."""
        return self.round == 0

    def successor(self) -> Ballot:
        return Ballot(self.round + 1, self.boot, self.node)

    def to_json(self) -> list[Any]:
        return [self.round, self.boot, self.node]

    @staticmethod
    def from_json(raw: list[Any]) -> Ballot:
        return Ballot(int(raw[0]), int(raw[1]), str(raw[2]))


def zero(epoch: int) -> Ballot:
    """The ZERO ballot of a configuration epoch: round 0, below every full-round
    ballot. Only a key's home proposer of that epoch uses it, at most once per
    key, so it may skip the prepare phase: in a static cluster no lower ballot
    can have accepted anything; across membership steps see core.config (3)."""
    return Ballot(0, epoch, "")


ZERO = zero(0)  # the ZERO ballot of the configuration a cluster bootstraps with


def first_ballot(node: str, boot: int, above: Ballot | None) -> Ballot:
    """The lowest ballot of `node` that is higher than `above` and than ZERO."""
    round_ = 1 if above is None else above.round + 1
    return Ballot(round_, boot, node)
