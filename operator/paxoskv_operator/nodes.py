"""Calls to the cluster's node pods: their identity, and the admin endpoints.

Pods are reached at their pod IPs (the operator's view of a pod, without waiting for
DNS); members' URLs in the configuration are their stable DNS names (manifests.peer_url).
Under TLS the operator trusts the cluster's CA and checks the pod's certificate for the
pod's DNS name, though it connects to the IP.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from .manifests import PORT

IDENTITY_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
# A step answers once settled; adding a member rescans every key through it.
STEP_TIMEOUT = aiohttp.ClientTimeout(total=900.0)
REPORT_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class NodeError(Exception):
    """A node refused a call or could not be reached; the message says which and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # 0: not reached


@dataclass(frozen=True)
class Pod:
    """How to reach one node pod."""

    ip: str
    tls: ssl.SSLContext | None = None  # trusts the cluster's CA
    host: str | None = None  # the name its certificate carries

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.ip}:{PORT}{path}"

    def options(self) -> dict[str, Any]:
        return {} if self.tls is None else {"ssl": self.tls, "server_hostname": self.host}


class Nodes:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def identity(self, pod: Pod) -> dict[str, Any] | None:
        """The pod's /v1/identity answer, or None if it does not answer."""
        try:
            async with self.session.get(pod.url("/v1/identity"), timeout=IDENTITY_TIMEOUT,
                                        **pod.options()) as resp:
                if resp.status != 200:
                    return None
                answer: dict[str, Any] = await resp.json()
                return answer
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None

    async def admin(self, pod: Pod, token: str, path: str, body: dict[str, Any],
                    timeout: aiohttp.ClientTimeout = STEP_TIMEOUT) -> dict[str, Any]:
        """POST an admin call; its JSON answer, or NodeError with the node's reason."""
        ip = pod.ip
        try:
            async with self.session.post(pod.url(path), json=body, timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"},
                                         **pod.options()) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 300:
                    error = answer.get("error", {}) if isinstance(answer, dict) else {}
                    raise NodeError(resp.status, f"{path} at {ip}: {resp.status} "
                                                 f"{error.get('message', answer)}")
                return dict(answer)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise NodeError(0, f"{path} at {ip}: {exc.__class__.__name__} {exc}") from None
