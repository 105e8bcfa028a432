"""Python clients for PaxosKV, synchronous (`Client`) and asyncio (`AsyncClient`).

    from paxoskv.client import Client
    with Client("http://127.0.0.1:7001") as kv:
        entry = kv.put("leader", "pod-a")   # the decided value: maybe another's
        print(entry.value, entry.token)

`no_quorum` follows PaxosKV: "return" (default) gives an Entry whose `error`
is "no_quorum"; "fail" raises NoQuorum; "retry" retries with backoff until a
quorum answers or the timeout passes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

NoQuorumPolicy = Literal["return", "fail", "retry"]
DEFAULT_ENDPOINTS = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")


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
    deleted: bool = False
    error: str | None = None  # "no_quorum" under the "return" policy

    @property
    def ok(self) -> bool:
        return self.error is None


def _body(bucket: str, key: str, policy: NoQuorumPolicy, timeout: float,
          **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "key": key, "no_quorum": policy,
            "timeout_ms": min(max(1, int(timeout * 1000)), 60_000), **extra}


def _entry(response: httpx.Response, bucket: str, key: str,
           policy: NoQuorumPolicy) -> Entry:
    try:
        data = response.json()
    except ValueError:
        raise PaxosKVError("bad_response", f"HTTP {response.status_code}: not JSON",
                           status=response.status_code) from None
    if response.status_code == 200:
        return Entry(data["bucket"], data["key"], data["found"], data["value"], data["token"],
                     data.get("bindings") or {}, bool(data.get("deleted", False)))
    error = data.get("error", {}) if isinstance(data, dict) else {}
    code = error.get("code", "http_error")
    message = error.get("message", response.reason_phrase)
    if code == "no_quorum":
        if policy == "return":
            return Entry(bucket, key, error=code)
        raise NoQuorum(code, message, status=response.status_code)
    raise PaxosKVError(code, message, error.get("field"), response.status_code)


def _unreachable(bucket: str, key: str, policy: NoQuorumPolicy, why: str) -> Entry:
    if policy == "return":
        return Entry(bucket, key, error="no_quorum")
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

    def _attempts(self, policy: NoQuorumPolicy, timeout: float | None) -> _Attempts:
        budget = self.timeout if timeout is None else timeout
        return _Attempts(policy, len(self.endpoints), time.monotonic() + budget)


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

    def put(self, key: str, value: Any, *, bucket: str | None = None,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """Put if absent; returns the decided entry (its value may be another client's)."""
        return self._call("/v1/put", key, bucket, no_quorum, timeout, value=value)

    def get(self, key: str, *, bucket: str | None = None, local: bool = False,
            no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """Read a key (linearizable unless `local=True`)."""
        consistency = "local" if local else "linearizable"
        return self._call("/v1/get", key, bucket, no_quorum, timeout, consistency=consistency)

    def delete(self, key: str, token: int, *, bucket: str | None = None,
               no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None) -> Entry:
        """End the key's generation `token`; `entry.deleted` says whether it ended."""
        return self._call("/v1/delete", key, bucket, no_quorum, timeout, token=token)

    def status(self) -> dict[str, Any]:
        response = self._http.get(self._url("/v1/status"), timeout=self.timeout)
        return dict(response.json())

    def _call(self, path: str, key: str, bucket: str | None, no_quorum: NoQuorumPolicy | None,
              timeout: float | None, **extra: Any) -> Entry:
        bucket = bucket or self.bucket
        policy = no_quorum or self.no_quorum
        attempts = self._attempts(policy, timeout)
        while True:
            remaining = attempts.remaining()
            try:
                response = self._http.post(self._url(path),
                                           json=_body(bucket, key, policy, remaining, **extra),
                                           timeout=remaining + 1.0)
                return _entry(response, bucket, key, policy)
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed()
                if pause is None:
                    return _unreachable(bucket, key, policy, str(exc) or type(exc).__name__)
                time.sleep(pause)


class AsyncClient(_Base):
    """The asyncio client: the same calls, awaited."""

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

    async def put(self, key: str, value: Any, *, bucket: str | None = None,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> Entry:
        return await self._call("/v1/put", key, bucket, no_quorum, timeout, value=value)

    async def get(self, key: str, *, bucket: str | None = None, local: bool = False,
                  no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                  ) -> Entry:
        consistency = "local" if local else "linearizable"
        return await self._call("/v1/get", key, bucket, no_quorum, timeout,
                                consistency=consistency)

    async def delete(self, key: str, token: int, *, bucket: str | None = None,
                     no_quorum: NoQuorumPolicy | None = None, timeout: float | None = None
                     ) -> Entry:
        return await self._call("/v1/delete", key, bucket, no_quorum, timeout, token=token)

    async def _call(self, path: str, key: str, bucket: str | None,
                    no_quorum: NoQuorumPolicy | None, timeout: float | None, **extra: Any
                    ) -> Entry:
        bucket = bucket or self.bucket
        policy = no_quorum or self.no_quorum
        attempts = self._attempts(policy, timeout)
        while True:
            remaining = attempts.remaining()
            try:
                response = await self._http.post(
                    self._url(path), json=_body(bucket, key, policy, remaining, **extra),
                    timeout=remaining + 1.0)
                return _entry(response, bucket, key, policy)
            except httpx.TransportError as exc:
                self._rotate()
                pause = attempts.failed()
                if pause is None:
                    return _unreachable(bucket, key, policy, str(exc) or type(exc).__name__)
                await asyncio.sleep(pause)
