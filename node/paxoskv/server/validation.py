"""Request validation: limits, and errors that name the offending field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_BODY_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 64 * 1024
# Levels of arrays and objects in a value. The node stores and sends a value inside a few
# levels of its own (a key's record, a peer message), and its JSON encoder stops at 255
# levels; a value deeper than that could be parsed but not stored.
MAX_VALUE_DEPTH = 100
MAX_TIMEOUT_MS = 60_000
MIN_TTL_MS, MAX_TTL_MS = 1_000, 3_600_000
DEFAULT_TIMEOUT_MS = 5_000
BUCKET_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NO_QUORUM_POLICIES = ("return", "fail", "retry")
DEFAULT_BUCKET = "default"  # of a request that names none
PARSED_BODY = "paxoskv.body"  # a request's body once parsed (so it is parsed once)
CONSISTENCY = ("linearizable", "local")


class RequestError(Exception):
    """A client error: `status`, a stable `code`, the `field` at fault."""

    def __init__(self, field: str, message: str, code: str = "invalid_request",
                 status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.status = status
        self.message = message
        self.headers = headers or {}  # e.g. WWW-Authenticate on a 401


@dataclass(frozen=True)
class Target:
    bucket: str
    key: str
    no_quorum: str
    timeout: float  # seconds

    @property
    def key_id(self) -> str:
        # Bucket names cannot contain "/", so this is unambiguous.
        return f"{self.bucket}/{self.key}"


# Integers orjson keeps exact (beyond them it would silently make a float).
MIN_INT, MAX_INT = -(2**63), 2**64 - 1
# A run of 19 or more digits outside a number's fraction or exponent: the only way to
# write an integer out of that range (it may sit in a string; the check below knows).
LONG_INTEGER = re.compile(rb"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")


def parse_body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError("body", f"request body exceeds {MAX_BODY_BYTES} bytes",
                           "too_large", 413)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RequestError("body", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("body", "request body must be a JSON object")
    if LONG_INTEGER.search(raw):
        _refuse_inexact_integers(raw, body)
    return body


def _holds(value: Any, test: Callable[[Any], bool]) -> bool:
    """Whether `test` holds for any number, string or other leaf within `value`."""
    if isinstance(value, dict):
        return any(_holds(v, test) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, test) for v in value)
    return test(value)


def _refuse_inexact_integers(raw: bytes, parsed: Any) -> None:
    """A value must come back exactly as it was put: refuse integers that orjson would
    turn into floats, naming the top-level field that holds one."""
    try:
        if not _holds(parsed, lambda leaf: isinstance(leaf, float)):
            return  # no integer became a float (the digits were in a string: a key
            # with a timestamp in nanoseconds costs no second parse)
        exact = json.loads(raw)  # the standard parser keeps every integer exact
        wrong = next((name for name, value in exact.items() if _holds(value, _inexact)), None)
    except RecursionError:
        raise RequestError("body", "request body is nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise RequestError("body", f"request body is not usable JSON: {exc}") from None
    if wrong is not None:
        raise RequestError(wrong, f"{wrong} holds an integer outside -2^63..2^64-1, which "
                           "would not come back exactly; send it as a string")


def _inexact(leaf: Any) -> bool:
    """An integer that orjson cannot keep exact (booleans are not integers here)."""
    return (isinstance(leaf, int) and not isinstance(leaf, bool)
            and not MIN_INT <= leaf <= MAX_INT)


def integer(raw: Any) -> int | None:
    """`raw` as an integer field reads it, None if it is not one. JSON has one number
    type, and JSON Schema's "integer" (the OpenAPI document's) is any number with no
    fraction: 5000.0 is 5000, as 5000 is. Booleans are not numbers."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return None


