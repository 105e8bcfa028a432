"""The HTTP application: client API (/v1), peer endpoint, health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from paxoskv import __version__
from paxoskv.core.state import (
    DeleteIf,
    KeyState,
    PutIfAbsent,
    SwapIf,
    public_bindings,
    same_json,
)
from paxoskv.server import auth, listing
from paxoskv.server import identity as ident
from paxoskv.server import validation as v
from paxoskv.server.lifetimes import NODE as NODE_BINDING
from paxoskv.server.lifetimes import SESSION, Lifetimes
from paxoskv.server.liveness import Liveness, source_of
from paxoskv.server.metrics import Metrics
from paxoskv.server.node import Node, NoQuorum
from paxoskv.server.openapi import openapi_document
from paxoskv.server.tls import peer_problem
from paxoskv.server.transport import MAX_FRAME, FrameWriter, MessageFaults

log = logging.getLogger("paxoskv.api")

NODE: web.AppKey[Node] = web.AppKey("node", Node)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
LIFETIMES: web.AppKey[Lifetimes] = web.AppKey("lifetimes", Lifetimes)
LIVENESS: web.AppKey[Liveness] = web.AppKey("liveness", Liveness)
ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)
MESSAGE_FAULTS: web.AppKey[MessageFaults | None] = web.AppKey("message_faults")
PEER_SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("peer_sockets")
IDENTITY: web.AppKey[ident.Identity] = web.AppKey("identity", ident.Identity)
PEER_CERTIFICATES: web.AppKey[bool] = web.AppKey("peer_certificates", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None,
                   ) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_reply({"error": error}, status=status)


# Headers of aiohttp's own error answers that a JSON error keeps (Allow on a 405).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON with a stable code, including aiohttp's own."""
    try:
        return await handler(request)
    except v.RequestError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large",
                              f"request body exceeds {v.MAX_BODY_BYTES} bytes", "body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {400: "invalid_request", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        for name in _KEPT_HEADERS:
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except NoQuorum as exc:
        return error_response(503, "no_quorum", str(exc))
    except Exception:
        log.exception("internal error on %s", request.path)
        return error_response(500, "internal", "internal error; see the node's log")


def entry(target: v.Target, state: KeyState) -> dict[str, Any]:
    return {"bucket": target.bucket, "key": target.key, "found": state.live,
            "value": state.value if state.live else None, "token": state.token,
            "bindings": public_bindings(state) if state.live else {}}


def client_fault(exc: BaseException | None) -> str | None:
    """What was wrong with a request that aiohttp could not parse or read (a malformed
    header, chunk or encoding: the client's fault), on one line; None for other errors."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, HttpProcessingError):
            return " ".join(str(exc.message).split())
        if isinstance(exc, RequestPayloadError):
            return " ".join(str(exc).split())
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; a body that cannot be read (malformed chunks, a
    Content-Encoding it is not in) is a 400 naming the body, not an internal error."""
    # Parsed already by the token check, if tokens are on. (A request whose own
    # mapping is empty is not asked: a miss raises KeyError inside, which is slow.)
    parsed: dict[str, Any] | None = request.get(v.PARSED_BODY) if len(request) else None
    if parsed is not None:
        return parsed
    try:
        raw = await request.read()
    except (HttpProcessingError, RequestPayloadError) as exc:
        raise v.RequestError("body", f"request body could not be read: {client_fault(exc)}"
                             ) from None
    return v.parse_body(raw)


