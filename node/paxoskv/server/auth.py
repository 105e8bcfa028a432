"""Bearer tokens for the data API, with read and write scopes per bucket.

The tokens file (TOML, `--auth-file`, reloaded when it changes) lists one table
per token:

    [[token]]
    name = "orders"                 # shown in logs and errors, never the secret
    sha256 = "9f86d081884c7d65..."  # hex SHA-256 of the token (or: token = "...")
    read = ["orders", "config"]     # buckets it may read: names, "prefix*", or "*"
    write = ["orders"]              # buckets it may change (and so read)

What each request needs:
- put, delete, swap: write on the key's bucket (their answers show the value, so
  write includes read);
- get, watch, list, pid, node: read on the bucket;
- listings across buckets (buckets, sessions, nodes): read on every bucket ("*");
- sessions: opening one takes any valid token, and the session records the token's
  name as its owner; keeping it alive or closing it takes the owner's token, or one
  that may write every bucket ("*"): a session id is no secret (a key's `pid` shows
  it to its readers), and closing a session ends every key bound to it. Binding a
  key to a session is a put, checked as one.
The admin token (`--admin-token`) is separate: it is not a data token, and no data
token opens /v1/admin or /v1/members. Health, readiness, metrics, status and the
OpenAPI document stay open, as etcd's /health and /metrics do.

Without TLS a token crosses the network in the clear, and the peer endpoint takes
any caller: tokens alone guard against mistakes, not attackers (see tls.py).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from paxoskv.server import validation as v
from paxoskv.server.tls import FilesWatch

READ, WRITE, ANY, ALL_BUCKETS = "read", "write", "any", "*"
# Data routes and the scope each needs; the others are open or admin-only.
SCOPES = {"/v1/put": WRITE, "/v1/delete": WRITE, "/v1/swap": WRITE,
          "/v1/get": READ, "/v1/watch": READ, "/v1/list": READ, "/v1/pid": READ,
          "/v1/node": READ, "/v1/buckets": ALL_BUCKETS, "/v1/sessions": ALL_BUCKETS,
          "/v1/nodes": ALL_BUCKETS, "/v1/session/open": ANY,
          "/v1/session/keepalive": ANY, "/v1/session/close": ANY}
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
PATTERN = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\*?")


@dataclass(frozen=True)
class Grant:
    name: str
    read: tuple[str, ...]
    write: tuple[str, ...]

    @property
    def writes_everything(self) -> bool:
        return ALL_BUCKETS in self.write

    def may(self, scope: str, bucket: str | None) -> bool:
        if scope == ANY:
            return True
        if scope == ALL_BUCKETS:
            return ALL_BUCKETS in self.read or ALL_BUCKETS in self.write
        patterns = self.write if scope == WRITE else self.read + self.write
        assert bucket is not None
        return any(_matches(p, bucket) for p in patterns)


def _matches(pattern: str, bucket: str) -> bool:
    if pattern.endswith("*"):
        return bucket.startswith(pattern[:-1])
    return pattern == bucket


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def parse_tokens(text: str, source: str) -> dict[str, Grant]:
    """The grants of a tokens file, by the SHA-256 of their token. Errors name the
    file, the token's position and the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not TOML: {exc}") from None
    extra = set(data) - {"token"}
    if extra:
        raise ValueError(f"{source}: unknown table {sorted(extra)[0]!r} (expected [[token]])")
    entries = data.get("token", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{source}: 'token' must be an array of tables ([[token]])")
    if not entries:
        # Refused rather than taken as "nobody may do anything": more likely a file
        # caught while it is rewritten, or the wrong file.
        raise ValueError(f"{source}: no [[token]] in it (to close the data API to everyone, "
                         "give a token that no one holds)")
    grants: dict[str, Grant] = {}
    for number, raw in enumerate(entries, 1):
        where = f"{source}: token {number}"
        grant, key = _grant(raw, where)
        if key in grants:
            raise ValueError(f"{where} ({grant.name}): the same secret as "
                             f"{grants[key].name!r}")
        grants[key] = grant
    return grants


def _grant(raw: Any, where: str) -> tuple[Grant, str]:
    unknown = set(raw) - {"name", "token", "sha256", "read", "write"}
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    if ("token" in raw) == ("sha256" in raw):
        raise ValueError(f"{where}: give exactly one of 'token' and 'sha256'")
    if "token" in raw:
        if not isinstance(raw["token"], str) or len(raw["token"]) < 16:
            raise ValueError(f"{where}: 'token' must be a string of 16 characters or more")
        key = digest(raw["token"])
    else:
        key = raw["sha256"]
        if not isinstance(key, str) or not HEX_SHA256.fullmatch(key):
            raise ValueError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    scopes = []
    for scope in (READ, WRITE):
        patterns = raw.get(scope, [])
        if not isinstance(patterns, list) or not all(
                isinstance(p, str) and PATTERN.fullmatch(p) for p in patterns):
            raise ValueError(f"{where}: {scope!r} must be a list of bucket names, "
                             "'prefix*' patterns or '*'")
        scopes.append(tuple(patterns))
    return Grant(name, scopes[0], scopes[1]), key


class Tokens:
    """The data API's tokens, kept current with their file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._grants: dict[str, Grant] = {}
        self.watch = FilesWatch([path], self._load, "the tokens file")

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ValueError(f"{self.path}: {exc.strerror}") from None
        self._grants = parse_tokens(text, str(self.path))

    def grant(self, token: str) -> Grant | None:
        """Whose token this is. Looked up by digest: the time a lookup takes
        depends on the digest, which tells nothing of any secret."""
        return self._grants.get(digest(token))


REALM = 'Bearer realm="paxoskv"'
TOKENS: web.AppKey[Tokens | None] = web.AppKey("tokens")
GRANT = "paxoskv.grant"  # the request's Grant, once require_token settled it


def grant_of(request: web.Request) -> Grant | None:
    """The grant of the request's token (None: the node takes no tokens)."""
    grant = request.get(GRANT)
    return grant if isinstance(grant, Grant) else None


def session_owner(request: web.Request) -> tuple[str | None, bool]:
    """(the name of the token a session opened now belongs to, whether the token may
    keep alive and close every session)."""
    grant = grant_of(request)
    return (None, True) if grant is None else (grant.name, grant.writes_everything)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unauthorized(message: str, error: str | None = None) -> v.RequestError:
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return v.RequestError("authorization", message, "unauthorized", 401,
                          {"WWW-Authenticate": challenge})


def bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


async def _bucket(request: web.Request) -> str | None:
    """The bucket a data request names, as its handler will read it (the default one
    when the body names none); None when the body cannot tell, and then the handler
    refuses the body with a 400 before it does anything."""
    try:
        body = v.parse_body(await request.read())
        request[v.PARSED_BODY] = body  # the handler's read_body takes it as is
        return v.bucket_name(body.get("bucket", v.DEFAULT_BUCKET))
    except (v.RequestError, HttpProcessingError, RequestPayloadError):
        return None


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Data routes need a token whose grant covers the request (nothing runs before
    that is settled); other routes pass. Only installed when tokens are on."""
    scope = SCOPES.get(request.path)
    tokens = request.app[TOKENS]
    if scope is None or tokens is None:
        return await handler(request)
    token = bearer(request)
    if token is None:
        raise _unauthorized("an 'Authorization: Bearer <token>' header is required: this "
                            "cluster's data API needs a token")
    grant = tokens.grant(token)
    if grant is None:
        raise _unauthorized("the token is not valid", "invalid_token")
    bucket = await _bucket(request) if scope in (READ, WRITE) else None
    if scope in (READ, WRITE) and bucket is None:
        return await handler(request)
    request[GRANT] = grant
    if not grant.may(scope, bucket):
        wanted = (f"{scope} bucket {bucket!r}" if bucket is not None
                  else "read every bucket (a read scope of '*')")
        raise v.RequestError("bucket" if bucket is not None else "authorization",
                             f"token {grant.name!r} may not {wanted}", "forbidden", 403)
    return await handler(request)
