"""Schemathesis hooks for tests/test_api_schemathesis.py (loaded by the run it starts, through
SCHEMATHESIS_HOOKS; not a test module).

Each hook replaces one valid value of a generated body by another valid value, and leaves
invalid values (a fraction, a string, out of range, a boolean) as generated: a body the
document allows stays allowed, and one it forbids stays forbidden, so every check keeps its
meaning.

- timeout_ms. A watch whose token is the key's waits `timeout_ms` (default 5 s, at most
  60 s) and then answers `changed: false`, as documented; generated watches would spend the
  run's time waiting, so a watch waits at most WATCH_WAIT_MS. Every other operation answers
  503 no_quorum, as documented, when its round does not finish within `timeout_ms`; a
  generated 1 or 2 ms is shorter than one fsync on a busy machine, so the deadline, not the
  server, would be at fault: those wait at least MIN_WAIT_MS (a healthy cluster answers in
  milliseconds, so a longer deadline costs nothing).
- session. A keep-alive of a well-formed id is sent for the session that the test opened
  ($PAXOSKV_TEST_SESSION), so that it reaches a live session (a random id is a 404), until
  schemathesis, which reuses ids it saw in answers, closes it."""

from __future__ import annotations

import math
import os
from typing import Any

import schemathesis

WATCH_WAIT_MS = 100
MIN_WAIT_MS = 5_000
DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS = 5_000, 60_000
SESSION_ENV = "PAXOSKV_TEST_SESSION"


def valid_timeout(raw: Any) -> bool:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return False
    return math.isfinite(raw) and raw == int(raw) and 1 <= raw <= MAX_TIMEOUT_MS


def valid_session(raw: Any) -> bool:
    return isinstance(raw, str) and len(raw) == 32 and all(c in "0123456789abcdef" for c in raw)


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case[Any],
                kwargs: dict[str, Any]) -> None:
    if not isinstance(case.body, dict):  # every operation with a body has a timeout_ms field
        return
    body: dict[str, Any] = case.body
    path = case.operation.path
    raw: Any = body.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if valid_timeout(raw):
        kind = type(raw)  # 5000.0 stays a float: an integer written as one
        bounded = min(raw, WATCH_WAIT_MS) if path == "/v1/watch" else max(raw, MIN_WAIT_MS)
        body["timeout_ms"] = kind(bounded)
    if path == "/v1/session/keepalive" and valid_session(body.get("session")):
        body["session"] = os.environ[SESSION_ENV]
