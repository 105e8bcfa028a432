"""The value of one register and the changes that can be applied to it.

Every change is a pure function of the current state (CASPaxos). A key is
*decided anew* each time it turns live or dead; each such decision increases
its generation, which clients see as the fencing token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

Json = Any
# A put that ran on a key (or a swap that took effect, or a delete that ran ahead of the
# key): (its id, its expiry in ms, the token it created or found, won).
Applied = tuple[str, int, int, bool]


class KeyState(NamedTuple):
    """A register's value. Treat `bindings` as read-only: states are shared.

    `applied` and `horizon` make puts take effect at most once (see
    `PutIfAbsent`): the recent puts that ran on this key (and the swaps that took
    effect, see `SwapIf`, and the deletes that ran ahead of it, see `DeleteIf`),
    each as (id, expiry, token, won), and the latest expiry among the ids
    forgotten since.
    """

    token: int = 0
    live: bool = False
    value: Json = None
    bindings: dict[str, Json] = {}  # noqa: RUF012 - never mutated
    applied: tuple[Applied, ...] = ()
    horizon: int = 0

    def to_json(self) -> dict[str, Json]:
        raw = {"token": self.token, "live": self.live, "value": self.value,
               "bindings": self.bindings}
        if self.applied or self.horizon:
            raw["applied"] = self.applied
            raw["horizon"] = self.horizon
        return raw

    @staticmethod
    def from_json(raw: dict[str, Json]) -> KeyState:
        # Only from peers and our own disk, which wrote it with to_json: the
        # entries of `applied` need no coercion, only to be tuples again.
        applied = raw.get("applied")
        return KeyState(int(raw["token"]), bool(raw["live"]), raw["value"],
                        dict(raw["bindings"]),
                        tuple(map(tuple, applied)) if applied else (),
                        int(raw.get("horizon", 0)))

    def generation(self) -> tuple[int, bool, Json]:
        """What a generation is: its token, liveness and value (bindings such as
        a session's deadline may move within it)."""
        return self.token, self.live, self.value


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
class Touch:
    """The identity change of a membership step's rescan: like Read, but its round
    always runs the accept phase, so the key's state is written through every
    member of the new configuration (core.config, 2), never only read."""

    def apply(self, state: KeyState) -> KeyState:
        return state

    def to_json(self) -> dict[str, Json]:
        return {"op": "touch"}


@dataclass(frozen=True, slots=True)
class ReplaceIf:
    """Replace the value with `value` if it is `expected` (None: the key holds no
    live value), as a new generation: the compare-and-set that decides a
    configuration register's next value. Otherwise the state stays as it is."""

    expected: Json
    value: Json

    def apply(self, state: KeyState) -> KeyState:
        if (state.value if state.live else None) != self.expected:
            return state
        return state._replace(token=state.token + 1, live=True, value=self.value)

    def to_json(self) -> dict[str, Json]:
        return {"op": "replace", "expected": self.expected, "value": self.value}


# How long a put's id is remembered after the newest put's expiry, and how many
# ids a key remembers at most. Either bound only trades availability (a put
# older than the horizon is refused as a possible repeat), never safety.
FORGET_AFTER_MS = 10_000
MAX_APPLIED = 1024


def remember(state: KeyState, run: Applied) -> KeyState:
    """`state` also remembering `run` (a put's or a swap's), forgetting the ids that
    expired FORGET_AFTER_MS before it, and the oldest beyond MAX_APPLIED."""
    token, live, value, bindings, applied, horizon = state
    if not applied:  # the common case: a key's first put in a while
        return KeyState(token, live, value, bindings, (run,), horizon)
    cutoff = run[1] - FORGET_AFTER_MS
    runs = sorted([*applied, run], key=lambda a: a[1])
    keep = [a for a in runs if a[1] >= cutoff][-MAX_APPLIED:]
    forgotten = runs[:len(runs) - len(keep)]
    horizon = max([horizon, *(a[1] for a in forgotten)])
    return KeyState(token, live, value, bindings, tuple(keep), horizon)


def ran_before(id_: str, expires: int, state: KeyState) -> bool:
    """Whether the change with this id and expiry may have run on `state`'s key
    before: it is remembered, or it expires no later than the latest forgotten id
    (`<=`: the horizon is that id's expiry, so a change expiring exactly then may be
    that very change)."""
    return bool(id_) and (expires <= state.horizon or any(a[0] == id_ for a in state.applied))


@dataclass(frozen=True, slots=True)
class PutIfAbsent:
    """First write wins: a live key keeps its value and bindings.

    A put with an `id` takes effect at most once, however often it runs (a
    request forwarded, hedged, retried or duplicated by the network): the key
    remembers the puts that ran on it, winners and losers, so a repeat changes
    nothing, even after the key was deleted and could be put again. A repeat
    answers as the run that took effect did (`answer`): a winner with the
    generation it created, a loser with the generation it found, while that one
    lasts. An id is forgotten only after its `expires` (ms, the latest time at
    which the node that issued it could still be running it, on that node's
    clock) is FORGET_AFTER_MS older than a newer put's, or when more than
    MAX_APPLIED are held; `horizon` then records the latest forgotten expiry,
    and a put that expires no later than the horizon is refused as a possible repeat.
    So safety never depends on clocks agreeing: a fast clock can only make
    puts be refused, never run twice.
    """

    value: Json
    bindings: dict[str, Json] = field(default_factory=dict)
    id: str = ""
    expires: int = 0

    def repeated(self, state: KeyState) -> bool:
        """Whether this put may have run on `state`'s key before (then it does nothing)."""
        return ran_before(self.id, self.expires, state)

    def won(self, state: KeyState) -> bool:
        """Whether this put created `state`'s live generation (`state` is what it
        answered: the state right after it, or a repeat's answer). Exact unless more
        than MAX_APPLIED puts with later expiries crowd its id out at its own step."""
        return state.live and any(a[0] == self.id and a[3] and a[2] == state.token
                                  for a in state.applied)

    def answer(self, state: KeyState) -> KeyState | None:
        """What a repeat of this put on `state` answers: what its first run did, as far
        as `state` tells (None: unknown, the id was forgotten or the generation it
        lost to has ended)."""
        for a in state.applied:
            id_, _, token, won = a
            if id_ == self.id:
                if won:
                    return KeyState(token, True, self.value, self.bindings, (a,))
                return state if state.live and state.token == token else None
        return None

    def apply(self, state: KeyState) -> KeyState:
        if self.id and self.repeated(state):
            return state
        if state.live:
            return self._remember(state, state.token, won=False)
        bindings = dict(self.bindings)
        if NOT_BEFORE in state.bindings:
            # Built on a deadline's tombstone: no acceptor may take this state
            # before that deadline either, or a fast clock could replace the
            # key early (the tombstone alone would be refused, this would not).
            bindings[NOT_BEFORE] = state.bindings[NOT_BEFORE]
        won = KeyState(state.token + 1, True, self.value, bindings, state.applied,
                       state.horizon)
        return self._remember(won, won.token, won=True)

    def _remember(self, state: KeyState, token: int, won: bool) -> KeyState:
        return remember(state, (self.id, self.expires, token, won)) if self.id else state

    def to_json(self) -> dict[str, Json]:
        return {"op": "put", "value": self.value, "bindings": self.bindings, "id": self.id,
                "expires": self.expires}


@dataclass(frozen=True, slots=True)
class DeleteIf:
    """End the key's generation if its fencing token is still `token`.

    The result is a tombstone with a new generation, never an erasure, so a
    deleted value cannot come back. A run after one that ended generation `token`,
    or found it ended, changes nothing: generations never come back.

    A run that finds the key *behind* `token` (a generation not made yet: a client
    may name any token) changes nothing and answers "not deleted". A later run of the
    same delete (forwarded, hedged, duplicated), after a put made generation `token`,
    would end it: the delete would take effect after answering that it did not (a
    fault run found this). So a delete with an `id` that runs behind the key is
    remembered as a put is (`applied`, forgotten the same way), and no later run of
    it does anything; `ended` tells what a run's answer means.
    """

    token: int
    # Set when a deadline ends the key: it ends only if the key's deadline is
    # not later (a renewal moved it), and acceptors refuse the tombstone until
    # their own clock has passed `not_before`, so no clock running fast can end
    # the key early (a majority of clocks must agree).
    not_before: int | None = None
    id: str = ""
    expires: int = 0  # as a put's: the latest time a run of it may still start (ms)

    def apply(self, state: KeyState) -> KeyState:
        if ran_before(self.id, self.expires, state):
            return state
        if state.token < self.token and self.id:  # behind: remember that it ran
            return remember(state, (self.id, self.expires, state.token, False))
        if not state.live or state.token != self.token:
            return state
        if self.not_before is None:
            return KeyState(state.token + 1, False, None, {}, state.applied, state.horizon)
        until = state.bindings.get(UNTIL)
        if until is None or int(until) > self.not_before:
            return state  # renewed since
        return KeyState(state.token + 1, False, None, {NOT_BEFORE: self.not_before},
                        state.applied, state.horizon)

    def ended(self, state: KeyState) -> bool | None:
        """Whether generation `token` has ended (by this delete or before it), as
        `state`, the key's state right after a run of this delete, tells. None when it
        cannot: that run found generation `token` live and did nothing, because the
        delete's id may have been forgotten (an earlier run of it may have found the
        key behind, and then it must not end the generation now)."""
        if state.token > self.token:
            return True
        if (self.id and self.not_before is None and state.live and state.token == self.token
                and not any(a[0] == self.id for a in state.applied)):
            return None
        return False

    def to_json(self) -> dict[str, Json]:
        return {"op": "delete", "token": self.token, "not_before": self.not_before,
                "id": self.id, "expires": self.expires}


@dataclass(frozen=True, slots=True)
class SwapIf:
    """Give generation `token`, if it is still the live one, the value `value` as a new
    generation (token + 1) that keeps the key's bindings (its lifetime): the change
    under a compare-and-swap of the value (api.swap_value compares, then runs this).

    Conditional on a generation, not on a value: a value may come back (A, B, A), a
    generation never does, so no run of it (forwarded, hedged, duplicated) can take
    effect twice. A swap with an `id` is remembered by the key as a put is (`applied`,
    forgotten the same way), so every run of it can tell whether it took effect
    (`swapped`), even when another request swapped in the same value at the same
    generation, which the state alone could not tell apart.
    """

    token: int
    value: Json
    id: str = ""
    expires: int = 0  # as a put's: the latest time a run of it may still start (ms)

    def apply(self, state: KeyState) -> KeyState:
        if not state.live or state.token != self.token:
            return state
        swapped = state._replace(token=self.token + 1, value=self.value)
        if not self.id:
            return swapped
        return remember(swapped, (self.id, self.expires, swapped.token, True))

    def swapped(self, state: KeyState) -> bool | None:
        """Whether this swap took effect, as `state` (the key's state after any run of
        it) tells; None when it cannot: its id may have been forgotten."""
        if any(a[0] == self.id and a[3] for a in state.applied):
            return True
        return None if self.expires <= state.horizon else False

    def to_json(self) -> dict[str, Json]:
        return {"op": "swap", "token": self.token, "value": self.value, "id": self.id,
                "expires": self.expires}


def same_json(a: Json, b: Json) -> bool:
    """Whether two JSON values are the same: as JSON text, so `true` is not `1` and `1`
    is not `1.0` (Python's == says both are), and the order of object keys is free."""
    option = orjson.OPT_SORT_KEYS
    return a is b or orjson.dumps(a, option=option) == orjson.dumps(b, option=option)


@dataclass(frozen=True, slots=True)
class Renew:
    """Move the deadline of generation `token` to `until` (a session keep-alive).

    The generation stays the same: the key was not decided anew. A deadline
    only ever moves later, so a keep-alive that arrives late (retried,
    duplicated, overtaken) cannot shorten a deadline already given out.
    """

    token: int
    until: int

    def apply(self, state: KeyState) -> KeyState:
        if not state.live or state.token != self.token:
            return state
        current = state.bindings.get(UNTIL)
        if current is not None and int(current) >= self.until:
            return state
        return state._replace(bindings={**state.bindings, UNTIL: self.until})

    def to_json(self) -> dict[str, Json]:
        return {"op": "renew", "token": self.token, "until": self.until}


Change = Read | PutIfAbsent | DeleteIf | Renew | Touch | ReplaceIf | SwapIf


def change_from_json(raw: dict[str, Json]) -> Change:
    op = raw["op"]
    if op == "read":
        return Read()
    if op == "touch":
        return Touch()
    if op == "replace":
        return ReplaceIf(raw["expected"], raw["value"])
    if op == "put":
        return PutIfAbsent(raw["value"], dict(raw.get("bindings") or {}), str(raw.get("id", "")),
                           int(raw.get("expires", 0)))
    if op == "renew":
        return Renew(int(raw["token"]), int(raw["until"]))
    if op == "swap":
        return SwapIf(int(raw["token"]), raw["value"], str(raw.get("id", "")),
                      int(raw.get("expires", 0)))
    if op == "delete":
        not_before = raw.get("not_before")
        return DeleteIf(int(raw["token"]), None if not_before is None else int(not_before),
                        str(raw.get("id", "")), int(raw.get("expires", 0)))
    raise ValueError(f"unknown change {op!r}")


def step(change: Change, state: KeyState) -> KeyState:
    """`change` applied to `state`, keeping the largest deadline guard it builds on.

    A state derived from a deadline's tombstone must not be accepted before
    that deadline either (whatever the change: a put, a delete, a renewal), or
    a proposer whose clock runs fast could build on a tombstone that no
    majority of clocks would accept yet, and end the key early.
    """
    new = change.apply(state)
    guard = not_before(state)
    if new is state or guard is None:
        return new
    current = not_before(new)
    if current is None or current < guard:
        new = new._replace(bindings={**new.bindings, NOT_BEFORE: guard})
    return new


def compose(changes: list[Change]) -> Callable[[KeyState], KeyState]:
    """One change that applies `changes` in order: a batch decided in one round."""
    def apply(state: KeyState) -> KeyState:
        for change in changes:
            state = step(change, state)
        return state

    return apply


def answers(state: KeyState, changes: list[Change], final: KeyState | None = None
            ) -> list[KeyState | None]:
    """Apply changes in order to the decided prior `state`; element i is what change i
    answers: the state right after it, or, for a put that ran before, what that run
    answered (None when the state no longer tells). `final`: the state after them
    all (`compose(changes)(state)`, as decided), which the last one then answers
    without being applied again (changes are pure functions)."""
    results: list[KeyState | None] = []
    last = len(changes) - 1
    for i, change in enumerate(changes):
        if isinstance(change, PutIfAbsent) and change.repeated(state):
            results.append(change.answer(state))
            continue
        state = final if final is not None and i == last else step(change, state)
        results.append(state)
    return results
