"""Checks recorded client histories of PaxosKV keys (issue 4's checker).

Each key is a register whose states form a chain of generations: token 0 is
"never written", an odd token is a live value, an even one a tombstone, and
each generation is created by exactly one decision. That shape admits a fast
exact check instead of a search over interleavings: a history is linearizable
when

1. every generation has one value (no value decided twice for a generation);
2. every generation an operation saw was created by an operation invoked before
   that observer completed (nothing read from the future or out of thin air);
3. generations never go back in real time: if A completed before B was invoked,
   B saw a token at least A's (so no acknowledged put is lost);
4. the chain has no gap: a token seen implies every tombstone below it, and each of
   those needs a delete that could have made it (as in 2), unless bindings end keys;
5. a delete's answer agrees with itself: `deleted` is true exactly when the answer's
   token is past the generation it named; and a delete answered `deleted: false` did
   not end that generation, so it explains no tombstone;
6. a compare-and-swap (a swap) decides a live generation from a live one: the
   generation before the one holding a swap's value was live, held the swap's
   `expected` value and (if it named one) its token; a swap answered `swapped: true`
   answers the generation it decided, and one answered `swapped: false` decided none.
   Swaps break the parity of 0-4 (a live generation may follow a live one), so for a
   key with swaps, a tombstone is one seen absent, and a generation no op saw may be
   anything;

where an operation whose outcome is unknown counts as invoked but never
completed. Deadlines are checked too: no read completed before a key's `until`
may report that generation gone. Sessions, from each client's log of its
keep-alives (`sessions_live_while_promised`): no keep-alive finds a session gone
while it surely lived, and none renews it once it was found gone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from paxoskv.core.state import same_json

Kind = Literal["put", "get", "delete", "swap"]
Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class Op:
    """One client operation on one key, as recorded by the test's client."""

    process: int
    kind: Kind
    key: str
    invoke: float  # seconds since the epoch (time.time()), one clock for the test
    complete: float  # math.inf while unknown
    outcome: Outcome
    value: Any = None  # put, swap: the value proposed
    token_arg: int = 0  # delete: the generation to end; swap: the token required (0: none)
    expected: Any = None  # swap: the value the key must hold
    until: int | None = None  # put: the deadline binding (ms since the epoch)
    session: str | None = None  # put: the session binding
    bound: bool = False  # put: it has another binding that can end its key (parent, node)
    # The answer, for ok operations:
    found: bool = False
    seen_value: Any = None
    token: int = 0
    deleted: bool = False
    swapped: bool = False
    error: str | None = None  # the error code of a failed or unknown operation, if any


@dataclass
class SessionLog:
    """What one client saw of one session it opened."""

    id: str
    ttl_ms: int
    until_ms: int  # the latest deadline an ok open or keep-alive returned (a node's clock)
    closed_at: float = math.inf  # invoke time of the first close attempt, whatever its outcome
    # Keep-alives that answered: (invoke, complete, new deadline or None if found dead).
    keep_alives: list[tuple[float, float, int | None]] = field(default_factory=list)


@dataclass
class Report:
    operations: int = 0
    anomalies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies


def check(history: list[Op], bindings_end_keys: bool = False,
          sessions_alive_until: dict[str, float] | None = None) -> Report:
    """Check a history; `bindings_end_keys`: generations made by a bound put (a
    deadline, a session, a parent key, a node) may also end without a client delete,
    so their tombstones need no creating op;
    `sessions_alive_until`: session id -> a time (s) until which it surely lived
    (before its close, and within a TTL of its latest successful keep-alive)."""
    report = Report(operations=len(history))
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    for key, ops in sorted(by_key.items()):
        report.anomalies.extend(_check_key(key, ops, bindings_end_keys,
                                           sessions_alive_until or {}))
    return report