class ServerLog:
    """aiohttp's server logger, except that a request it could not parse (bad client
    input) is one warning line, without a traceback."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _fault(self, exc_info: Any) -> str | None:
        return client_fault(exc_info) if isinstance(exc_info, BaseException) else None

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        fault = self._fault(exc_info)
        if fault is None:
            self._logger.exception(msg, *args, exc_info=exc_info, **kwargs)
        else:
            log.warning("%s: refused a malformed request: %s", msg % args if args else msg,
                        fault)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if self._fault(kwargs.get("exc_info")) is not None:
            kwargs.pop("exc_info")
        self._logger.debug(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def _handler_args() -> dict[str, Any]:
    return {"logger": ServerLog(logging.getLogger("aiohttp.server"))}


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    body = await read_body(request)
    v.only(body, allowed | {"bucket", "key", "no_quorum", "timeout_ms"})
    return body


def _measured(op: str, handler: Handler) -> Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        metrics = request.app[METRICS]
        started = time.perf_counter()
        code = "internal"
        try:
            response = await handler(request)
            code = "ok"
            return response
        except v.RequestError as exc:
            code = exc.code
            raise
        except NoQuorum:
            code = "no_quorum"
            raise
        finally:
            metrics.observe(op, code, time.perf_counter() - started)

    return wrapper


async def put(request: web.Request) -> web.Response:
    body = await _body(request, {"value", "bindings"})
    target = v.target(body)
    value = v.value(body)
    wanted = v.bindings(body)
    node = request.app[NODE]
    bindings = await request.app[LIFETIMES].resolve(target, wanted) if wanted else {}
    change = node.stamped(PutIfAbsent(value, bindings), target.timeout)
    state = await node.change(target.key_id, change, target.timeout,
                              target.no_quorum == "retry")
    return json_reply({**entry(target, state), "created": change.won(state)})


async def _binding(request: web.Request, name: str) -> tuple[v.Target, Any]:
    """A live key's binding `name` (None when the key or the binding is absent)."""
    target = v.target(await _body(request, set()))
    state = await request.app[NODE].read(target.key_id, target.timeout,
                                          target.no_quorum == "retry")
    return target, state.bindings.get(name) if state.live else None


async def pid(request: web.Request) -> web.Response:
    """The session a key is bound to (PaxosKV's `pid`)."""
    target, session = await _binding(request, SESSION)
    return json_reply({"bucket": target.bucket, "key": target.key,
                       "found": session is not None, "pid": session})


async def node_binding(request: web.Request) -> web.Response:
    """The node a key is bound to (PaxosKV's `node`)."""
    target, bound = await _binding(request, NODE_BINDING)
    return json_reply({"bucket": target.bucket, "key": target.key, "found": bound is not None,
                       "node": None if bound is None else bound["name"]})


async def report_nodes(request: web.Request) -> web.Response:
    """An external reporter's full view of which nodes are alive (admin only)."""
    authorize_admin(request)
    body = await read_body(request)
    v.only(body, {"source", "nodes", "timeout_ms"})
    source, alive = v.node_report(body)
    _, timeout = v.options(body)
    changes = await request.app[LIVENESS].report(source, alive, timeout)
    return json_reply({"source": source, **changes})


ADMIN_REALM = 'Bearer realm="paxoskv admin"'


def authorize_admin(request: web.Request) -> None:
    """Bearer authentication (RFC 6750): no credentials, or wrong ones, are a 401 with
    WWW-Authenticate; credentials on a node whose admin endpoint is off are a 403."""
    expected = request.app[ADMIN_TOKEN]
    header = request.headers.get("Authorization")
    if not header:
        raise v.RequestError(
            "authorization", "an 'Authorization: Bearer <admin token>' header is required"
            + ("" if expected else " (and this node has no admin token: start it with "
               "--admin-token)"), "unauthorized", 401, {"WWW-Authenticate": ADMIN_REALM})
    if not expected:
        raise v.RequestError("authorization", "the admin endpoint is disabled: start the "
                             "node with --admin-token", "forbidden", 403)
    scheme, _, credentials = header.partition(" ")
    # Bytes: compare_digest refuses str with non-ASCII characters (a client could send).
    given = credentials.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected.encode()):
        raise v.RequestError("authorization", "the admin token is not valid", "unauthorized",
                             401, {"WWW-Authenticate": f'{ADMIN_REALM}, error="invalid_token"'})


async def open_session(request: web.Request) -> web.Response:
    body = await read_body(request)
    v.only(body, {"ttl_ms", "no_quorum", "timeout_ms"})
    ttl = v.ttl_ms(body)
    policy, timeout = v.options(body)
    session, until = await request.app[LIFETIMES].open_session(
        ttl, timeout, policy == "retry", auth.session_owner(request)[0])
    return json_reply({"session": session, "ttl_ms": ttl, "until": until})


