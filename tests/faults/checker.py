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

Kind = Literal["put", "get", "delete"]
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
    value: Any = None  # put: the value proposed
    token_arg: int = 0  # delete: the generation to end
    until: int | None = None  # put: the deadline binding (ms since the epoch)
    session: str | None = None  # put: the session binding
    # The answer, for ok operations:
    found: bool = False
    seen_value: Any = None
    token: int = 0
    deleted: bool = False
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
    """Check a history; `bindings_end_keys`: generations may also end without a
    client delete (deadlines, sessions), so tombstones need no creating op;
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
    for op in observed:
        if op.token % 2 != (1 if op.found else 0):
            anomalies.append(f"{key}: {op.kind} by p{op.process} saw token {op.token} with "
                             f"found={op.found}: odd tokens are live, even ones tombstones")

    # 1. One value per generation.
    values: dict[int, Any] = {}
    for op in observed:
        if op.found:
            if op.token in values and values[op.token] != op.seen_value:
                anomalies.append(f"{key}: generation {op.token} decided twice: "
                                 f"{values[op.token]!r} and {op.seen_value!r}")
            values.setdefault(op.token, op.seen_value)

    # 2. Every generation seen was created by an op invoked before the observer completed.
    creators: dict[int, float] = {}  # token -> earliest invocation of a possible creator
    for op in ops:
        if op.kind == "put" and op.outcome != "fail":
            for token, value in values.items():
                if value == op.value:
                    creators[token] = min(creators.get(token, math.inf), op.invoke)
        if (op.kind == "delete" and op.outcome != "fail" and op.token_arg % 2 == 1
                and not (op.outcome == "ok" and not op.deleted)):
            token = op.token_arg + 1  # only a live generation can be ended
            creators[token] = min(creators.get(token, math.inf), op.invoke)
    for op in observed:
        if op.token == 0 or (op.token % 2 == 0 and bindings_end_keys):
            continue
        if creators.get(op.token, math.inf) >= op.complete:
            anomalies.append(f"{key}: {op.kind} by p{op.process} saw generation {op.token} "
                             "that no operation invoked before it could have created")

    # 4. No gap in the chain: every tombstone below a token seen was made by a delete.
    if not bindings_end_keys:
        for op in observed:
            for tomb in range(2, op.token + 1, 2):
                if creators.get(tomb, math.inf) >= op.complete:
                    anomalies.append(f"{key}: {op.kind} by p{op.process} saw token {op.token}, "
                                     f"but no delete invoked before it could have ended "
                                     f"generation {tomb - 1}")
                    break

    # 5. A delete's answer agrees with itself.
    for op in observed:
        if op.kind == "delete" and op.deleted != (op.token > op.token_arg):
            anomalies.append(f"{key}: delete({op.token_arg}) by p{op.process} answered "
                             f"deleted={op.deleted} with token {op.token}")

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
    # gone before the deadline, or while the session surely lived.
    for put in ops:
        if put.kind != "put" or put.outcome != "ok" or put.seen_value != put.value:
            continue  # only the put that created a generation set its bindings
        lives_until = math.inf if put.until is None else put.until / 1000
        if put.session is not None:
            lives_until = min(lives_until, sessions_alive_until.get(put.session, -math.inf))
        if lives_until == math.inf:
            continue
        created = put.token
        for op in observed:
            deleted_by_client = any(
                d.kind == "delete" and d.outcome != "fail" and d.token_arg == created
                and d.invoke < op.complete for d in ops)
            if op.token > created and op.complete < lives_until and not deleted_by_client:
                anomalies.append(f"{key}: generation {created} reported gone by p{op.process} "
                                 f"while its bindings lived (until {lives_until:.3f})")
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
