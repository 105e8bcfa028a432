"""Python clients for PaxosKV, synchronous (`Client`) and asyncio (`AsyncClient`).

    from paxoskv.client import Client
    with Client("http://127.0.0.1:7001") as kv:
        entry = kv.put("leader", "pod-a")   # the decided value: maybe another's
        print(entry.value, entry.token)
        with kv.session(ttl=10) as s:       # kept alive in the background
            kv.put("lock", "me", session=s.id)   # gone when the session ends

`no_quorum` follows PaxosKV: "return" (default) gives an Entry whose `error`
is "no_quorum"; "fail" raises NoQuorum; "retry" retries with backoff until a
quorum answers or the timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

NoQuorumPolicy = Literal["return", "fail", "retry"]
DEFAULT_ENDPOINTS = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")
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
    """No quorum answered (or no node could be reached) in time."""


@dataclass(frozen=True)
class Entry:
    """A key's state as decided by the cluster."""

    bucket: str
    key: str
    found: bool = False
    value: Any = None
    token: int = 0
    bindings: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False  # delete: the named generation has ended
    changed: bool = False  # watch: the token differs from the one watched
    error: str | None = None  # "no_quorum" under the "return" policy

    @property
    def ok(self) -> bool:
        return self.error is None


def bindings(until: int | None = None, parent: str | None = None,
             session: str | None = None, node: str | None = None) -> dict[str, Any]:
    """The bindings of a put: a deadline (ms since the epoch), a parent key, a session,
    a node."""
    chosen = {"until": until, "key": parent, "pid": session, "node": node}
    return {name: value for name, value in chosen.items() if value is not None}


def _timeout_ms(seconds: float) -> int:
    return min(max(1, int(seconds * 1000)), int(MAX_TIMEOUT * 1000))


def _json(response: httpx.Response, policy: NoQuorumPolicy) -> dict[str, Any] | None:
    """The body of a success; None for no_quorum under "return"; raises otherwise."""
    try:
        data = response.json()
    except ValueError:
        raise PaxosKVError("bad_response", f"HTTP {response.status_code}: not JSON",
                           status=response.status_code) from None
    if response.status_code == 200:
        return dict(data)
    error = data.get("error", {}) if isinstance(data, dict) else {}
    code = error.get("code", "http_error")
    message = error.get("message", response.reason_phrase)
    if code == "no_quorum":
        if policy == "return":
            return None
        raise NoQuorum(code, message, status=response.status_code)
    raise PaxosKVError(code, message, error.get("field"), response.status_code)


def _entry(data: dict[str, Any] | None, bucket: str, key: str) -> Entry:
    if data is None:
        return Entry(bucket, key, error="no_quorum")
    return Entry(data["bucket"], data["key"], data["found"], data["value"], data["token"],
                 data.get("bindings") or {}, bool(data.get("deleted", False)),
                 bool(data.get("changed", False)))


def _bound(data: dict[str, Any] | None, name: str, default: str | None) -> str | None:
    """The binding `name` from a pid/node lookup, or `default` when absent."""
    return default if data is None or not data["found"] else str(data[name])


def _unreachable(policy: NoQuorumPolicy, why: str) -> None:
    if policy != "return":
        raise NoQuorum("no_quorum", f"no node answered: {why}")


@dataclass
class _Attempts:
    """When to move on to the next endpoint after a connection failure, and when to stop."""

    policy: NoQuorumPolicy
    endpoints: int
    deadline: float
    failures: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self) -> float | None:
        """Count a failure: the pause before the next try, or None to give up."""
        self.failures += 1
        out_of_nodes = self.policy != "retry" and self.failures >= self.endpoints
        if out_of_nodes or self.remaining() <= 0.05:
            return None
        return min(0.05 * self.failures, 0.5)


