"""The value of one register and the changes that can be applied to it.

Every change is a pure function of the current state (CASPaxos). A key is
*decided anew* each time it turns live or dead; each such decision increases
its generation, which clients see as the fencing token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

Json = Any


class KeyState(NamedTuple):
    """A register's value. Treat `bindings` as read-only: states are shared."""

    token: int = 0
    live: bool = False
    value: Json = None
    bindings: dict[str, Json] = {}  # noqa: RUF012 - never mutated

    def to_json(self) -> dict[str, Json]:
        return {"token": self.token, "live": self.live, "value": self.value,
                "bindings": self.bindings}

    @staticmethod
    def from_json(raw: dict[str, Json]) -> KeyState:
        return KeyState(int(raw["token"]), bool(raw["live"]), raw["value"],
                        dict(raw["bindings"]))


EMPTY = KeyState()

# In a live key's bindings: its deadline, in ms since the epoch.
UNTIL = "until"
# In a tombstone's bindings: the deadline that ended it.
NOT_BEFORE = "not_before"


def not_before(state: KeyState) -> int | None:
    """The time before which `state` must not be accepted, if any."""
    raw = state.bindings.get(NOT_BEFORE)
    return None if raw is None else int(raw)


def public_bindings(state: KeyState) -> dict[str, Json]:
    """The bindings a client sees (without the internal deadline marker)."""
    if NOT_BEFORE not in state.bindings:
        return state.bindings
    return {k: v for k, v in state.bindings.items() if k != NOT_BEFORE}


@dataclass(frozen=True, slots=True)
class Read:
    """The identity change: a linearizable read proposes it."""

    def apply(self, state: KeyState) -> KeyState:
        return state

    def to_json(self) -> dict[str, Json]:
        return {"op": "read"}


@dataclass(frozen=True, slots=True)
class PutIfAbsent:
    """First write wins: a live key keeps its value and bindings."""

    value: Json
    bindings: dict[str, Json] = field(default_factory=dict)

    def apply(self, state: KeyState) -> KeyState:
        if state.live:
            return state
        bindings = dict(self.bindings)
        if NOT_BEFORE in state.bindings:
            # Built on a deadline's tombstone: no acceptor may take this state
            # before that deadline either, or a fast clock could replace the
            # key early (the tombstone alone would be refused, this would not).
            bindings[NOT_BEFORE] = state.bindings[NOT_BEFORE]
        return KeyState(state.token + 1, True, self.value, bindings)

    def to_json(self) -> dict[str, Json]:
        return {"op": "put", "value": self.value, "bindings": self.bindings}


@dataclass(frozen=True, slots=True)
class DeleteIf:
    """End the key's generation if its fencing token is still `token`.

    The result is a tombstone with a new generation, never an erasure, so a
    deleted value cannot come back.
    """

    token: int
    # Set when a deadline ends the key: it ends only if the key's deadline is
    # not later (a renewal moved it), and acceptors refuse the tombstone until
    # their own clock has passed `not_before`, so no clock running fast can end
    # the key early (a majority of clocks must agree).
    not_before: int | None = None

    def apply(self, state: KeyState) -> KeyState:
        if not state.live or state.token != self.token:
            return state
        if self.not_before is None:
            return KeyState(state.token + 1, False)
        until = state.bindings.get(UNTIL)
        if until is None or int(until) > self.not_before:
            return state  # renewed since
        return KeyState(state.token + 1, False, None, {NOT_BEFORE: self.not_before})

    def to_json(self) -> dict[str, Json]:
        return {"op": "delete", "token": self.token, "not_before": self.not_before}


@dataclass(frozen=True, slots=True)
class Renew:
    """Move the deadline of generation `token` to `until` (a session keep-alive).

    The generation stays the same: the key was not decided anew.
    """

    token: int
    until: int

    def apply(self, state: KeyState) -> KeyState:
        if not state.live or state.token != self.token:
            return state
        return state._replace(bindings={**state.bindings, UNTIL: self.until})

    def to_json(self) -> dict[str, Json]:
        return {"op": "renew", "token": self.token, "until": self.until}


Change = Read | PutIfAbsent | DeleteIf | Renew


def change_from_json(raw: dict[str, Json]) -> Change:
    op = raw["op"]
    if op == "read":
        return Read()
    if op == "put":
        return PutIfAbsent(raw["value"], dict(raw.get("bindings") or {}))
    if op == "renew":
        return Renew(int(raw["token"]), int(raw["until"]))
    if op == "delete":
        not_before = raw.get("not_before")
        return DeleteIf(int(raw["token"]), None if not_before is None else int(not_before))
    raise ValueError(f"unknown change {op!r}")


def apply_all(state: KeyState, changes: list[Change]) -> list[KeyState]:
    """Apply changes in order; element i is the state right after change i."""
    results = []
    for change in changes:
        state = change.apply(state)
        results.append(state)
    return results
