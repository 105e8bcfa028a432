"""Python clients for PaxosKV, synchronous (`Client`) and asyncio (`AsyncClient`).

    from paxoskv.client import Client
    with Client("http://127.0.0.1:7001") as kv:
        entry = kv.put("leader", "pod-a")   # the decided value: maybe another's
        print(entry.value, entry.token)
        with kv.session(ttl=10) as s:       # kept alive in the background
            kv.put("lock", "me", session=s.id)   # gone when the session ends

`no_quorum` follows PaxosKV: "return" (default) gives an Entry whose `error`
is "no_quorum" (or "unreachable" when no endpoint answered at all); "fail" raises
NoQuorum (or its subclass Unreachable); "retry" retries with backoff until a quorum
answers or the timeout passes (the node asked retries the change itself; a change of
a key is sent to another endpoint only if it surely did not reach the first, so
that it takes effect at most once). An error Entry has no state: reading its `found`,
`value` or `token` raises the error, so an unreachable cluster never reads as a
missing key. Check `entry.ok` (or `entry.error`) to handle it without an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import httpx

NoQuorumPolicy = Literal["return", "fail", "retry"]
DEFAULT_ENDPOINTS = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")
T = TypeVar("T")
MAX_TIMEOUT = 60.0  # seconds: the server's limit for one request


class PaxosKVError(Exception):
    """An error answered by the cluster, with its stable code and the field at fault."""

    def __init__(self, code: str, message: str, field: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if field is None else
                         f"{code} ({field}): {message}")
        self.code = code
        self.message = message
        self.field = field
        self.status = status


class NoQuorum(PaxosKVError):
    """No quorum answered in time (or, as `Unreachable`, no endpoint at all). For a put,
    a delete or a session change the outcome is unknown (read it back to find out); a read
    changed nothing."""


class Unreachable(NoQuorum):
    """No endpoint answered at all (connection refused, timed out, ...): the message
    names each endpoint tried and why it failed. Its code is "unreachable"."""


_STATE = ("found", "value", "token", "bindings", "deleted", "changed", "created", "swapped")


class Entry:
    """A key's state as decided by the cluster, or an error result.

    Under the "return" policy a request that no quorum answered gives an error result:
    `ok` is False, `error` is "no_quorum" or "unreachable" and `message` says why.
    An error result has no state, so reading `found`, `value`, `token`, `bindings`,
    `deleted`, `changed`, `created` or `swapped` raises the error (NoQuorum or
    Unreachable) instead of answering "not found": check `ok` first to handle it
    without an exception.
    """

    __slots__ = ("_bindings", "_bucket", "_changed", "_created", "_deleted", "_error", "_found",
                 "_key", "_message", "_swapped", "_token", "_value")

    def __init__(self, bucket: str, key: str, found: bool = False, value: Any = None,
                 token: int = 0, bindings: dict[str, Any] | None = None,
                 deleted: bool = False, changed: bool = False, error: str | None = None,
                 message: str = "", created: bool = False, swapped: bool = False) -> None:
        self._bucket = bucket
        self._key = key
        self._found = found
        self._value = value
        self._token = token
        self._bindings = dict(bindings or {})
        self._deleted = deleted  # delete: the named generation has ended
        self._changed = changed  # watch: the token differs from the one watched
        self._created = created  # put: this put decided the live generation (it won)
        self._swapped = swapped  # swap: this swap took effect
        self._error = error
        self._message = message

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key(self) -> str:
        return self._key

    @property
    def error(self) -> str | None:
        """None for an answer; "no_quorum" or "unreachable" for an error result."""
        return self._error

    @property
    def message(self) -> str:
        """Why an error result has no answer ("" for an answer)."""
        return self._message

    @property
    def ok(self) -> bool:
        return self._error is None

    def exception(self) -> NoQuorum | None:
        """The error of an error result, as `no_quorum="fail"` would have raised it."""
        if self._error is None:
            return None
        kind = Unreachable if self._error == "unreachable" else NoQuorum
        return kind(self._error, self._message)

    def _checked(self) -> None:
        error = self.exception()
        if error is not None:
            raise error

    @property
    def found(self) -> bool:
        """Whether the key holds a live value (raises for an error result)."""
        self._checked()
        return self._found

    @property
    def value(self) -> Any:
        """The live value, None if not found (raises for an error result)."""
        self._checked()
        return self._value

    @property
    def token(self) -> int:
        """The fencing token (raises for an error result)."""
        self._checked()
        return self._token

    @property
    def bindings(self) -> dict[str, Any]:
        """The live value's bindings (raises for an error result)."""
        self._checked()
        return self._bindings

    @property
    def deleted(self) -> bool:
        """For a delete: the named generation has ended (raises for an error result)."""
        self._checked()
        return self._deleted

    @property
    def changed(self) -> bool:
        """For a watch: the token differs from the one watched (raises for an error
        result)."""
        self._checked()
        return self._changed

    @property
    def created(self) -> bool:
        """For a put: this put decided the live generation, so it won (False: the key
        already held a value, the one returned). Raises for an error result."""
        self._checked()
        return self._created

    @property
    def swapped(self) -> bool:
        """For a swap: it took effect, and the entry is the generation it decided (False:
        the key was absent or held another value or token, the one returned). Raises for
        an error result."""
        self._checked()
        return self._swapped

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data: the state, or `error` and `message`."""
        head: dict[str, Any] = {"bucket": self._bucket, "key": self._key}
        if self._error is not None:
            return {**head, "error": self._error, "message": self._message}
        return {**head, "found": self._found, "value": self._value, "token": self._token,
                "bindings": self._bindings, "deleted": self._deleted,
                "changed": self._changed, "created": self._created,
                "swapped": self._swapped}

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, "_" + name) for name in ("bucket", "key", *_STATE,
                                                            "error", "message"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._error is not None:
            return (f"Entry(bucket={self._bucket!r}, key={self._key!r}, "
                    f"error={self._error!r}, message={self._message!r})")
        return (f"Entry(bucket={self._bucket!r}, key={self._key!r}, found={self._found!r}, "
                f"value={self._value!r}, token={self._token!r}, "
                f"bindings={self._bindings!r}, deleted={self._deleted!r}, "
                f"changed={self._changed!r}, created={self._created!r}, "
                f"swapped={self._swapped!r})")


def bindings(until: int | None = None, parent: str | None = None,
             session: str | None = None, node: str | None = None) -> dict[str, Any]:
    """The bindings of a put: a deadline (ms since the epoch), a parent key, a session,
    a node."""
    chosen = {"until": until, "key": parent, "pid": session, "node": node}
    return {name: value for name, value in chosen.items() if value is not None}


def _swap_body(expected: Any, value: Any, token: int | None) -> dict[str, Any]:
    return {"expected": expected, "value": value,
            **({} if token is None else {"token": token})}


def check_endpoint(url: str) -> str:
    """`url` if it is a usable http:// or https:// base URL; ValueError naming it if not
    (a missing scheme would otherwise look like an unreachable cluster)."""
    text = url.strip()
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        raise ValueError(f"endpoint {url!r} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        hint = f" (did you mean http://{text}?)" if "://" not in text else ""
        raise ValueError(f"endpoint {url!r} is not an http:// or https:// URL{hint}")
    return text.rstrip("/")


def _timeout_ms(seconds: float) -> int:
    return min(max(1, int(seconds * 1000)), int(MAX_TIMEOUT * 1000))


# The server's no_quorum message ends with this for every request; it is only true of
# requests that change something.
_MAYBE_DECIDED = "; the change may or may not have been decided"


def _no_quorum_message(message: str, changes: bool) -> str:
    message = message.replace(_MAYBE_DECIDED, "")
    if changes:
        return message + _MAYBE_DECIDED + " (read it back to find out)"
    return message + "; a read changes nothing"


def _json(response: httpx.Response, policy: NoQuorumPolicy, changes: bool = True
          ) -> dict[str, Any] | NoQuorum:
    """The body of a success; the NoQuorum error under "return"; raises otherwise."""
    try:
        data = response.json()
    except ValueError:
        raise PaxosKVError("bad_response", f"{response.request.url}: HTTP "
                           f"{response.status_code}, not JSON",
                           status=response.status_code) from None
    if response.status_code == 200:
        return dict(data)
    error = data.get("error", {}) if isinstance(data, dict) else {}
    code = error.get("code", "http_error")
    message = error.get("message", response.reason_phrase)
    if code == "no_quorum":
        no_quorum = NoQuorum(code, _no_quorum_message(message, changes),
                             status=response.status_code)
        if policy == "return":
            return no_quorum
        raise no_quorum
    raise PaxosKVError(code, message, error.get("field"), response.status_code)


def _entry(data: dict[str, Any] | NoQuorum, bucket: str, key: str) -> Entry:
    if isinstance(data, NoQuorum):
        return Entry(bucket, key, error=data.code, message=data.message)
    return Entry(data["bucket"], data["key"], data["found"], data["value"], data["token"],
                 data.get("bindings") or {}, bool(data.get("deleted", False)),
                 bool(data.get("changed", False)), created=bool(data.get("created", False)),
                 swapped=bool(data.get("swapped", False)))


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a listing: entries in order (of keys, bucket names, session ids or node
    names), and `next`, the name to list after for the following page (None: this was
    the last)."""

    entries: list[T]
    next: str | None