class _Base:
    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, *,
                 bucket: str = "default", no_quorum: NoQuorumPolicy = "return",
                 timeout: float = 5.0) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        self.bucket = bucket
        self.no_quorum = no_quorum
        self.timeout = timeout
        self._current = random.randrange(len(self.endpoints))

    def _url(self, path: str) -> str:
        return self.endpoints[self._current].rstrip("/") + path

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    def _plan(self, no_quorum: NoQuorumPolicy | None, timeout: float | None
              ) -> tuple[NoQuorumPolicy, _Attempts]:
        policy = no_quorum or self.no_quorum
        budget = self.timeout if timeout is None else timeout
        return policy, _Attempts(policy, len(self.endpoints), time.monotonic() + budget)


class Client(_Base):
    """A synchronous client. Connection failures move on to the next endpoint."""

    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, **options: Any
                 ) -> None:
        super().__init__(endpoints, **options)
        self._http = httpx.Client()

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
        return self._entry("/v1/get", key, bucket, no_quorum, timeout, consistency=consistency)

    def delete(self, key: str, token: int, *, bucket: str | None = None,
               no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """End the key's generation `token`; `entry.deleted` says whether it ended."""
        return self._entry("/v1/delete", key, bucket, no_quorum, timeout, token=token)

    def watch(self, key: str, token: int, *, timeout: float = 30.0, bucket: str | None = None,
              no_quorum: NoQuorumPolicy | None = None) -> Entry:
        """Wait until the key's fencing token differs from `token` (`entry.changed`),
        or `timeout` seconds (at most 60) pass."""
        return self._entry("/v1/watch", key, bucket, no_quorum, min(timeout, MAX_TIMEOUT),
                           token=token)

    def pid(self, key: str, default: str | None = None, *, bucket: str | None = None,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
            ) -> str | None:
        """The session the key is bound to, or `default` if none (or no key)."""
        data = self._post("/v1/pid", {"bucket": bucket or self.bucket, "key": key},
                          no_quorum, timeout)
        return _bound(data, "pid", default)

    def status(self) -> dict[str, Any]:
        """The contacted node's view of the cluster."""
        response = self._http.get(self._url("/v1/status"), timeout=self.timeout)
        return dict(response.json())

    def node(self, key: str, default: str | None = None, *, bucket: str | None = None,
             no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
             ) -> str | None:
        """The node the key is bound to, or `default` if none (or no key)."""
        data = self._post("/v1/node", {"bucket": bucket or self.bucket, "key": key},
                          no_quorum, timeout)
        return _bound(data, "node", default)

    # -- sessions ----------------------------------------------------------------------

    def session(self, ttl: float = 10.0) -> Session:
        """A session kept alive from a background thread; close it (or leave the `with`
        block) to end every key bound to it."""
        return Session(self, ttl)

    def open_session(self, ttl: float) -> str:
        data = self._post("/v1/session/open", {"ttl_ms": int(ttl * 1000)}, "fail", None)
        assert data is not None
        return str(data["session"])

    def keep_alive(self, session: str) -> int | None:
        """Extend the session by its TTL: its new deadline (ms since the epoch, on the
        answering node's clock); None if it has already ended."""
        try:
            data = self._post("/v1/session/keepalive", {"session": session}, "fail", None)
        except PaxosKVError as exc:
            if exc.code == "not_found":
                return None
            raise
        assert data is not None
        return int(data["until"])

    def close_session(self, session: str) -> bool:
        data = self._post("/v1/session/close", {"session": session}, "fail", None)
        return bool(data and data["closed"])

    # -- transport -----------------------------------------------------------------------

    def _entry(self, path: str, key: str, bucket: str | None,
               no_quorum: NoQuorumPolicy | None, timeout: float | None, **extra: Any) -> Entry:
        bucket = bucket or self.bucket
        data = self._post(path, {"bucket": bucket, "key": key, **extra}, no_quorum, timeout)
        return _entry(data, bucket, key)

    def _post(self, path: str, body: dict[str, Any], no_quorum: NoQuorumPolicy | None,
              timeout: float | None) -> dict[str, Any] | None:
        policy, attempts = self._plan(no_quorum, timeout)
        while True:
            remaining = attempts.remaining()
            try:
                response = self._http.post(
                    self._url(path), timeout=remaining + 1.0,
                    json={**body, "no_quorum": policy, "timeout_ms": _timeout_ms(remaining)})
                return _json(response, policy)
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed()
                if pause is None:
                    _unreachable(policy, str(exc) or type(exc).__name__)
                    return None
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
            entry = self.client.put(self.key, self.value, session=self.session.id,
                                    no_quorum="retry")
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
        entry = self.client.get(self.key, no_quorum="retry")
        if entry.found and entry.bindings.get("pid") == self.session.id:
            self.client.delete(self.key, entry.token, no_quorum="retry")


class AsyncClient(_Base):
    """The asyncio client: the calls of `Client`, awaited."""

    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS, **options: Any
                 ) -> None:
        super().__init__(endpoints, **options)
        self._http = httpx.AsyncClient()

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
        return await self._entry("/v1/get", key, bucket, no_quorum, timeout,
                                 consistency=consistency)

    async def delete(self, key: str, token: int, *, bucket: str | None = None,
                     no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                     ) -> Entry:
        return await self._entry("/v1/delete", key, bucket, no_quorum, timeout, token=token)

    async def watch(self, key: str, token: int, *, timeout: float = 30.0,
                    bucket: str | None = None, no_quorum: NoQuorumPolicy | None = None
                    ) -> Entry:
        return await self._entry("/v1/watch", key, bucket, no_quorum,
                                 min(timeout, MAX_TIMEOUT), token=token)

    async def pid(self, key: str, default: str | None = None, *, bucket: str | None = None,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> str | None:
        data = await self._post("/v1/pid", {"bucket": bucket or self.bucket, "key": key},
                                no_quorum, timeout)
        return _bound(data, "pid", default)

    async def node(self, key: str, default: str | None = None, *, bucket: str | None = None,
                   no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                   ) -> str | None:
        data = await self._post("/v1/node", {"bucket": bucket or self.bucket, "key": key},
                                no_quorum, timeout)
        return _bound(data, "node", default)

    async def session(self, ttl: float = 10.0) -> AsyncSession:
        """A session kept alive by a background task: `async with await kv.session(5) as s`."""
        session_id = await self.open_session(ttl)
        return AsyncSession(self, session_id, ttl)

    async def open_session(self, ttl: float) -> str:
        data = await self._post("/v1/session/open", {"ttl_ms": int(ttl * 1000)}, "fail", None)
        assert data is not None
        return str(data["session"])

    async def keep_alive(self, session: str) -> int | None:
        """As `Client.keep_alive`."""
        try:
            data = await self._post("/v1/session/keepalive", {"session": session}, "fail", None)
        except PaxosKVError as exc:
            if exc.code == "not_found":
                return None
            raise
        assert data is not None
        return int(data["until"])

    async def close_session(self, session: str) -> bool:
        data = await self._post("/v1/session/close", {"session": session}, "fail", None)
        return bool(data and data["closed"])

    async def _entry(self, path: str, key: str, bucket: str | None,
                     no_quorum: NoQuorumPolicy | None, timeout: float | None, **extra: Any
                     ) -> Entry:
        bucket = bucket or self.bucket
        data = await self._post(path, {"bucket": bucket, "key": key, **extra}, no_quorum,
                                timeout)
        return _entry(data, bucket, key)

    async def _post(self, path: str, body: dict[str, Any], no_quorum: NoQuorumPolicy | None,
                    timeout: float | None) -> dict[str, Any] | None:
        policy, attempts = self._plan(no_quorum, timeout)
        while True:
            remaining = attempts.remaining()
            try:
                response = await self._http.post(
                    self._url(path), timeout=remaining + 1.0,
                    json={**body, "no_quorum": policy, "timeout_ms": _timeout_ms(remaining)})
                return _json(response, policy)
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed()
                if pause is None:
                    _unreachable(policy, str(exc) or type(exc).__name__)
                    return None
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