async def _session_request(request: web.Request) -> tuple[str, float, bool]:
    """(session id, timeout, retry?) of a keep-alive or close."""
    body = await read_body(request)
    v.only(body, {"session", "no_quorum", "timeout_ms"})
    session = v.session_id(body.get("session"))
    policy, timeout = v.options(body)
    return session, timeout, policy == "retry"


async def keep_alive(request: web.Request) -> web.Response:
    session, timeout, retry = await _session_request(request)
    until = await request.app[LIFETIMES].keep_alive(session, timeout, retry,
                                                   auth.session_owner(request))
    if until is None:
        raise v.RequestError("session", "the session is closed, expired or unknown",
                             "not_found", 404)
    return json_reply({"session": session, "until": until})


async def close_session(request: web.Request) -> web.Response:
    session, timeout, retry = await _session_request(request)
    closed = await request.app[LIFETIMES].close_session(session, timeout, retry,
                                                       auth.session_owner(request))
    return json_reply({"session": session, "closed": closed})


async def watch(request: web.Request) -> web.Response:
    body = await _body(request, {"token"})
    target = v.target(body)
    token = v.watch_token(body)
    state, changed = await request.app[NODE].watch(target.key_id, token, target.timeout)
    return json_reply({**entry(target, state), "changed": changed})


async def get(request: web.Request) -> web.Response:
    body = await _body(request, {"consistency"})
    target = v.target(body)
    node = request.app[NODE]
    if v.consistency(body) == "local":
        state = node.read_local(target.key_id)
    else:
        state = await node.read(target.key_id, target.timeout, target.no_quorum == "retry")
    return json_reply(entry(target, state))


async def list_keys(request: web.Request) -> web.Response:
    """A page of a bucket's live keys by prefix (server.listing says how consistent)."""
    body = await read_body(request)
    v.only(body, {"bucket", "prefix", "after", "limit", "consistency", "no_quorum",
                  "timeout_ms"})
    wanted = v.listing(body)
    policy, timeout = v.options(body)
    page = await listing.list_keys(request.app[NODE], wanted.bucket, wanted.prefix,
                                   wanted.after, wanted.limit, wanted.local, timeout,
                                   policy == "retry")
    return json_reply({
        "bucket": wanted.bucket,
        "entries": [{"key": key, "value": state.value, "token": state.token,
                     "bindings": public_bindings(state)} for key, state in page.entries],
        "next": page.next, "consistency": "local" if wanted.local else "linearizable"})


async def _page_request(request: web.Request, name: Callable[[Any, str], str]
                        ) -> tuple[v.PageRequest, float, bool]:
    """A listing of buckets, sessions or nodes: what it asks for, its timeout, retry?"""
    body = await read_body(request)
    v.only(body, {"after", "limit", "consistency", "no_quorum", "timeout_ms"})
    wanted = v.page(body, name)
    policy, timeout = v.options(body)
    return wanted, timeout, policy == "retry"


def _listed(kind: str, entries: list[dict[str, Any]], page: listing.Page[Any], local: bool
            ) -> web.Response:
    return json_reply({kind: entries, "next": page.next,
                       "consistency": "local" if local else "linearizable"})


async def list_buckets(request: web.Request) -> web.Response:
    """The buckets holding a live key (server.listing says how consistent)."""
    wanted, timeout, retry = await _page_request(request, v.bucket_name)
    page = await listing.list_buckets(request.app[NODE], wanted.after, wanted.limit,
                                      wanted.local, timeout, retry)
    return _listed("buckets", [{"bucket": name, "keys": count} for name, count in page.entries],
                   page, wanted.local)


