"""`paxoskv sidecar`: the store on localhost of an application pod, speaking for that pod.

It listens on 127.0.0.1 only and forwards the data API to the cluster (the endpoints
given, e.g. the client Service; a connection refused or reset before the request was
sent moves on to the next endpoint, nothing else is retried). It knows its pod from the
downward API (POD_NAME, POD_NAMESPACE) and adds the pod's identity to puts:

- `"bindings": {"node": "self"}` binds the key to the pod, by its name: the operator
  reports the pod alive while it is Ready (label it `paxoskv.io/cluster: <cluster>`);
- `"bindings": {"pid": "self"}` binds it to a session the sidecar keeps alive for the
  pod and closes on SIGTERM (so its keys end as the pod stops, not a TTL later).

It cannot be used to speak for another pod: a `node` or `pid` binding naming anything
but this pod (or "self") is refused with 403, and so are the session and admin
endpoints (the pod's session is the sidecar's). GET /v1/sidecar says who it speaks for;
/readyz answers 200 while its session lives.

With a cluster that serves TLS and needs tokens, the sidecar holds the CA and the token
(`--cacert`, `--auth-token`, or $PAXOSKV_CACERT and $PAXOSKV_AUTH_TOKEN from the
cluster's Secrets): the application speaks plain HTTP to localhost and needs neither.
Every request goes out with the sidecar's token, whatever the application sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from paxoskv.client import AsyncClient, AsyncSession, PaxosKVError, tls_context

log = logging.getLogger("paxoskv.sidecar")

SELF = "self"
FORWARDED = ("/v1/put", "/v1/get", "/v1/delete", "/v1/swap", "/v1/watch", "/v1/list",
             "/v1/pid", "/v1/node")
REFUSED_PREFIXES = ("/v1/session/", "/v1/admin/")
# Long enough for a watch's long poll (the server caps it at 60 s).
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=75, connect=2)


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str


def error(status: int, field: str, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "field": field, "message": message}},
                             status=status, dumps=lambda d: orjson.dumps(d).decode())


class Sidecar:
    def __init__(self, pod: Pod, endpoints: Sequence[str], session_ttl: float,
                 security: dict[str, str] | None = None) -> None:
        """`security`: the client options auth_token, cafile, certfile, keyfile."""
        self.pod = pod
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.session_ttl = session_ttl
        self.security = security or {}
        token = self.security.get("auth_token")
        self._auth = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.session: AsyncSession | None = None
        self._next = 0  # the endpoint to try first: the last that answered
        self._http: aiohttp.ClientSession | None = None
        self._client: AsyncClient | None = None

    # -- the pod's session -----------------------------------------------------------------

    async def start(self) -> None:
        tls = tls_context(self.security.get("cafile"), self.security.get("certfile"),
                          self.security.get("keyfile"))
        self._http = aiohttp.ClientSession(
            timeout=FORWARD_TIMEOUT, connector=aiohttp.TCPConnector(use_dns_cache=False,
                                                                    ssl=tls))
        self._client = AsyncClient(self.endpoints, no_quorum="retry",
                                   **self.security)
        await self._open_session()

    async def _open_session(self) -> None:
        assert self._client is not None
        while True:
            try:
                self.session = await self._client.session(self.session_ttl)
                log.info("session opened for the pod", extra={"node": self.pod.name})
                return
            except PaxosKVError as exc:
                log.warning(f"no session yet: {exc}", extra={"node": self.pod.name})
                await asyncio.sleep(1.0)

    async def watch_session(self) -> None:
        """Open a new session when the pod's ends (it missed its keep-alives): keys bound
        to the old one are gone, as they must be; new puts bind to the new one."""
        while True:
            assert self.session is not None
            await self.session.lost.wait()
            log.warning("the pod's session ended; opening a new one",
                        extra={"node": self.pod.name})
            await self._open_session()

    async def stop(self) -> None:
        if self.session is not None:
            with contextlib.suppress(PaxosKVError, OSError):
                await self.session.close()
            log.info("session closed", extra={"node": self.pod.name})
        if self._client is not None:
            await self._client.close()
        if self._http is not None:
            await self._http.close()

    # -- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/v1/sidecar", self.describe)
        for path in FORWARDED:
            app.router.add_post(path, self.forward)
        for prefix in REFUSED_PREFIXES:
            app.router.add_route("*", prefix + "{rest:.*}", self.refuse)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.session is None or not self.session.alive:
            return error(503, "session", "no_session", "the pod's session is not open")
        return web.json_response({"status": "ready"})

    async def describe(self, request: web.Request) -> web.Response:
        return web.json_response({
            "pod": self.pod.name, "namespace": self.pod.namespace, "node": self.pod.name,
            "session": None if self.session is None else self.session.id,
            "endpoints": self.endpoints})

    async def refuse(self, request: web.Request) -> web.Response:
        return error(403, "path", "forbidden", f"{request.path} is not served by the "
                     "sidecar: it keeps the pod's one session itself (bind keys to it with "
                     f'"pid": "{SELF}") and does not pass admin calls')

    async def forward(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.path == "/v1/put":
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                body = None  # the cluster says what is wrong with it
            if isinstance(body, dict) and isinstance(body.get("bindings"), dict):
                refused = self._speak_for_pod(body["bindings"])
                if refused is not None:
                    return refused
                raw = orjson.dumps(body)
        return await self._send(request.path, raw, request.headers.get("Content-Type"))

    def _speak_for_pod(self, bindings: dict[str, Any]) -> web.Response | None:
        """Fill in the pod's identity, or refuse a binding that names another's."""
        node = bindings.get("node")
        if node is not None:
            if node not in (SELF, self.pod.name):
                return error(403, "bindings.node", "forbidden",
                             f"the sidecar binds keys to its own pod only ({self.pod.name}, "
                             f'or "{SELF}"), not to {node!r}')
            bindings["node"] = self.pod.name
        pid = bindings.get("pid")
        if pid is not None:
            session = self.session
            if pid not in (SELF,) and (session is None or pid != session.id):
                return error(403, "bindings.pid", "forbidden",
                             f'the sidecar binds keys to its pod\'s session only ("{SELF}")')
            if session is None or not session.alive:
                return error(503, "bindings.pid", "no_session",
                             "the pod's session is not open yet")
            bindings["pid"] = session.id
        return None

    async def _send(self, path: str, body: bytes, content_type: str | None) -> web.Response:
        assert self._http is not None
        failures = []
        for attempt in range(len(self.endpoints)):
            index = (self._next + attempt) % len(self.endpoints)
            url = self.endpoints[index] + path
            try:
                async with self._http.post(url, data=body, headers={
                        **self._auth, "Content-Type": content_type or "application/json"}
                        ) as answer:
                    payload = await answer.read()
                    self._next = index
                    return web.Response(body=payload, status=answer.status,
                                        content_type=answer.content_type)
            except aiohttp.ClientConnectorError as exc:  # not sent: safe to try another
                failures.append(f"{self.endpoints[index]}: {exc.os_error}")
            except (aiohttp.ClientError, TimeoutError) as exc:  # maybe sent: not retried
                return error(503, "endpoints", "unreachable",
                             f"{self.endpoints[index]} did not answer ({type(exc).__name__});"
                             " the request may or may not have taken effect")
        return error(503, "endpoints", "unreachable",
                     "no endpoint of the cluster answered: " + "; ".join(failures))


async def serve(pod: Pod, endpoints: Sequence[str], host: str, port: int,
                session_ttl: float, security: dict[str, str] | None = None) -> None:
    sidecar = Sidecar(pod, endpoints, session_ttl, security)
    runner = web.AppRunner(sidecar.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()  # /healthz answers while the session opens
    log.info("sidecar listening", extra={"node": pod.name, "url": f"http://{host}:{port}"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    opening = asyncio.ensure_future(sidecar.start())
    await asyncio.wait([opening, asyncio.ensure_future(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    watcher = None
    if opening.done() and not stop.is_set():
        watcher = asyncio.ensure_future(sidecar.watch_session())
        await stop.wait()
    log.info("stopping: closing the pod's session", extra={"node": pod.name})
    for task in (opening, watcher):
        if task is not None:
            task.cancel()
    await sidecar.stop()
    await runner.cleanup()