@dataclass(frozen=True)
class BucketInfo:
    name: str
    keys: int | None  # its live keys, counted by a local listing only (None otherwise)


@dataclass(frozen=True)
class SessionInfo:
    id: str
    ttl_ms: int
    until: int  # its deadline, ms since the epoch (the clock of its latest keep-alive's node)
    remaining_ms: int  # what remains of it, on the answering node's clock
    keys: list[tuple[str, str]]  # (bucket, key) of the keys bound to it


@dataclass(frozen=True)
class NodeInfo:
    name: str
    live: bool
    token: int  # the incarnation: a node that comes back gets a larger one
    source: str | None  # who keeps it alive: "member" (itself) or a reporter


# Listings other than a bucket's keys: their path, and each entry from its JSON.
_LISTINGS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "buckets": ("/v1/buckets", lambda e: BucketInfo(e["bucket"], e["keys"])),
    "sessions": ("/v1/sessions", lambda e: SessionInfo(
        e["session"], e["ttl_ms"], e["until"], e["remaining_ms"],
        [(k["bucket"], k["key"]) for k in e["keys"]])),
    "nodes": ("/v1/nodes", lambda e: NodeInfo(e["name"], e["live"], e["token"], e["source"])),
}


def _page(data: dict[str, Any] | NoQuorum, kind: str = "entries") -> Page[Any]:
    if isinstance(data, NoQuorum):
        raise data
    if kind == "entries":  # a bucket's keys
        bucket = data["bucket"]
        return Page([Entry(bucket, e["key"], True, e["value"], e["token"], e["bindings"])
                     for e in data["entries"]], data["next"])
    return Page([_LISTINGS[kind][1](e) for e in data[kind]], data["next"])


