"""Checks the simulator adds to tests/faults/checker.py, for what only it records.

- A put or a swap takes effect at most once: each one's value is unique, so a
  value seen in two generations means one request was applied twice.
- Local reads are outside the real-time rule (stale by design), but must
  never be dirty: a (token, value) that no put or swap proposed, or that differs
  from the value the linearizable history shows for that generation.
- One state per ballot (white-box, from every durable acceptor write as it
  happens): quorum reads and the prepare phase rely on a ballot carrying one
  state, so two acceptors holding different states at one ballot of a key is
  a violation even before any client sees it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from paxoskv.core.acceptor import Record
from paxoskv.core.ballot import Ballot
from paxoskv.core.state import KeyState
from tests.faults.checker import Op

if TYPE_CHECKING:  # workload.py imports cluster.py, which imports this module
    from tests.sim.workload import LocalRead


def _proposed(history: list[Op]) -> dict[tuple[str, Any], str]:
    """(key, value) -> the kind of write that proposed it (values are unique)."""
    return {(op.key, op.value): op.kind for op in history if op.kind in ("put", "swap")}


def puts_take_effect_once(history: list[Op]) -> list[str]:
    proposed = _proposed(history)
    generations: dict[tuple[str, Any], set[int]] = defaultdict(set)
    for op in history:
        if op.outcome == "ok" and op.found and (op.key, op.seen_value) in proposed:
            generations[(op.key, op.seen_value)].add(op.token)
    return [f"{key}: {proposed[(key, value)]} of {value!r} took effect more than once: "
            f"generations {sorted(tokens)}"
            for (key, value), tokens in sorted(generations.items()) if len(tokens) > 1]


def local_reads_are_clean(history: list[Op], reads: list[LocalRead]) -> list[str]:
    proposed = _proposed(history)
    decided: dict[tuple[str, int], Any] = {}
    for op in history:
        if op.outcome == "ok" and op.found:
            decided.setdefault((op.key, op.token), op.seen_value)
    anomalies = []
    for r in reads:
        if not r.found:
            continue
        where = f"{r.key}: local read by p{r.process} at {r.complete:.3f}"
        if (r.key, r.value) not in proposed:
            anomalies.append(f"{where} saw {r.value!r}, which no put or swap proposed")
        elif (r.key, r.token) in decided and decided[(r.key, r.token)] != r.value:
            anomalies.append(f"{where} saw {r.value!r} at generation {r.token}, which "
                             f"was decided as {decided[(r.key, r.token)]!r} (a dirty read)")
    return anomalies


class BallotLedger:
    """Every (key, accepted ballot) -> the state an acceptor made durable with it.

    Durable writes only: a write that a crash lost was never answered, so its
    ballot may carry another state later (a home that lost its unsynced use of
    ZERO before telling anyone uses it again)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, Ballot], tuple[str, KeyState]] = {}
        self.anomalies: list[str] = []
        self._reported: set[tuple[str, Ballot]] = set()

    def saw(self, node: str, key: str, record: Record) -> None:
        """`node`'s disk made `record` of `key` durable."""
        if record.accepted is None:
            return
        first = self.states.setdefault((key, record.accepted), (node, record.state))
        if first[1] != record.state and (key, record.accepted) not in self._reported:
            self._reported.add((key, record.accepted))
            self.anomalies.append(
                f"{key}: ballot {tuple(record.accepted)} carried two states: "
                f"{first[1].generation()} at {first[0]}, {record.state.generation()} at {node}")
