"""The acceptor: one CASPaxos register per key, as a pure state machine.

`handle` returns the reply and, when the register changed, the record to make
durable. The caller must persist that record before the reply leaves the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paxoskv.core.ballot import Ballot
from paxoskv.core.messages import (
    Accept,
    Accepted,
    Inspect,
    Observed,
    Prepare,
    Promise,
    Rejected,
    Reply,
    Request,
)
from paxoskv.core.state import EMPTY, KeyState


@dataclass(frozen=True, slots=True)
class Record:
    promised: Ballot | None = None
    accepted: Ballot | None = None
    state: KeyState = EMPTY

    def to_json(self) -> list[Any]:
        return [
            None if self.promised is None else self.promised.to_json(),
            None if self.accepted is None else self.accepted.to_json(),
            self.state.to_json(),
        ]

    @staticmethod
    def from_json(raw: list[Any]) -> Record:
        return Record(
            None if raw[0] is None else Ballot.from_json(raw[0]),
            None if raw[1] is None else Ballot.from_json(raw[1]),
            KeyState.from_json(raw[2]),
        )


BLANK = Record()

Write = tuple[str, Record]


class Acceptor:
    def __init__(self, records: dict[str, Record] | None = None) -> None:
        self.records: dict[str, Record] = records if records is not None else {}

    def record(self, key: str) -> Record:
        return self.records.get(key, BLANK)

    def has_record(self, key: str) -> bool:
        return key in self.records

    def handle(self, msg: Request) -> tuple[Reply, Write | None]:
        rec = self.record(msg.key)
        match msg:
            case Inspect(key):
                return Observed(key, rec.accepted, rec.state), None
            case Prepare(key, ballot):
                # A repeated prepare of the promised ballot is answered again:
                # only its own proposer uses that ballot.
                if rec.promised is not None and ballot < rec.promised:
                    return Rejected(key, ballot, rec.promised), None
                return self._store(key, Record(ballot, rec.accepted, rec.state),
                                   Promise(key, ballot, rec.accepted, rec.state))
            case Accept(key, ballot, state, next_promise):
                if rec.promised is not None and ballot < rec.promised:
                    return Rejected(key, ballot, rec.promised), None
                promised = ballot if next_promise is None else max(ballot, next_promise)
                return self._store(key, Record(promised, ballot, state), Accepted(key, ballot))
        raise TypeError(f"not a request: {msg!r}")

    def _store(self, key: str, rec: Record, reply: Reply) -> tuple[Reply, Write | None]:
        if self.records.get(key) == rec:
            return reply, None  # a duplicate: nothing new to persist
        self.records[key] = rec
        return reply, (key, rec)