async def list_sessions(request: web.Request) -> web.Response:
    """The open sessions and the keys bound to them."""
    wanted, timeout, retry = await _page_request(request, v.session_id)
    page = await listing.list_sessions(request.app[NODE], wanted.after, wanted.limit,
                                       wanted.local, timeout, retry,
                                       request.app[LIFETIMES].children)
    return _listed("sessions", [
        {"session": s.id, "ttl_ms": s.state.value.get("ttl_ms"), "until": s.until,
         "remaining_ms": s.remaining_ms,
         "keys": [{"bucket": bucket, "key": key} for bucket, key in s.keys]}
        for s in page.entries], page, wanted.local)


async def list_nodes(request: web.Request) -> web.Response:
    """The node incarnations: every node key, live or ended, with its token."""
    wanted, timeout, retry = await _page_request(request, v.node_name)
    page = await listing.list_nodes(request.app[NODE], wanted.after, wanted.limit,
                                    wanted.local, timeout, retry)
    return _listed("nodes", [{"name": name, "live": state.live, "token": state.token,
                              "source": source_of(state)} for name, state in page.entries],
                   page, wanted.local)


async def delete(request: web.Request) -> web.Response:
    body = await _body(request, {"token"})
    target = v.target(body)
    state, deleted = await delete_key(request.app[NODE], target.key_id,
                                      v.optional_token(body), target.timeout,
                                      target.no_quorum == "retry")
    return json_reply({**entry(target, state), "deleted": deleted})


async def delete_key(node: Node, key: str, token: int | None, timeout: float, retry: bool
                     ) -> tuple[KeyState, bool]:
    """End the key's generation `token` if it is still live (without a token: the live
    one). The key's state afterwards, and whether generation `token` has ended, by this
    delete or before it: so a forwarded, hedged or duplicated run answers as the first
    did (`DeleteIf.ended`)."""
    deadline = node.clock() + timeout
    if token is None:
        # Unconditional: end the generation a linearizable read finds live. Still a
        # conditional change underneath, so a forwarded, hedged or duplicated run of
        # it can never end a generation decided after it (a single "delete whatever
        # is live" change could). If that generation ends meanwhile, the delete is
        # linearized right after its end, on an absent key: nothing more to do.
        live = await node.read(key, timeout, retry)
        if not live.live:
            return live, False
        token = live.token
    remaining = max(deadline - node.clock(), 0.001)
    change = node.stamped(DeleteIf(token), remaining)
    state = await node.change(key, change, remaining, retry)
    deleted = change.ended(state)
    if deleted is None:
        raise _forgotten("delete")
    return state, deleted


def _forgotten(what: str) -> NoQuorum:
    """The answer of a change whose id the key may have forgotten: whether an earlier
    run of it took effect, nothing here can tell."""
    return NoQuorum(f"the {what} may have run before and its id is forgotten: "
                    "the change may or may not have been decided")


async def swap(request: web.Request) -> web.Response:
    body = await _body(request, {"expected", "value", "token"})
    target = v.target(body)
    expected = v.value(body, "expected")
    value = v.value(body)
    token = v.optional_token(body, "to compare the value alone")
    state, swapped = await swap_value(request.app[NODE], target.key_id, expected, value,
                                      token, target.timeout, target.no_quorum == "retry")
    return json_reply({**entry(target, state), "swapped": swapped})


async def swap_value(node: Node, key: str, expected: Any, value: Any, token: int | None,
                     timeout: float, retry: bool) -> tuple[KeyState, bool]:
    """Compare-and-swap: if the key is live with the value `expected` (and the token
    `token`, if given), give it `value` as a new generation keeping its bindings. The
    key's state afterwards, and whether this swap took effect.

    As the unconditional delete: a linearizable read, the comparison here, then a
    change conditional on the generation read (SwapIf), never a "replace if the value
    is X" change, which a forwarded, hedged or duplicated run could apply again after
    A, B, A. SwapIf's id tells whether it took effect whichever run answers, so a
    duplicated run answers as the first did. If the generation moved on first (another
    change won), the state that answered is decided: the swap tries again on it while
    its value is still `expected` and time remains. Keys bound to the key (`key`
    bindings pin its generation) end when a swap decides it anew.
    """
    deadline = node.clock() + timeout
    state = await node.read(key, timeout, retry)
    while state.live and same_json(state.value, expected) and token in (None, state.token):
        remaining = deadline - node.clock()
        if remaining <= 0:
            break
        change = node.stamped(SwapIf(state.token, value), remaining)
        after = await node.change(key, change, remaining, retry)
        swapped = change.swapped(after)
        if swapped is None:
            raise _forgotten("swap")
        if swapped:
            # The generation it created: `after` unless a late run answered with a
            # later state; then as read, with the new value (bindings are kept).
            created = change.token + 1
            return (after if after.token == created else
                    state._replace(token=created, value=value)), True
        state = after
    return state, False