def _list_body(after: str | None, limit: int, local: bool, **more: Any) -> dict[str, Any]:
    return {**more, "after": after, "limit": limit,
            "consistency": "local" if local else "linearizable"}


def _bound(data: dict[str, Any] | NoQuorum, name: str, default: str | None) -> str | None:
    """The binding `name` from a pid/node lookup, or `default` when absent; raises the
    error of an unanswered lookup (None would read as "not bound")."""
    if isinstance(data, NoQuorum):
        raise data
    return default if not data["found"] else str(data[name])


def _why(exc: httpx.TransportError) -> str:
    """A short reason for a transport failure: "connection refused", "timed out"."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    if text.startswith("[Errno"):
        text = text.partition("] ")[2] or text
    return text[:1].lower() + text[1:]


@dataclass
class _Attempts:
    """When to move on to the next endpoint after a connection failure, and when to stop."""

    policy: NoQuorumPolicy
    endpoints: int
    deadline: float
    budget: float
    failures: int = 0
    reasons: dict[str, str] = field(default_factory=dict)  # endpoint: why it failed
    # Sent at most once past a connection: a change of a key. Sent again, it would be
    # a new request with a new id that no node can tell from the first: a put could
    # make a second generation after its first was deleted, a delete of a generation
    # not made yet could end it after answering "not deleted", a swap that took effect
    # would answer swapped: false. `delivered` once a try may have reached a node.
    once: bool = False
    delivered: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self, url: str, exc: httpx.TransportError) -> float | None:
        """Count a failure of `url`: the pause before the next try, or None to give up."""
        self.failures += 1
        self.reasons[url] = _why(exc)
        if self.once and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            self.delivered = True
            return None
        out_of_nodes = self.policy != "retry" and self.failures >= self.endpoints
        if out_of_nodes or self.remaining() <= 0.05:
            return None
        return min(0.05 * self.failures, 0.5)

    def again(self) -> float | None:
        """After a no_quorum answer under "retry": the pause before the next try (on
        the next endpoint), or None once the deadline has passed."""
        self.failures += 1
        if self.policy != "retry" or self.once or self.remaining() <= 0.05:
            return None
        return min(0.05 * self.failures, 0.5, self.remaining())

    def share(self) -> float:
        """A timeout for one try that leaves time for the endpoints not yet tried (a
        paused node accepts connections but never answers)."""
        untried = max(self.endpoints - self.failures, 1)
        return max(self.remaining() / untried, 0.05)

    def unreachable(self) -> NoQuorum:
        tried = ", ".join(f"{url} ({why})" for url, why in self.reasons.items())
        if self.delivered:
            return NoQuorum("no_quorum", f"no answer: {tried}; the change may or may not "
                            "have been decided, and was not sent again (read the key)")
        retried = (f" in {self.budget:g} s ({self.failures} tries)"
                   if self.failures > len(self.reasons) else "")
        return Unreachable("unreachable", f"no endpoint answered{retried}: {tried}")


def _give_up(policy: NoQuorumPolicy, attempts: _Attempts) -> NoQuorum:
    """No endpoint answered: the Unreachable error (NoQuorum for a request sent once
    that may have reached one), returned under "return"."""
    error = attempts.unreachable()
    if policy == "return":
        return error
    raise error


def _loaded(load: Callable[[], T], path: str | None) -> T:
    try:
        return load()
    except FileNotFoundError as exc:
        raise ValueError(f"{exc.filename or path}: no such file") from None
    except ssl.SSLError as exc:
        raise ValueError(f"{path}: not a usable PEM file ({exc.reason or exc})") from None


def tls_context(cafile: str | None = None, certfile: str | None = None,
                keyfile: str | None = None) -> ssl.SSLContext:
    """A client's TLS context: trusts `cafile` (else the system's CAs), presents a
    client certificate when given one. ValueError names a file that is missing or wrong."""
    context = _loaded(lambda: ssl.create_default_context(cafile=cafile), cafile)
    if certfile is not None:
        _loaded(lambda: context.load_cert_chain(certfile, keyfile), certfile)
    return context


class _Base:
    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, *,
                 bucket: str = "default", no_quorum: NoQuorumPolicy = "return",
                 timeout: float = 5.0, auth_token: str | None = None, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        """`endpoints`: the http:// or https:// URLs of some members (ValueError for
        one that is not such a URL); `timeout`: seconds a call may take (any length:
        longer than the server's 60 s limit, a watch or a retrying call is repeated);
        `auth_token`: a bearer token for a cluster whose data API needs one; `cafile`: the
        CA to trust for https:// endpoints (default: the system's); `certfile` and
        `keyfile`: a client certificate, for a cluster that asks for one."""
        raw = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not raw:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [check_endpoint(url) for url in raw]
        if no_quorum not in ("return", "fail", "retry"):
            raise ValueError(f"no_quorum must be 'return', 'fail' or 'retry', not {no_quorum!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.bucket = bucket
        self.no_quorum = no_quorum
        self.timeout = timeout
        self._current = random.randrange(len(self.endpoints))
        self._headers = ({} if auth_token is None
                         else {"Authorization": f"Bearer {auth_token}"})
        self._tls = tls_context(cafile, certfile, keyfile)

    def _endpoint(self) -> str:
        return self.endpoints[self._current]

    def _url(self, path: str) -> str:
        return self._endpoint() + path

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    def _plan(self, no_quorum: NoQuorumPolicy | None, timeout: float | None,
              once: bool = False) -> tuple[NoQuorumPolicy, _Attempts]:
        policy = no_quorum or self.no_quorum
        budget = self.timeout if timeout is None else timeout
        return policy, _Attempts(policy, len(self.endpoints), time.monotonic() + budget,
                                 budget, once=once)

    def _raising_policy(self, no_quorum: NoQuorumPolicy | None) -> NoQuorumPolicy:
        """For calls with no entry to carry an error (sessions, listings): under "return"
        they fail, raising NoQuorum."""
        return "retry" if (no_quorum or self.no_quorum) == "retry" else "fail"

    def _body(self, body: dict[str, Any], policy: NoQuorumPolicy, remaining: float
              ) -> dict[str, Any]:
        return {**body, "no_quorum": policy, "timeout_ms": _timeout_ms(remaining)}


def _status(response: httpx.Response, url: str) -> dict[str, Any]:
    data = _json(response, "fail")
    assert isinstance(data, dict)
    return {"endpoint": url, **data}


class Client(_Base):
    """A synchronous client. Connection failures move on to the next endpoint."""

    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, **options: Any
                 ) -> None:
        super().__init__(endpoints, **options)
        self._http = httpx.Client(headers=self._headers, verify=self._tls)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- keys ------------------------------------------------------------------------

    def put(self, key: str, value: Any, *, until: int | None = None, parent: str | None = None,
            session: str | None = None, node: str | None = None, bucket: str | None = None,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """Put if absent; returns the decided entry (its value may be another client's).

        The key lives until `until` (ms since the epoch), while the key `parent` of
        the same bucket lives, while `session` lives and while `node` is alive:
        whichever ends first.
        """
        return self._entry("/v1/put", key, bucket, no_quorum, timeout, value=value,
                           bindings=bindings(until, parent, session, node))

    def get(self, key: str, *, bucket: str | None = None, local: bool = False,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """Read a key (linearizable unless `local=True`)."""
        consistency = "local" if local else "linearizable"
        return self._entry("/v1/get", key, bucket, no_quorum, timeout, changes=False,
                           consistency=consistency)

    def delete(self, key: str, token: int | None = None, *, bucket: str | None = None,
               no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """End the key's generation `token` if it is still the live one, or without a
        token whatever generation is live; `entry.deleted` says whether one ended."""
        extra: dict[str, Any] = {} if token is None else {"token": token}
        return self._entry("/v1/delete", key, bucket, no_quorum, timeout, **extra)

    def swap(self, key: str, expected: Any, value: Any, token: int | None = None, *,
             bucket: str | None = None, no_quorum: NoQuorumPolicy | None = None,
             timeout: float | None = None) -> Entry:
        """Compare-and-swap: if the key holds `expected` (and the fencing token `token`,
        if given), give it `value` as a new generation (a larger token) that keeps its
        bindings; `entry.swapped` says whether this swap did. Values compare as JSON
        (1 is not 1.0 or True). Sent again only to endpoints it surely did not reach:
        once it may have reached one, a lost answer is a no_quorum error (the outcome is
        unknown: read the key), never swapped: false for a swap that took effect."""
        return self._entry("/v1/swap", key, bucket, no_quorum, timeout,
                           **_swap_body(expected, value, token))

    def watch(self, key: str, token: int, *, timeout: float = 30.0, bucket: str | None = None,
              no_quorum: NoQuorumPolicy | None = None) -> Entry:
        """Wait until the key's fencing token differs from `token` (`entry.changed`),
        or `timeout` seconds pass (longer than the server's 60 s, the watch is renewed)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            entry = self._entry("/v1/watch", key, bucket, no_quorum,
                                max(min(remaining, MAX_TIMEOUT), 0.001), changes=False,
                                token=token)
            if not entry.ok or entry.changed or deadline - time.monotonic() <= 0.001:
                return entry

    def list_keys(self, prefix: str = "", *, bucket: str | None = None,
                  after: str | None = None, limit: int = 100, local: bool = False,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> Page[Entry]:
        """A page of the bucket's live keys beginning with `prefix`, in key order; pass
        its `next` as `after` for the following page. Linearizable by default (each
        entry read through a quorum; see the server's /v1/list), or this node's chosen
        states (`local`). Without a quorum it raises NoQuorum whatever the policy."""
        data = self._post("/v1/list", _list_body(after, limit, local, prefix=prefix,
                                                 bucket=bucket or self.bucket),
                          self._raising_policy(no_quorum), timeout, changes=False)
        return _page(data)

    def list_buckets(self, *, after: str | None = None, limit: int = 100, local: bool = False,
                     no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                     ) -> Page[BucketInfo]:
        """A page of the buckets holding a live key, by name. Linearizable by default
        (a bucket is listed if one of its keys reads live through a quorum; see the
        server's listing.py), or this node's chosen states (`local`, which also counts
        each bucket's live keys). Without a quorum it raises NoQuorum whatever the
        policy."""
        return self._listing("buckets", after, limit, local, no_quorum, timeout)

    def list_sessions(self, *, after: str | None = None, limit: int = 100,
                      local: bool = False, no_quorum: NoQuorumPolicy | None = None,
                      timeout: float | None = None) -> Page[SessionInfo]:
        """A page of the open sessions, by id: TTL, deadline, what remains of it, and
        the keys bound to each (as the answering node knows them, each read live and
        bound). Consistency and errors as `list_buckets`."""
        return self._listing("sessions", after, limit, local, no_quorum, timeout)

    def list_nodes(self, *, after: str | None = None, limit: int = 100, local: bool = False,
                   no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                   ) -> Page[NodeInfo]:
        """A page of the node incarnations, by node name: every node ever alive, live
        or ended, with its token (the incarnation). Consistency and errors as
        `list_buckets`."""
        return self._listing("nodes", after, limit, local, no_quorum, timeout)

    def _listing(self, kind: str, after: str | None, limit: int, local: bool,
                 no_quorum: NoQuorumPolicy | None, timeout: float | None) -> Page[Any]:
        data = self._post(_LISTINGS[kind][0], _list_body(after, limit, local),
                          self._raising_policy(no_quorum), timeout, changes=False)
        return _page(data, kind)

    def pid(self, key: str, default: str | None = None, *, bucket: str | None = None,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
            ) -> str | None:
        """The session the key is bound to, or `default` if none (or no key). Without
        a quorum it raises NoQuorum whatever the policy: `default` would read as "not
        bound"."""
        data = self._post("/v1/pid", {"bucket": bucket or self.bucket, "key": key},
                          no_quorum, timeout, changes=False)
        return _bound(data, "pid", default)

    def status(self) -> dict[str, Any]:
        """The view of the cluster of the first endpoint that answers (its URL is under
        "endpoint"): a dead endpoint is skipped as in every call; Unreachable (naming
        each endpoint and why) if none answers within the client's timeout."""
        _, attempts = self._plan("fail", None)
        while True:
            url = self._endpoint()
            try:
                response = self._http.get(url + "/v1/status",
                                          timeout=attempts.share())
                return _status(response, url)
            except httpx.TransportError as exc:
                self._rotate()
                if attempts.failed(url, exc) is None:
                    raise attempts.unreachable() from None

    def status_all(self) -> list[dict[str, Any]]:
        """Every endpoint's view of the cluster, in order; an endpoint that does not
        answer (within the client's timeout) has "error" and "message" instead."""
        results = []
        for url in self.endpoints:
            try:
                response = self._http.get(url + "/v1/status", timeout=self.timeout)
                results.append(_status(response, url))
            except httpx.TransportError as exc:
                results.append({"endpoint": url, "error": "unreachable",
                                "message": _why(exc)})
            except PaxosKVError as exc:
                results.append({"endpoint": url, "error": exc.code, "message": exc.message})
        return results

    def node(self, key: str, default: str | None = None, *, bucket: str | None = None,
             no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
             ) -> str | None:
        """The node the key is bound to, or `default` if none (or no key); raises
        NoQuorum as `pid` does."""
        data = self._post("/v1/node", {"bucket": bucket or self.bucket, "key": key},
                          no_quorum, timeout, changes=False)
        return _bound(data, "node", default)

    # -- sessions ----------------------------------------------------------------------

    def session(self, ttl: float = 10.0) -> Session:
        """A session kept alive from a background thread; close it (or leave the `with`
        block) to end every key bound to it."""
        return Session(self, ttl)

    def open_session(self, ttl: float, *, no_quorum: NoQuorumPolicy | None = None) -> str:
        """Open a session; under "retry" (this call's or the client's), without a quorum
        it tries again until the client's timeout, else it raises NoQuorum."""
        data = self._post("/v1/session/open", {"ttl_ms": int(ttl * 1000)},
                          self._raising_policy(no_quorum), None)
        assert isinstance(data, dict)
        return str(data["session"])

    def keep_alive(self, session: str, *, no_quorum: NoQuorumPolicy | None = None
                   ) -> int | None:
        """Extend the session by its TTL: its new deadline (ms since the epoch, on the
        answering node's clock); None if it has already ended."""
        try:
            data = self._post("/v1/session/keepalive", {"session": session},
                              self._raising_policy(no_quorum), None)
        except PaxosKVError as exc:
            if exc.code == "not_found":
                return None
            raise
        assert isinstance(data, dict)
        return int(data["until"])

    def close_session(self, session: str, *, no_quorum: NoQuorumPolicy | None = None
                      ) -> bool:
        data = self._post("/v1/session/close", {"session": session},
                          self._raising_policy(no_quorum), None)
        return isinstance(data, dict) and bool(data["closed"])

    # -- transport -----------------------------------------------------------------------

    def _entry(self, path: str, key: str, bucket: str | None,
               no_quorum: NoQuorumPolicy | None, timeout: float | None,
               changes: bool = True, **extra: Any) -> Entry:
        """A key's call; one that `changes` the key is sent once (see `_Attempts.once`)."""
        bucket = bucket or self.bucket
        data = self._post(path, {"bucket": bucket, "key": key, **extra}, no_quorum, timeout,
                          changes, once=changes)
        return _entry(data, bucket, key)

    def _post(self, path: str, body: dict[str, Any], no_quorum: NoQuorumPolicy | None,
              timeout: float | None, changes: bool = True, once: bool = False
              ) -> dict[str, Any] | NoQuorum:
        """The answer's body; under "return" the NoQuorum (or Unreachable) error instead
        of raising it. `changes`: whether the request may change something (for the
        no_quorum message); `once`: never send it again once it may have reached a node."""
        policy, attempts = self._plan(no_quorum, timeout, once)
        while True:
            url = self._endpoint()
            remaining = attempts.remaining()
            try:
                response = self._http.post(url + path, timeout=remaining + 1.0,
                                           json=self._body(body, policy, remaining))
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed(url, exc)
                if pause is None:
                    return _give_up(policy, attempts)
                time.sleep(pause)
                continue
            try:
                return _json(response, policy, changes)
            except NoQuorum:
                pause = attempts.again()  # "retry" past the server's 60 s limit
                if pause is None:
                    raise
                self._rotate()
                time.sleep(pause)


class Session:
    """A session and the thread that keeps it alive (every third of its TTL)."""

    def __init__(self, client: Client, ttl: float) -> None:
        self.client = client
        self.ttl = ttl
        # When (time.monotonic) the request behind the latest deadline was sent: the
        # session lives at least until renewed_at + ttl.
        self.renewed_at = time.monotonic()
        self.id = client.open_session(ttl)
        self.lost = threading.Event()  # set if a keep-alive found the session ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, daemon=True,
                                        name=f"paxoskv-session-{self.id[:8]}")
        self._thread.start()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """False once the session is closed or lost, or a TTL has passed since the
        latest successful keep-alive (it may have ended without us hearing of it)."""
        fresh = time.monotonic() < self.renewed_at + self.ttl
        return fresh and not self.lost.is_set() and not self._stop.is_set()

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            sent = time.monotonic()
            try:
                if not self.client.keep_alive(self.id):
                    self.lost.set()
                    return
                self.renewed_at = sent
            except PaxosKVError:
                continue  # no quorum now: try again; the TTL is a lower bound
            except httpx.HTTPError:
                continue

    def stop_keep_alive(self) -> None:
        """Stop renewing (the session then ends a TTL after the last keep-alive)."""
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self.stop_keep_alive()
        self.client.close_session(self.id)


class Election:
    """Leader election on one key: the leader is whoever's value the key holds.

        with Client(urls) as kv, kv.session(ttl=5) as s:
            election = Election(kv, "leader", "pod-a", s)
            term = election.campaign()     # blocks until this candidate leads
            ...                            # lead; term.token fences stale leaders
            election.resign()

    Leadership ends when the session ends (closed, or not kept alive for its TTL),
    and the next candidate's watch wakes at once.
    """

    def __init__(self, client: Client, key: str, value: Any, session: Session) -> None:
        self.client = client
        self.key = key
        self.value = value
        self.session = session
        self.term: Entry | None = None  # the entry this candidate won, until it resigns

    def campaign(self, timeout: float | None = None) -> Entry:
        """Block until elected (or raise TimeoutError); returns the leader's entry."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                entry = self.client.put(self.key, self.value, session=self.session.id,
                                        no_quorum="retry")
            except NoQuorum as exc:
                # Its answer lost: put again. The client never resends a change itself,
                # but here a new put is harmless: first write wins, and a put that won
                # before is bound to this candidate's session, which the answer shows.
                # No endpoint at all, or no time left: the caller is told, as before.
                if isinstance(exc, Unreachable) or (
                        deadline is not None and time.monotonic() >= deadline):
                    raise
                continue
            if entry.found and entry.bindings.get("pid") == self.session.id:
                self.term = entry
                return entry
            wait = 30.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"not elected for {self.key!r} in time")
            self.client.watch(self.key, entry.token, timeout=min(wait, 30.0),
                              no_quorum="retry")

    def leader(self) -> Entry:
        return self.client.get(self.key, no_quorum="retry")

    def is_leader(self) -> bool:
        """Whether this candidate leads now: it won a term and has not resigned, its
        session is alive as far as it knows, and a linearizable read finds the key
        still holding its term (so a key deleted by someone else ends it too). False
        also when no quorum answers: leadership that cannot be confirmed is not
        assumed. Writes that must not outlive the term carry its token as a fence."""
        if self.term is None or not self.session.alive:
            return False
        entry = self.client.get(self.key, no_quorum="return")
        return entry.ok and entry.found and entry.token == self.term.token

    def resign(self) -> None:
        """Step down (if leading), so that another candidate is elected at once."""
        self.term = None
        while True:
            entry = self.client.get(self.key, no_quorum="retry")
            if not (entry.found and entry.bindings.get("pid") == self.session.id):
                return
            with contextlib.suppress(NoQuorum):  # its answer lost: read again
                self.client.delete(self.key, entry.token, no_quorum="retry")
                return


class AsyncClient(_Base):
    """The asyncio client: the calls of `Client`, awaited."""

    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, **options: Any
                 ) -> None:
        super().__init__(endpoints, **options)
        self._http = httpx.AsyncClient(headers=self._headers, verify=self._tls)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def put(self, key: str, value: Any, *, until: int | None = None,
                  parent: str | None = None, session: str | None = None,
                  node: str | None = None, bucket: str | None = None,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> Entry:
        return await self._entry("/v1/put", key, bucket, no_quorum, timeout, value=value,
                                 bindings=bindings(until, parent, session, node))

    async def get(self, key: str, *, bucket: str | None = None, local: bool = False,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> Entry:
        consistency = "local" if local else "linearizable"
        return await self._entry("/v1/get", key, bucket, no_quorum, timeout, changes=False,
                                 consistency=consistency)

    async def delete(self, key: str, token: int | None = None, *, bucket: str | None = None,
                     no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                     ) -> Entry:
        extra: dict[str, Any] = {} if token is None else {"token": token}
        return await self._entry("/v1/delete", key, bucket, no_quorum, timeout, **extra)

    async def swap(self, key: str, expected: Any, value: Any, token: int | None = None, *,
                   bucket: str | None = None, no_quorum: NoQuorumPolicy | None = None,
                   timeout: float | None = None) -> Entry:
        """As `Client.swap`."""
        return await self._entry("/v1/swap", key, bucket, no_quorum, timeout,
                                 **_swap_body(expected, value, token))

    async def watch(self, key: str, token: int, *, timeout: float = 30.0,
                    bucket: str | None = None, no_quorum: NoQuorumPolicy | None = None
                    ) -> Entry:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            entry = await self._entry("/v1/watch", key, bucket, no_quorum,
                                      max(min(remaining, MAX_TIMEOUT), 0.001), changes=False,
                                      token=token)
            if not entry.ok or entry.changed or deadline - time.monotonic() <= 0.001:
                return entry

    async def list_keys(self, prefix: str = "", *, bucket: str | None = None,
                        after: str | None = None, limit: int = 100, local: bool = False,
                        no_quorum: NoQuorumPolicy | None = None,
                        timeout: float | None = None) -> Page[Entry]:
        """As `Client.list_keys`."""
        data = await self._post("/v1/list", _list_body(after, limit, local, prefix=prefix,
                                                       bucket=bucket or self.bucket),
                                self._raising_policy(no_quorum), timeout, changes=False)
        return _page(data)

    async def list_buckets(self, *, after: str | None = None, limit: int = 100,
                           local: bool = False, no_quorum: NoQuorumPolicy | None = None,
                           timeout: float | None = None) -> Page[BucketInfo]:
        """As `Client.list_buckets`."""
        return await self._listing("buckets", after, limit, local, no_quorum, timeout)

    async def list_sessions(self, *, after: str | None = None, limit: int = 100,
                            local: bool = False, no_quorum: NoQuorumPolicy | None = None,
                            timeout: float | None = None) -> Page[SessionInfo]:
        """As `Client.list_sessions`."""
        return await self._listing("sessions", after, limit, local, no_quorum, timeout)

    async def list_nodes(self, *, after: str | None = None, limit: int = 100,
                         local: bool = False, no_quorum: NoQuorumPolicy | None = None,
                         timeout: float | None = None) -> Page[NodeInfo]:
        """As `Client.list_nodes`."""
        return await self._listing("nodes", after, limit, local, no_quorum, timeout)

    async def _listing(self, kind: str, after: str | None, limit: int, local: bool,
                       no_quorum: NoQuorumPolicy | None, timeout: float | None
                       ) -> Page[Any]:
        data = await self._post(_LISTINGS[kind][0], _list_body(after, limit, local),
                                self._raising_policy(no_quorum), timeout, changes=False)
        return _page(data, kind)

    async def pid(self, key: str, default: str | None = None, *, bucket: str | None = None,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> str | None:
        data = await self._post("/v1/pid", {"bucket": bucket or self.bucket, "key": key},
                                no_quorum, timeout, changes=False)
        return _bound(data, "pid", default)

    async def node(self, key: str, default: str | None = None, *, bucket: str | None = None,
                   no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                   ) -> str | None:
        data = await self._post("/v1/node", {"bucket": bucket or self.bucket, "key": key},
                                no_quorum, timeout, changes=False)
        return _bound(data, "node", default)

    async def status(self) -> dict[str, Any]:
        """As `Client.status`."""
        _, attempts = self._plan("fail", None)
        while True:
            url = self._endpoint()
            try:
                response = await self._http.get(url + "/v1/status", timeout=attempts.share())
                return _status(response, url)
            except httpx.TransportError as exc:
                self._rotate()
                if attempts.failed(url, exc) is None:
                    raise attempts.unreachable() from None

    async def status_all(self) -> list[dict[str, Any]]:
        """As `Client.status_all`, asking every endpoint at once."""
        async def one(url: str) -> dict[str, Any]:
            try:
                response = await self._http.get(url + "/v1/status", timeout=self.timeout)
                return _status(response, url)
            except httpx.TransportError as exc:
                return {"endpoint": url, "error": "unreachable", "message": _why(exc)}
            except PaxosKVError as exc:
                return {"endpoint": url, "error": exc.code, "message": exc.message}

        return list(await asyncio.gather(*(one(url) for url in self.endpoints)))

    async def session(self, ttl: float = 10.0) -> AsyncSession:
        """A session kept alive by a background task: `async with await kv.session(5) as s`."""
        session_id = await self.open_session(ttl)
        return AsyncSession(self, session_id, ttl)

    async def open_session(self, ttl: float, *, no_quorum: NoQuorumPolicy | None = None
                           ) -> str:
        """As `Client.open_session`."""
        data = await self._post("/v1/session/open", {"ttl_ms": int(ttl * 1000)},
                                self._raising_policy(no_quorum), None)
        assert isinstance(data, dict)
        return str(data["session"])

    async def keep_alive(self, session: str, *, no_quorum: NoQuorumPolicy | None = None
                         ) -> int | None:
        """As `Client.keep_alive`."""
        try:
            data = await self._post("/v1/session/keepalive", {"session": session},
                                    self._raising_policy(no_quorum), None)
        except PaxosKVError as exc:
            if exc.code == "not_found":
                return None
            raise
        assert isinstance(data, dict)
        return int(data["until"])

    async def close_session(self, session: str, *, no_quorum: NoQuorumPolicy | None = None
                            ) -> bool:
        data = await self._post("/v1/session/close", {"session": session},
                                self._raising_policy(no_quorum), None)
        return isinstance(data, dict) and bool(data["closed"])

    async def _entry(self, path: str, key: str, bucket: str | None,
                     no_quorum: NoQuorumPolicy | None, timeout: float | None,
                     changes: bool = True, **extra: Any) -> Entry:
        """As `Client._entry`."""
        bucket = bucket or self.bucket
        data = await self._post(path, {"bucket": bucket, "key": key, **extra}, no_quorum,
                                timeout, changes, once=changes)
        return _entry(data, bucket, key)

    async def _post(self, path: str, body: dict[str, Any], no_quorum: NoQuorumPolicy | None,
                    timeout: float | None, changes: bool = True, once: bool = False
                    ) -> dict[str, Any] | NoQuorum:
        """As `Client._post`."""
        policy, attempts = self._plan(no_quorum, timeout, once)
        while True:
            url = self._endpoint()
            remaining = attempts.remaining()
            try:
                response = await self._http.post(url + path, timeout=remaining + 1.0,
                                                 json=self._body(body, policy, remaining))
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed(url, exc)
                if pause is None:
                    return _give_up(policy, attempts)
                await asyncio.sleep(pause)
                continue
            try:
                return _json(response, policy, changes)
            except NoQuorum:
                pause = attempts.again()
                if pause is None:
                    raise
                self._rotate()
                await asyncio.sleep(pause)


class AsyncSession:
    """The asyncio form of `Session`: a task keeps it alive every third of its TTL."""

    def __init__(self, client: AsyncClient, session_id: str, ttl: float) -> None:
        self.client = client
        self.id = session_id
        self.ttl = ttl
        self.renewed_at = time.monotonic()
        self.lost = asyncio.Event()
        self._task = asyncio.create_task(self._keep_alive())

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def alive(self) -> bool:
        fresh = time.monotonic() < self.renewed_at + self.ttl
        return fresh and not self.lost.is_set() and not self._task.done()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            sent = time.monotonic()
            try:
                if not await self.client.keep_alive(self.id):
                    self.lost.set()
                    return
                self.renewed_at = sent
            except (PaxosKVError, httpx.HTTPError):
                continue  # no quorum now: try again; the TTL is a lower bound

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close_session(self.id)
