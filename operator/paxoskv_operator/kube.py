"""A thin Kubernetes API client for the operator's own calls (kopf makes the watches).

It logs in the way kopf does (kopf.ConnectionInfo: a service account in a pod, else the
kubeconfig) and speaks JSON over aiohttp; resources are plain dicts, addressed by paths
that `path()` builds. Only what the operator needs: get, select (list by labels), create,
patch, delete.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf

log = logging.getLogger("paxoskv.operator.kube")

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """The API server refused a request; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def path(api_version: str, plural: str, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of a collection or an object, e.g. ("apps/v1", "statefulsets", ns, n)."""
    parts = ["api" if "/" not in api_version else "apis", api_version]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/" + "/".join(parts)


class Kube:
    """The API server, as one aiohttp session made from kopf's connection info."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "paxoskv-operator"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        self.server = info.server.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()), headers=headers,
            timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, url: str, body: Any = None,
                      content_type: str | None = None, **params: str) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        async with self.session.request(method, self.server + url, json=body, params=params,
                                        headers=headers) as resp:
            answer = await resp.json(content_type=None)
            if resp.status >= 400:
                message = answer.get("message") if isinstance(answer, dict) else None
                raise KubeError(resp.status, f"{method} {url}: {resp.status} {message or answer}")
            return answer

    async def get(self, url: str) -> dict[str, Any] | None:
        """The object at `url`, or None if there is none."""
        try:
            answer: dict[str, Any] = await self.request("GET", url)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return answer

    async def select(self, url: str, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        answer = await self.request("GET", url, **params)
        return list(answer.get("items", []))

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", url, body)
        return answer

    async def patch(self, url: str, body: dict[str, Any] | list[dict[str, Any]],
                    kind: str = MERGE) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("PATCH", url, body, kind)
        return answer

    async def delete(self, url: str) -> bool:
        """Delete the object at `url`; False if it was already gone."""
        try:
            await self.request("DELETE", url)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def has_api(self, group_version: str) -> bool:
        """Whether the server serves `group_version` (e.g. "policy/v1")."""
        return await self.get("/apis/" + group_version) is not None
