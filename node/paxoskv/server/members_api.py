"""The membership endpoints (admin only): list the members, add, remove, resume.

    GET  /v1/admin/members          epoch, members, reachability, the step in progress
    POST /v1/admin/members/add      {"name", "url"}: add a node started with --join
    POST /v1/admin/members/remove   {"name"}: remove a member (it may be down)
    POST /v1/admin/members/resume   {}: finish a step whose driver stopped

A step runs on the node that got the request (server.membership); it answers
once the step is settled. Refusals are 4xx naming the reason, and change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from paxoskv.core.config import Config, Member
from paxoskv.server import identity as ident
from paxoskv.server import validation as v
from paxoskv.server.api import authorize_admin, json_reply, read_body
from paxoskv.server.membership import Membership, StepRefused

MEMBERSHIP: web.AppKey[Membership] = web.AppKey("membership", Membership)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("members_session",
                                                        aiohttp.ClientSession)
URL = re.compile(r"https?://[^\s/]+(:\d+)?/?")


def install(app: web.Application, membership: Membership,
            session: aiohttp.ClientSession) -> None:
    """Serve the membership endpoints from `app` (create_app's), driven by `membership`."""
    app[MEMBERSHIP] = membership
    app[SESSION] = session
    app.router.add_get("/v1/admin/members", list_members)
    app.router.add_post("/v1/admin/members/add", add_member)
    app.router.add_post("/v1/admin/members/remove", remove_member)
    app.router.add_post("/v1/admin/members/resume", resume_step)


def describe(membership: Membership) -> dict[str, Any]:
    """The configuration as this node holds it, with what it sees of each member."""
    node = membership.node
    config = node.config
    return {
        "epoch": config.epoch, "settled": config.settled, "quorum": config.quorum,
        "members": [{**m.to_json(), "self": m.name == node.name,
                     "reachable": m.name == node.name or (
                         m.name in node.links and node.links[m.name].connected)}
                    for m in config.members],
        "step": None if membership.progress is None else membership.progress.to_json(),
    }


async def list_members(request: web.Request) -> web.Response:
    authorize_admin(request)
    return json_reply(describe(request.app[MEMBERSHIP]))


async def add_member(request: web.Request) -> web.Response:
    authorize_admin(request)
    body = await read_body(request)
    v.only(body, {"name", "url"})
    name = v.node_name(body.get("name"), "name")
    url = body.get("url")
    if not isinstance(url, str) or not URL.fullmatch(url):
        raise v.RequestError("url", "url must be the node's base URL, e.g. "
                             "http://10.0.0.4:7001")
    scheme = request.app[MEMBERSHIP].node.config.members[0].url.split("://", 1)[0]
    if not url.startswith(scheme + "://"):
        # One scheme for every member: TLS is all or nothing (a plain link would
        # carry the cluster's traffic in the clear, to an open peer endpoint).
        raise v.RequestError("url", f"url must be {scheme}:// like every member's")
    member_id = await _joining_member_id(request.app[SESSION], name, url.rstrip("/"))
    return await _run(request, lambda m: m.add(Member(name, url.rstrip("/"), member_id)))


async def remove_member(request: web.Request) -> web.Response:
    authorize_admin(request)
    body = await read_body(request)
    v.only(body, {"name"})
    name = v.node_name(body.get("name"), "name")
    return await _run(request, lambda m: m.remove(name))


async def resume_step(request: web.Request) -> web.Response:
    authorize_admin(request)
    v.only(await read_body(request), set())
    return await _run(request, lambda m: m.resume())


async def _run(request: web.Request,
               step: Callable[[Membership], Awaitable[Config]]) -> web.Response:
    membership = request.app[MEMBERSHIP]
    try:
        config: Config = await step(membership)
    except StepRefused as exc:
        code = {400: "invalid_member", 409: "conflict"}.get(exc.status, "unavailable")
        raise v.RequestError("membership", str(exc), code, exc.status) from None
    return json_reply({**describe(membership), "epoch": config.epoch,
                       "settled": config.settled})


async def _joining_member_id(session: aiohttp.ClientSession, name: str, url: str) -> str:
    """The member id of the node at `url`, which must be waiting to join as `name`."""
    try:
        async with session.get(url + ident.IDENTITY_PATH,
                               timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            answer = await resp.json() if resp.status == 200 else {}
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise v.RequestError("url", f"no node answers at {url} ({exc.__class__.__name__}): "
                             f"start it with --join first", "invalid_member", 400) from None
    if answer.get("state") != "joining":
        raise v.RequestError("url", f"the node at {url} is not waiting to join (it is "
                             f"{answer.get('state', 'not a paxoskv node')}): start it on an "
                             "empty data directory with --join", "invalid_member", 400)
    if answer.get("name") != name:
        raise v.RequestError("name", f"the node at {url} is named {answer.get('name')!r}, "
                             f"not {name!r}", "invalid_member", 400)
    return str(answer["member_id"])