def only(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise RequestError(name, f"unknown field {name!r}; expected one of "
                               + ", ".join(sorted(allowed)))


def bucket_name(raw: Any, field: str = "bucket") -> str:
    if not isinstance(raw, str) or not BUCKET_PATTERN.fullmatch(raw):
        raise RequestError(field, f"{field} must be 1-63 characters of letters, digits, "
                           "'_', '.' or '-', starting with a letter or digit")
    return raw


def target(body: dict[str, Any]) -> Target:
    bucket = bucket_name(body.get("bucket", DEFAULT_BUCKET))
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise RequestError("key", "key is required and must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise RequestError("key", f"key exceeds {MAX_KEY_BYTES} bytes (UTF-8)", "too_large", 413)
    policy, timeout = options(body)
    return Target(bucket, key, policy, timeout)


def options(body: dict[str, Any]) -> tuple[str, float]:
    """The request's no_quorum policy and its timeout in seconds."""
    policy = body.get("no_quorum", "return")
    if policy not in NO_QUORUM_POLICIES:
        raise RequestError("no_quorum", "no_quorum must be one of "
                           + ", ".join(NO_QUORUM_POLICIES))
    timeout_ms = integer(body.get("timeout_ms", DEFAULT_TIMEOUT_MS))
    if timeout_ms is None or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        raise RequestError("timeout_ms", f"timeout_ms must be an integer from 1 to "
                           f"{MAX_TIMEOUT_MS}")
    return str(policy), timeout_ms / 1000


def too_deep(raw: Any, limit: int) -> bool:
    """`raw` has more than `limit` levels of arrays and objects (without recursion)."""
    pending: list[tuple[Any, int]] = [(raw, 0)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else None
        if children is None:
            continue
        if level >= limit:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


def value(body: dict[str, Any], name: str = "value") -> Any:
    """The JSON value in field `name` (a put's or a swap's value, a swap's expected)."""
    if name not in body:
        raise RequestError(name, f"{name} is required (any JSON value)")
    if too_deep(body[name], MAX_VALUE_DEPTH):
        raise RequestError(name, f"{name} nests arrays and objects more than "
                           f"{MAX_VALUE_DEPTH} levels deep")
    if len(orjson.dumps(body[name])) > MAX_VALUE_BYTES:
        raise RequestError(name, f"{name} exceeds {MAX_VALUE_BYTES} bytes as JSON",
                           "too_large", 413)
    if body[name] is None:
        raise RequestError(name, f"{name} must not be null")
    return body[name]


BINDINGS = ("until", "key", "pid", "node")
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
SESSION_ID = re.compile(r"[0-9a-f]{32}")


def bindings(body: dict[str, Any]) -> dict[str, Any]:
    """The requested bindings, checked for form (not yet for liveness)."""
    raw = body.get("bindings", {})
    if not isinstance(raw, dict):
        raise RequestError("bindings", "bindings must be a JSON object")
    checked = dict(raw)
    for name, value in raw.items():
        field = f"bindings.{name}"
        if name not in BINDINGS:
            raise RequestError(field, f"unknown binding {name!r}; expected one of "
                               + ", ".join(BINDINGS))
        if name == "until":
            until = integer(value)
            if until is None or not 0 <= until <= MAX_INT:
                raise RequestError(field, "until must be a deadline in milliseconds since "
                                   "the epoch (an integer from 0 to 2^64-1)")
            checked[name] = until
        if name == "key" and (not isinstance(value, str) or not value
                              or len(value.encode()) > MAX_KEY_BYTES):
            raise RequestError(field, f"key must name another key of the same bucket "
                               f"(1-{MAX_KEY_BYTES} bytes)")
        if name == "pid":
            session_id(value, field)
        if name == "node":
            node_name(value, field)
    return checked


def node_report(body: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    source = body.get("source")
    if not isinstance(source, str) or not NODE_NAME.fullmatch(source) or source == "member":
        raise RequestError("source", "source is required: the reporter's name (e.g. "
                           "'operator'; 'member' is the cluster's own)")
    nodes = body.get("nodes")
    if not isinstance(nodes, dict):
        raise RequestError("nodes", "nodes is required: an object mapping every node "
                           "name to true (alive) or false (not alive)")
    for name, alive in nodes.items():
        node_name(name, f"nodes.{name}")
        if not isinstance(alive, bool):
            raise RequestError(f"nodes.{name}", "must be true or false")
    return source, dict(nodes)


def node_name(raw: Any, field: str) -> str:
    if not isinstance(raw, str) or not NODE_NAME.fullmatch(raw):
        raise RequestError(field, "a node name is 1-253 letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit (a member or a pod name)")
    return raw


def session_id(raw: Any, field: str = "session") -> str:
    if not isinstance(raw, str) or not SESSION_ID.fullmatch(raw):
        raise RequestError(field, "a session id is the 32 hex digits that opening a "
                           "session returned")
    return raw


def ttl_ms(body: dict[str, Any]) -> int:
    raw = integer(body.get("ttl_ms"))
    if raw is None or not MIN_TTL_MS <= raw <= MAX_TTL_MS:
        raise RequestError("ttl_ms", f"ttl_ms is required: an integer from {MIN_TTL_MS} to "
                           f"{MAX_TTL_MS}")
    return raw


def dead_binding(field: str, message: str) -> RequestError:
    """A binding that is already dead: the put decides nothing."""
    return RequestError(field, message, "invalid_value", 422)


def watch_token(body: dict[str, Any]) -> int:
    raw = integer(body.get("token", 0))
    if raw is None or not 0 <= raw <= MAX_INT:
        raise RequestError("token", "token must be an integer from 0 to 2^64-1: the fencing "
                           "token the watcher last saw (0 for a key never seen)")
    return raw


def optional_token(body: dict[str, Any], without: str = "to delete whatever generation "
                   "is live") -> int | None:
    """A delete's or a swap's token, if it names one (without one, a delete ends
    whatever is live, a swap compares the value alone)."""
    if "token" not in body:
        return None
    raw = integer(body["token"])
    if raw is None or not 1 <= raw <= MAX_INT:
        raise RequestError("token", "token must be an integer from 1 to 2^64-1 (the fencing "
                           f"token returned by put or get), or left out {without}")
    return raw


MAX_LIST_LIMIT = 1000


@dataclass(frozen=True)
class Listing:
    bucket: str
    prefix: str
    after: str | None
    limit: int
    local: bool


def listing(body: dict[str, Any]) -> Listing:
    bucket = bucket_name(body.get("bucket", DEFAULT_BUCKET))
    prefix = body.get("prefix", "")
    if not isinstance(prefix, str):
        raise RequestError("prefix", "prefix must be a string (keys beginning with it)")
    after = body.get("after")
    if after is not None and (not isinstance(after, str) or not after):
        raise RequestError("after", "after must be a key (the previous page's next), or "
                           "null for the first page")
    for name, text in (("prefix", prefix), ("after", after or "")):
        if len(text.encode()) > MAX_KEY_BYTES:
            raise RequestError(name, f"{name} exceeds {MAX_KEY_BYTES} bytes (UTF-8)",
                               "too_large", 413)
    return Listing(bucket, prefix, after, limit(body), consistency(body) == "local")


def limit(body: dict[str, Any]) -> int:
    raw = integer(body.get("limit", 100))
    if raw is None or not 1 <= raw <= MAX_LIST_LIMIT:
        raise RequestError("limit", f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return raw


@dataclass(frozen=True)
class PageRequest:
    after: str | None
    limit: int
    local: bool


def page(body: dict[str, Any], name: Callable[[Any, str], str]) -> PageRequest:
    """A listing of buckets, sessions or nodes: `after` is checked as a `name` (the
    previous page's next)."""
    after = body.get("after")
    return PageRequest(None if after is None else name(after, "after"), limit(body),
                       consistency(body) == "local")


def consistency(body: dict[str, Any]) -> str:
    raw = body.get("consistency", "linearizable")
    if raw not in CONSISTENCY:
        raise RequestError("consistency", "consistency must be one of " + ", ".join(CONSISTENCY))
    return str(raw)