def _check_key(key: str, ops: list[Op], bindings_end_keys: bool,
               sessions_alive_until: dict[str, float]) -> list[str]:
    anomalies: list[str] = []
    observed = [op for op in ops if op.outcome == "ok"]
    swaps = [op for op in ops if op.kind == "swap"]
    if not swaps:
        for op in observed:
            if op.token % 2 != (1 if op.found else 0):
                anomalies.append(f"{key}: {op.kind} by p{op.process} saw token {op.token} "
                                 f"with found={op.found}: odd tokens are live, even ones "
                                 "tombstones")

    # 1. One value per generation.
    values: dict[int, Any] = {}
    for op in observed:
        if op.found:
            if op.token in values and values[op.token] != op.seen_value:
                anomalies.append(f"{key}: generation {op.token} decided twice: "
                                 f"{values[op.token]!r} and {op.seen_value!r}")
            values.setdefault(op.token, op.seen_value)
    dead = {op.token for op in observed if not op.found}

    # 2. Every generation seen was created by an op invoked before the observer completed:
    #    a live one by the put or swap of its value, a tombstone by a delete.
    made_live: dict[int, float] = {}  # token -> earliest invocation of a possible creator
    made_dead: dict[int, float] = {}
    for op in ops:
        if op.kind in ("put", "swap") and op.outcome != "fail":
            for token, value in values.items():
                if value == op.value:
                    made_live[token] = min(made_live.get(token, math.inf), op.invoke)
        if (op.kind == "delete" and op.outcome != "fail" and (swaps or op.token_arg % 2 == 1)
                and not (op.outcome == "ok" and not op.deleted)):
            token = op.token_arg + 1  # only a live generation can be ended
            made_dead[token] = min(made_dead.get(token, math.inf), op.invoke)
    if not swaps:  # parity tells live from dead: one table, as before swaps existed
        made_live = made_dead = {t: min(made_live.get(t, math.inf), made_dead.get(t, math.inf))
                                 for t in {*made_live, *made_dead}}
    bound_values = [op.value for op in ops if op.kind == "put"
                    and (op.until is not None or op.session is not None or op.bound)]

    def ended_by_binding(tomb: int) -> bool:
        """Whether a binding may have ended the generation before tombstone `tomb`:
        one whose value nobody saw, or one a bound put made (with swaps: any)."""
        return bindings_end_keys and (bool(swaps) or tomb - 1 not in values
                                      or values[tomb - 1] in bound_values)

    for op in observed:
        if op.token == 0 or (not (op.found if swaps else op.token % 2)
                             and ended_by_binding(op.token)):
            continue
        if (made_live if op.found else made_dead).get(op.token, math.inf) >= op.complete:
            anomalies.append(f"{key}: {op.kind} by p{op.process} saw generation {op.token} "
                             "that no operation invoked before it could have created")

    # 4. No gap in the chain: every tombstone below a token seen was made by a delete
    #    (or, where bindings end keys, maybe by a binding).
    unseen_writes = [op.invoke for op in ops if op.kind in ("put", "swap")
                     and op.outcome != "fail" and op.value not in values.values()]
    for op in observed:
        for tomb in range(2, op.token + 1, 1 if swaps else 2):
            if tomb in values or ended_by_binding(tomb) or (swaps and tomb not in dead and min(
                    unseen_writes, default=math.inf) < op.complete):
                continue  # (with swaps) live, or maybe a generation no op saw
            if made_dead.get(tomb, math.inf) >= op.complete:
                anomalies.append(f"{key}: {op.kind} by p{op.process} saw token {op.token}, "
                                 f"but no delete invoked before it could have ended "
                                 f"generation {tomb - 1}")
                break

    # 5. A delete's answer agrees with itself.
    for op in observed:
        if op.kind == "delete" and op.deleted != (op.token > op.token_arg):
            anomalies.append(f"{key}: delete({op.token_arg}) by p{op.process} answered "
                             f"deleted={op.deleted} with token {op.token}")

    # 6. Swaps: from a live generation holding `expected`; `swapped` tells the truth.
    anomalies += _check_swaps(key, swaps, values, dead)

    # 3. Real-time monotonicity: sweep by invocation; everything completed before an
    #    invocation must have seen a token no larger than what that op sees.
    by_complete = sorted(observed, key=lambda o: o.complete)
    highest, highest_op, i = -1, None, 0
    for op in sorted(observed, key=lambda o: o.invoke):
        while i < len(by_complete) and by_complete[i].complete < op.invoke:
            if by_complete[i].token > highest:
                highest, highest_op = by_complete[i].token, by_complete[i]
            i += 1
        if op.token < highest and highest_op is not None:
            anomalies.append(
                f"{key}: {op.kind} by p{op.process} at {op.invoke:.3f} saw token {op.token} "
                f"after {highest_op.kind} by p{highest_op.process} had completed with token "
                f"{highest} at {highest_op.complete:.3f} (acknowledged state lost)")

    # Lifetimes: a generation bound to a deadline or a session must not be reported
    # gone before the deadline, or while the session surely lived. A swap passes the
    # bindings on to the generation it decides: the lifetime goes on through swaps.
    swapped_in = {op.value for op in swaps}
    top = max((op.token for op in observed), default=0)
    for put in ops:
        if put.kind != "put" or put.outcome != "ok" or put.seen_value != put.value:
            continue  # only the put that created a generation set its bindings
        lives_until = math.inf if put.until is None else put.until / 1000
        if put.session is not None:
            lives_until = min(lives_until, sessions_alive_until.get(put.session, -math.inf))
        if lives_until == math.inf:
            continue
        created = last = put.token
        while last < top and (values.get(last + 1) in swapped_in or (
                swaps and last + 1 not in values and last + 1 not in dead)):
            last += 1  # swapped, or (with swaps) maybe: a generation no op saw
        for op in observed:
            deleted_by_client = any(
                d.kind == "delete" and d.outcome != "fail" and created <= d.token_arg <= last
                and d.invoke < op.complete for d in ops)
            if op.token > last and op.complete < lives_until and not deleted_by_client:
                anomalies.append(f"{key}: generation {created} reported gone by p{op.process} "
                                 f"while its bindings lived (until {lives_until:.3f})")
    return anomalies


