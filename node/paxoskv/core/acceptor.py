"""The acceptor: one CASPaxos register per key, as a pure state machine.

`handle` returns the reply and, when the register changed, the record to make
durable. The caller must persist that record before the reply leaves the node.

Fencing (core.config, 2): requests carry their proposer's configuration epoch.
The acceptor refuses (`Fenced`) a request older than the newest epoch it knows
for the key: its node's (`epoch`, from the configuration it adopted) or the
key's own (`Record.epoch`, the newest epoch that touched the register). The
key's epoch is written with the promise or accept that raised it, so a member
that promised a rescan's ballot refuses a late accept of the older epoch even
if it has not adopted the new configuration yet, and even after a crash.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple

from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Commit,
    Fenced,
    Inspect,
    Learned,
    Observed,
    Prepare,
    Promise,
    Rejected,
    Reply,
    Request,
    TooEarly,
)
from paxoskv.core.state import EMPTY, KeyState, not_before


class Record(NamedTuple):
    """An acceptor's durable state for one key. `chosen`: a proposer told this
    acceptor that `state` was chosen at `accepted` (so local reads may serve it)."""

    promised: Ballot | None = None
    accepted: Ballot | None = None
    state: KeyState = EMPTY
    chosen: bool = False
    epoch: int = 0  # the newest configuration epoch of a request this register took

    def to_json(self) -> list[Any]:
        return [
            None if self.promised is None else self.promised.to_json(),
            None if self.accepted is None else self.accepted.to_json(),
            self.state.to_json(),
            self.chosen,
            self.epoch,
        ]

    @staticmethod
    def from_json(raw: list[Any]) -> Record:
        # (Records written before commit marks have 3 fields, before epochs 4.)
        return Record(
            None if raw[0] is None else Ballot.from_json(raw[0]),
            None if raw[1] is None else Ballot.from_json(raw[1]),
            KeyState.from_json(raw[2]),
            bool(raw[3]) if len(raw) > 3 else False,
            int(raw[4]) if len(raw) > 4 else 0,
        )


BLANK = Record()

Write = tuple[str, Record]
Mark = tuple[str, Ballot]  # a commit mark: the key's state accepted at the ballot was chosen


def apply_marks(records: dict[str, Record], marks: Iterable[Mark]) -> None:
    """Replay commit marks, as logged on disk, over the records loaded with them. A
    mark counts only while its key's record is still accepted at its ballot: a
    ballot carries one state, and a record accepted at another ballot since then
    has made the mark moot. (A mark is logged only with or after the write of the
    record it marks: see server.lazy_writes.)"""
    for key, ballot in marks:
        rec = records.get(key)
        if rec is not None and rec.accepted == ballot and not rec.chosen:
            records[key] = rec._replace(chosen=True)


# A record as one flat tuple of atoms (`_pack`), which the cyclic garbage
# collector stops tracking at its first pass: a node holds one per key.
# Instances of tuple subclasses (our NamedTuples) are always tracked, and so is
# a tuple that holds any dict or a tuple still tracked; and the collector's pass
# visits a tuple before the tuples it alone holds, so each level of nesting took
# one more pass, in an older generation. Records nested three deep piled up in
# the oldest generation, and its full collections took up to a hundred
# milliseconds (measured under the put benchmark).
Packed = tuple[Any, ...]
# The layout: promised (round, boot, node) or three Nones, accepted likewise,
# then these fields, then the bindings' names and values in turn, then the
# applied runs' fields (4 each).
_PROMISED, _ACCEPTED = 0, 3  # where each ballot's three fields start
_CHOSEN, _EPOCH, _TOKEN, _LIVE, _VALUE, _HORIZON, _BINDINGS = range(6, 13)
_FIRST_BINDING = 13
_NO_BALLOT = (None, None, None)
_flat = itertools.chain.from_iterable


def _pack(rec: Record) -> Packed:
    token, live, value, bindings, applied, horizon = rec.state
    return (*(_NO_BALLOT if rec.promised is None else rec.promised),
            *(_NO_BALLOT if rec.accepted is None else rec.accepted),
            rec.chosen, rec.epoch, token, live, value, horizon, len(bindings),
            *(_flat(bindings.items()) if bindings else ()),
            *(applied[0] if len(applied) == 1 else _flat(applied)))


_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__


def _unpack(raw: Packed) -> Record:
    # Every request unpacks its key's record: this is on the hot path.
    end = _FIRST_BINDING + 2 * raw[_BINDINGS]
    names, values = raw[_FIRST_BINDING:end:2], raw[_FIRST_BINDING + 1:end:2]
    bindings = dict(zip(names, values, strict=True)) if names else {}
    runs = len(raw) - end  # (times 4) most often 1: a key's latest put
    applied = (() if not runs else (raw[end:],) if runs == 4
               else tuple([raw[i:i + 4] for i in range(end, len(raw), 4)]))
    state = _tuple(KeyState, (raw[_TOKEN], raw[_LIVE], raw[_VALUE], bindings, applied,
                              raw[_HORIZON]))
    return _tuple(Record, (_ballot(raw, _PROMISED), _ballot(raw, _ACCEPTED), state,
                           raw[_CHOSEN], raw[_EPOCH]))


def _ballot(raw: Packed, at: int) -> Ballot | None:
    return None if raw[at] is None else _tuple(Ballot, raw[at:at + 3])


class Acceptor:
    def __init__(self, records: dict[str, Record] | None = None, epoch: int = 0) -> None:
        self.epoch = epoch  # the epoch of the configuration this acceptor's node adopted
        self._packed: dict[str, Packed] = {k: _pack(r) for k, r in (records or {}).items()}
        # key -> (ballot, state) known chosen, for keys whose record holds a state
        # not (yet) known to be chosen: what a local read serves meanwhile.
        self._last_chosen: dict[str, tuple[Ballot, KeyState]] = {}

    def __len__(self) -> int:
        return len(self._packed)

    @property
    def records(self) -> dict[str, Record]:
        """Every record (a copy: for tests and tools, not the hot path)."""
        return {key: _unpack(raw) for key, raw in self._packed.items()}

    def record(self, key: str) -> Record:
        raw = self._packed.get(key)
        return BLANK if raw is None else _unpack(raw)

    def promised(self, key: str) -> Ballot | None:
        """The key's promised ballot (without unpacking its record)."""
        raw = self._packed.get(key)
        return None if raw is None else _ballot(raw, _PROMISED)

    def all_keys(self) -> list[str]:
        """Every key this acceptor holds a record of (a membership step re-scans them)."""
        return list(self._packed)

    def has_record(self, key: str) -> bool:
        return key in self._packed

    def chosen_state(self, key: str) -> KeyState:
        """The latest state this acceptor knows was chosen (EMPTY, the state every
        key starts in, if it knows none): never one that was merely accepted."""
        rec = self.record(key)
        if rec.chosen:
            return rec.state
        known = self._last_chosen.get(key)
        return EMPTY if known is None else known[1]

    def handle(self, msg: Request, now_ms: int | None = None) -> tuple[Reply, Write | None]:
        """Answer `msg`. `now_ms` is this node's clock, for tombstones that
        claim a deadline has passed (None: accept them unchecked)."""
        if not isinstance(msg, Prepare | Accept | Inspect | Commit):
            raise TypeError(f"not a request: {msg!r}")
        rec = self.record(msg.key)
        fence = max(self.epoch, rec.epoch)
        if msg.epoch < fence:
            return Fenced(msg.key, None if isinstance(msg, Inspect) else msg.ballot, fence), None
        epoch = msg.epoch  # the register's epoch from now on (>= fence)
        match msg:
            case Inspect(key):
                return Observed(key, rec.accepted, rec.state), None
            case Prepare(key, ballot):
                # A repeated prepare of the promised ballot is answered again:
                # only its own proposer uses that ballot.
                if rec.promised is not None and ballot < rec.promised:
                    return Rejected(key, ballot, rec.promised), None
                return self._store(key, Record(ballot, rec.accepted, rec.state, rec.chosen,
                                               epoch),
                                   Promise(key, ballot, rec.accepted, rec.state))
            case Accept(key, ballot, state, next_promise):
                if rec.promised is not None and ballot < rec.promised:
                    return Rejected(key, ballot, rec.promised), None
                deadline = not_before(state)
                if deadline is not None and now_ms is not None and now_ms < deadline:
                    return TooEarly(key, ballot, deadline), None
                promised = ballot if next_promise is None else max(ballot, next_promise)
                if rec.chosen and rec.accepted is not None and rec.accepted != ballot:
                    self._last_chosen[key] = (rec.accepted, rec.state)
                chosen = rec.chosen and rec.accepted == ballot and rec.state == state
                return self._store(key, Record(promised, ballot, state, chosen, epoch),
                                   Accepted(key, ballot))
            case Commit(key, ballot, state):
                return self._commit(key, rec, ballot, state, epoch)
        raise TypeError(f"not a request: {msg!r}")

    def mark_chosen(self, key: str, ballot: Ballot) -> bool:
        """Note that the state this acceptor accepted at `ballot` was chosen (a bare
        commit mark); True if the record changed and should be persisted. The hot
        path of every decision: it works on the packed record, unpacking nothing."""
        raw = self._packed.get(key)
        if raw is None or raw[_ACCEPTED:_ACCEPTED + 3] != ballot:
            return False  # not what this acceptor holds: nothing to mark
        self._last_chosen.pop(key, None)
        if raw[_CHOSEN]:
            return False
        self._packed[key] = (*raw[:_CHOSEN], True, *raw[_CHOSEN + 1:])
        return True

    def _commit(self, key: str, rec: Record, ballot: Ballot, state: KeyState | None,
                epoch: int) -> tuple[Reply, Write | None]:
        reply = Learned(key, ballot)
        if rec.accepted == ballot or state is None:
            return reply, (key, self.record(key)) if self.mark_chosen(key, ballot) else None
        if rec.accepted is None or rec.accepted < ballot:
            # Catch up: adopt the chosen state, as if this acceptor had accepted
            # it at its ballot (a proposal above it carries it or a successor).
            self._last_chosen.pop(key, None)
            promised = ballot if rec.promised is None else max(rec.promised, ballot)
            return reply, self._write(key, Record(promised, ballot, state, True, epoch))
        known = self._last_chosen.get(key)
        if not rec.chosen and (known is None or known[0] < ballot):
            self._last_chosen[key] = (ballot, state)  # older than what we hold
        return reply, None

    def _write(self, key: str, rec: Record) -> Write:
        self._packed[key] = _pack(rec)
        return key, rec

    def _store(self, key: str, rec: Record, reply: Reply) -> tuple[Reply, Write | None]:
        packed = _pack(rec)
        if self._packed.get(key) == packed:
            return reply, None  # a duplicate: nothing new to persist
        self._packed[key] = packed
        return reply, (key, rec)