async def status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    members = [{"name": name, "self": name == node.name,
                "connected": name == node.name or node.links[name].connected}
               for name in node.members]
    return json_reply({"name": node.name, "version": __version__, "boot": node.boot,
                              "quorum": node.quorum, "quorate": node.has_quorum(),
                              "members": members, "keys": len(node.acceptor)})


async def healthz(request: web.Request) -> web.Response:
    return json_reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.config.member(node.name) is None:
        return error_response(503, "not_a_member", f"this node was removed from the cluster "
                              f"(configuration epoch {node.config.epoch}); it serves nothing")
    if not node.has_quorum():
        return error_response(503, "no_quorum", f"{node.reachable()} of {len(node.members)} "
                              f"members reachable, {node.quorum} needed")
    if not node.caught_up:
        return error_response(503, "catching_up", "this member joined and the membership "
                              "step that adds it has not finished writing every key "
                              "through it")
    return json_reply({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return json_reply(openapi_document())


async def peer(request: web.Request) -> web.StreamResponse:
    """A peer's connection for its requests to this node's acceptor."""
    node = request.app[NODE]
    sender = request.headers.get("X-PaxosKV-Peer", "")
    problem = request.app[IDENTITY].peer_problem(
        sender, request.headers.get("X-PaxosKV-Cluster", ""),
        request.headers.get("X-PaxosKV-Member", ""))
    if request.app[PEER_CERTIFICATES] and problem is None:
        member = node.config.member(sender)
        problem = peer_problem(request.transport,
                               None if member is None else URL(member.url).host)
    if problem is not None:
        log.warning("refused a peer connection: %s", problem, extra={"peer": sender})
        return error_response(403, "forbidden", problem)
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=2.0)
    await ws.prepare(request)
    request.app[PEER_SOCKETS].add(ws)
    writer = FrameWriter(ws, request.app[MESSAGE_FAULTS])
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            node.serve_frame(sender, orjson.loads(msg.data), writer.send, spawn)
    except ConnectionResetError:
        # The peer went away while we answered its ping (seen when a paused node
        # resumes to a link its peer has already given up): an end like any other.
        log.debug("peer connection reset", extra={"peer": sender})
    finally:
        request.app[PEER_SOCKETS].discard(ws)
        for task in list(tasks):
            task.cancel()
        await writer.close()
    return ws


async def close_peer_sockets(app: web.Application) -> None:
    """On shutdown, end peers' connections instead of waiting for them."""
    sockets: set[web.WebSocketResponse] = app[PEER_SOCKETS]
    for ws in list(sockets):
        await ws.close()


@web.middleware
async def one_request_per_connection(request: web.Request, handler: Handler
                                     ) -> web.StreamResponse:
    """Close each connection after its answer. The identity app serves only until the
    node's own app takes its port, and a connection kept alive past that would go on
    reaching it: a client polling /readyz (or a peer asking who this node is) on a
    pooled connection got the identity app's 404 (or "bootstrapping") for as long as it
    kept polling."""
    response = await handler(request)
    response.force_close()
    return response


# Asked of a joining node by the operator: bootstrap a new cluster of this node alone.
# Takes the member id the caller saw; answers a refusal's reason, or None once started.
BootstrapAlone = Callable[[str], Awaitable[str | None]]


def identity_app(name: str, names: list[str], member_id: str, joining: bool = False,
                 admin_token: str | None = None, bootstrap_alone: BootstrapAlone | None = None
                 ) -> web.Application:
    """What a bootstrapping or joining node serves: its pending identity, for its
    peers (and for the membership driver that adds it); a joining node also takes
    POST /v1/admin/bootstrap {"member_id"} (admin only) to start a cluster alone."""
    async def identity(request: web.Request) -> web.Response:
        return json_reply(ident.describe(name, names, None, member_id, joining=joining))

    async def bootstrap(request: web.Request) -> web.Response:
        authorize_admin(request)
        body = await read_body(request)
        v.only(body, {"member_id"})
        if body.get("member_id") != member_id:
            raise v.RequestError("member_id", f"this node's pending member id is {member_id}, "
                                 f"not {body.get('member_id')!r}: its data directory is not "
                                 "the one you meant", "conflict", 409)
        assert bootstrap_alone is not None
        refused = await bootstrap_alone(member_id)
        if refused is not None:
            raise v.RequestError("member_id", refused, "conflict", 409)
        return json_reply({"name": name, "member_id": member_id, "state": "bootstrapping"},
                          status=202)

    app = web.Application(middlewares=[one_request_per_connection, json_errors],
                          handler_args=_handler_args())
    app[ADMIN_TOKEN] = admin_token or ""
    app.router.add_get(ident.IDENTITY_PATH, identity)
    app.router.add_get("/healthz", healthz)
    if joining and bootstrap_alone is not None:
        app.router.add_post("/v1/admin/bootstrap", bootstrap)
    return app


async def identity_info(request: web.Request) -> web.Response:
    """This member's cluster and member ids, for peers to check (see identity.py)."""
    node, known = request.app[NODE], request.app[IDENTITY]
    return json_reply(ident.describe(node.name, list(node.members), known, None, node.config))


def create_app(node: Node, lifetimes: Lifetimes, liveness: Liveness,
               identity: ident.Identity, admin_token: str | None = None,
               faults: MessageFaults | None = None, tokens: auth.Tokens | None = None,
               peers_need_certificates: bool = False) -> web.Application:
    middlewares = [json_errors] + ([auth.require_token] if tokens is not None else [])
    app = web.Application(middlewares=middlewares, client_max_size=v.MAX_BODY_BYTES,
                          handler_args=_handler_args())
    app[auth.TOKENS] = tokens
    app[PEER_CERTIFICATES] = peers_need_certificates
    app[NODE] = node
    app[LIFETIMES] = lifetimes
    app[LIVENESS] = liveness
    app[ADMIN_TOKEN] = admin_token or ""
    app[MESSAGE_FAULTS] = faults
    app[METRICS] = Metrics(node)
    app[PEER_SOCKETS] = set()
    app[IDENTITY] = identity
    app.on_shutdown.append(close_peer_sockets)
    app.router.add_post("/v1/put", _measured("put", put))
    app.router.add_post("/v1/get", _measured("get", get))
    app.router.add_post("/v1/delete", _measured("delete", delete))
    app.router.add_post("/v1/swap", _measured("swap", swap))
    app.router.add_post("/v1/watch", _measured("watch", watch))
    app.router.add_post("/v1/list", _measured("list", list_keys))
    app.router.add_post("/v1/buckets", _measured("buckets", list_buckets))
    app.router.add_post("/v1/sessions", _measured("sessions", list_sessions))
    app.router.add_post("/v1/nodes", _measured("nodes", list_nodes))
    app.router.add_post("/v1/pid", _measured("pid", pid))
    app.router.add_post("/v1/node", _measured("node", node_binding))
    app.router.add_post("/v1/admin/nodes", _measured("report_nodes", report_nodes))
    app.router.add_post("/v1/session/open", _measured("session_open", open_session))
    app.router.add_post("/v1/session/keepalive", _measured("session_keepalive", keep_alive))
    app.router.add_post("/v1/session/close", _measured("session_close", close_session))
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/peer", peer)
    app.router.add_get(ident.IDENTITY_PATH, identity_info)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