def _check_swaps(key: str, swaps: list[Op], values: dict[int, Any], dead: set[int]
                 ) -> list[str]:
    anomalies = []
    decided = {value: token for token, value in values.items()}
    for op in swaps:
        who = f"{key}: swap({op.expected!r} -> {op.value!r}) by p{op.process}"
        token = decided.get(op.value)
        if op.outcome == "ok" and op.swapped and not (op.found and op.seen_value == op.value):
            anomalies.append(f"{who} answered swapped=true with {op.seen_value!r} at "
                             f"token {op.token}, not the generation it decided")
        if token is None:
            continue
        if op.outcome == "ok" and not op.swapped:
            anomalies.append(f"{who} answered swapped=false, yet generation {token} holds "
                             "its value")
        before = token - 1
        if before in dead or before == 0:
            anomalies.append(f"{who} decided generation {token} after generation {before}, "
                             "which was not live")
        elif before in values and not same_json(values[before], op.expected):
            anomalies.append(f"{who} decided generation {token} after generation {before}, "
                             f"which held {values[before]!r}")
        if op.token_arg and op.token_arg != before:
            anomalies.append(f"{who} required token {op.token_arg}, yet decided generation "
                             f"{token} after generation {before}")
    return anomalies


def sessions_live_while_promised(sessions: dict[str, SessionLog],
                                 alive_until: dict[str, float]) -> list[str]:
    """`alive_until`: session id -> the time (s) until which it surely lived (its close,
    or when a quorum of clocks passed the latest deadline it was given)."""
    anomalies = []
    for sid, log in sorted(sessions.items()):
        dead_at = min((c for _, c, until in log.keep_alives if until is None), default=None)
        if dead_at is None:
            continue
        if dead_at < alive_until[sid]:
            anomalies.append(f"session {sid}: a keep-alive found it gone at {dead_at:.3f}, "
                             f"but it surely lived until {alive_until[sid]:.3f}")
        for invoke, _, until in log.keep_alives:
            if until is not None and invoke > dead_at:
                anomalies.append(f"session {sid}: found gone at {dead_at:.3f}, then renewed "
                                 f"by a keep-alive invoked at {invoke:.3f}")
    return anomalies
