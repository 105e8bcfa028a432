"""The OpenAPI 3.1 description of the client API, served at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from paxoskv import __version__
from paxoskv.server import validation as v

_TARGET: dict[str, Any] = {
    "bucket": {"type": "string", "pattern": f"^{v.BUCKET_PATTERN.pattern}$",
               "default": "default", "description": "Namespace, created on first use."},
    "key": {"type": "string", "minLength": 1, "maxLength": v.MAX_KEY_BYTES,
            "description": f"At most {v.MAX_KEY_BYTES} bytes of UTF-8 (413 too_large "
                           "beyond)."},
    "no_quorum": {"type": "string", "enum": list(v.NO_QUORUM_POLICIES), "default": "return",
                  "description": "return/fail: 503 no_quorum at once; retry: retry with "
                                 "backoff until a quorum answers or timeout_ms passes."},
    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": v.MAX_TIMEOUT_MS,
                   "default": v.DEFAULT_TIMEOUT_MS},
}

# Integers are JSON numbers with no fraction (5000.0 is 5000, as JSON Schema says);
# tokens and deadlines go up to 2^64-1, the largest integer that comes back exactly.
_NODE_NAME = {"type": "string", "pattern": f"^{v.NODE_NAME.pattern}$"}

_ENTRY = {
    "type": "object",
    "required": ["bucket", "key", "found", "value", "token", "bindings"],
    "properties": {
        "bucket": {"type": "string"},
        "key": {"type": "string"},
        "found": {"type": "boolean", "description": "The key holds a live value."},
        "value": {"description": "The decided value (null when not found)."},
        "token": {"type": "integer", "description": "Fencing token: the key's generation, "
                  "which grows every time the key is decided anew (put, swap or delete)."},
        "bindings": {"type": "object"},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": ["invalid_request", "invalid_value", "too_large",
                                           "no_quorum", "not_found", "method_not_allowed",
                                           "unauthorized", "forbidden", "http_error",
                                           "internal"]},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The request field at fault."},
    }}},
}


_SESSION = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_DEADLINE = {"type": "integer", "minimum": 0, "description": "Milliseconds since the epoch."}

# A JSON value whose integers come back exactly (see validation.MIN_INT).
_JSON = {"anyOf": [
    {"type": ["string", "boolean", "null"]},
    {"type": "number", "not": {"type": "integer"}},
    {"type": "integer", "minimum": v.MIN_INT, "maximum": v.MAX_INT},
    {"type": "array", "items": {"$ref": "#/components/schemas/Json"}},
    {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Json"}},
]}

_BINDINGS = {
    "type": "object", "additionalProperties": False,
    "description": "The key lives while every binding does; when one dies, the key is "
                   "deleted by consensus. A binding already dead gives 422 invalid_value.",
    "properties": {
        "until": {"type": "integer", "minimum": 0, "maximum": v.MAX_INT,
                  "description": "Deadline in ms since the epoch (never ended before it)."},
        "key": {"type": "string", "minLength": 1, "maxLength": v.MAX_KEY_BYTES,
                "description": "Parent key of the same bucket: pinned "
                "to its current generation; the key ends when that generation does."},
        "pid": {**_SESSION, "description": "A session id: the key ends with the session."},
        "node": {**_NODE_NAME, "description": "A node (member or pod) name: pinned to "
                 "its current incarnation; the key ends when that node is not alive."},
    },
}


_VALUE = {"$ref": "#/components/schemas/Json", "not": {"type": "null"},
          "description": f"Any JSON value but null, at most {v.MAX_VALUE_BYTES} bytes "
          f"encoded and {v.MAX_VALUE_DEPTH} levels of arrays and objects (400 beyond); "
          "integers from -2^63 to 2^64-1 (others are refused: they would not come back "
          "exactly; a number written with a fraction or an exponent, such as 1e300, is "
          "kept as the float it is)."}

_NOT_ALLOWED = {"$ref": "#/components/responses/MethodNotAllowed"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": v.MAX_LIST_LIMIT, "default": 100}
_CONSISTENCY = {"type": "string", "enum": list(v.CONSISTENCY), "default": "linearizable"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """An answer's schema: an object with (at least) these properties, all present."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _json_ok(result: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": result}}}


def _plain(summary: str, fields: dict[str, Any], required: list[str],
           result: dict[str, Any]) -> dict[str, Any]:
    """An operation on something other than one key (sessions, listings). With no
    required field, the body may be left out: every field takes its default."""
    errors = {"$ref": "#/components/responses/Error"}
    options = {name: _TARGET[name] for name in ("no_quorum", "timeout_ms")}
    return {"post": {
        "summary": summary,
        "security": _TOKEN,
        "requestBody": {"required": bool(required), "content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": False,
                       "required": required, "properties": {**fields, **options}}}}},
        "responses": {"200": _json_ok(result), "400": errors, **_TOKEN_ERRORS, "404": errors,
                      "405": _NOT_ALLOWED, "413": errors, "503": errors},
    }}


_MEMBERS = _object({
    "epoch": {"type": "integer", "minimum": 0}, "settled": {"type": "boolean"},
    "quorum": {"type": "integer", "minimum": 1},
    "members": {"type": "array", "items": _object({
        "name": _NODE_NAME, "url": {"type": "string"}, "member_id": {"type": "string"},
        "self": {"type": "boolean"}, "reachable": {"type": "boolean"}})},
    "step": {"oneOf": [{"type": "null"}, _object({
        "action": {"type": "string"}, "phase": {"type": "string"},
        "keys_done": {"type": "integer"}, "keys_total": {"type": "integer"}})]}})

# The data API's token: needed only on a node started with --auth-file (server/auth.py).
_TOKEN: list[dict[str, list[str]]] = [{}, {"token": []}]
_TOKEN_ERRORS = {
    "401": {"$ref": "#/components/responses/TokenRequired"},
    "403": {"description": "The token's scopes do not cover the request (the field names "
            "the bucket, or `authorization` for a listing across buckets).",
            "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Error"}}}},
}

_ADMIN_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"description": "The admin endpoint is off on this node (started without "
            "--admin-token).", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Error"}}}},
}


def _member_step(summary: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    errors = {"$ref": "#/components/responses/Error"}
    return {"post": {
        "summary": summary,
        "security": [{"admin": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": required,
            "properties": fields}}}},
        "responses": {"200": _json_ok(_MEMBERS, "The configuration once the step settled"),
                      "400": errors, **_ADMIN_ERRORS, "405": _NOT_ALLOWED,
                      "409": {"description": "Another membership step is in progress.",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/Error"}}}},
                      "413": errors, "503": errors},
    }}


def _listing(summary: str, name: dict[str, Any], kind: str, entry: dict[str, Any]
             ) -> dict[str, Any]:
    """A listing a page at a time, past the name `after` (the previous page's `next`)."""
    return _plain(summary, {
        "after": {"anyOf": [{"type": "null"}, name], "default": None,
                  "description": "List after this name: the previous page's `next` "
                                 "(null: the first page)."},
        "limit": _LIMIT, "consistency": _CONSISTENCY}, [], _object({
            kind: {"type": "array", "items": _object(entry)},
            "next": {"type": ["string", "null"], "description": "The last name of this "
                     "page when more may follow (pass it as `after`), else null."},
            "consistency": _CONSISTENCY}))


def _challenge(description: str, realm: str, wrong: str) -> dict[str, Any]:
    """A 401 answer: the JSON error, and the Bearer challenge of `realm`."""
    return {"description": description,
            "headers": {"WWW-Authenticate": {
                "description": f'Bearer realm="{realm}" (with error="invalid_token" for '
                               f'{wrong})', "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Error"}}}}


def _get(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A GET-only path (every other method: 405 with Allow)."""
    return {"get": {"summary": summary, "responses": {**responses, "405": _NOT_ALLOWED}}}


def _operation(summary: str, extra: dict[str, Any], required: list[str],
               result: dict[str, Any]) -> dict[str, Any]:
    errors = {"$ref": "#/components/responses/Error"}
    return {"post": {
        "summary": summary,
        "security": _TOKEN,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "required": ["key", *required], "properties": {**_TARGET, **extra}}}}},
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": result}}},
            "400": errors, **_TOKEN_ERRORS, "405": _NOT_ALLOWED, "413": errors,
            "422": errors, "503": errors},
    }}


# One request body per operation, as a client would send it.
_EXAMPLES: dict[str, dict[str, Any]] = {
    "/v1/put": {"key": "leader", "value": "pod-a", "bindings": {"until": 4_102_444_800_000}},
    "/v1/get": {"key": "leader", "consistency": "linearizable"},
    "/v1/delete": {"key": "leader", "token": 1},
    "/v1/swap": {"key": "leader", "expected": "pod-a", "value": "pod-b", "token": 1},
    "/v1/watch": {"key": "leader", "token": 1, "timeout_ms": 30_000},
    "/v1/list": {"bucket": "workers", "prefix": "pod-", "limit": 100},
    "/v1/buckets": {"limit": 100},
    "/v1/sessions": {"after": "0123456789abcdef0123456789abcdef", "limit": 10},
    "/v1/nodes": {"consistency": "local"},
    "/v1/pid": {"key": "lock"},
    "/v1/node": {"bucket": "shards", "key": "shard-7"},
    "/v1/admin/nodes": {"source": "operator", "nodes": {"pod-a": True, "pod-b": False}},
    "/v1/admin/members/add": {"name": "n4", "url": "http://10.0.0.4:7001"},
    "/v1/admin/members/remove": {"name": "n4"},
    "/v1/admin/members/resume": {},
    "/v1/session/open": {"ttl_ms": 10_000},
    "/v1/session/keepalive": {"session": "0123456789abcdef0123456789abcdef"},
    "/v1/session/close": {"session": "0123456789abcdef0123456789abcdef"},
}


def openapi_document() -> dict[str, Any]:
    document = _document()
    for path, example in _EXAMPLES.items():
        document["paths"][path]["post"]["requestBody"]["content"]["application/json"][
            "example"] = example
    return document


def _document() -> dict[str, Any]:
    entry = {"$ref": "#/components/schemas/Entry"}
    deleted = {"allOf": [entry, {"type": "object", "required": ["deleted"], "properties": {
        "deleted": {"type": "boolean", "description": "The named generation has ended "
                    "(by this delete or before it: a retried delete answers true again). "
                    "A delete takes effect at most once: one that named a generation not "
                    "made yet answers false and never ends it later."}}}]}
    swapped = {"allOf": [entry, {"type": "object", "required": ["swapped"], "properties": {
        "swapped": {"type": "boolean", "description": "This swap took effect: the entry is "
                    "the generation it decided. False: the key was absent, or held another "
                    "value or token (the state returned)."}}}]}
    created = {"allOf": [entry, {"type": "object", "required": ["created"], "properties": {
        "created": {"type": "boolean", "description": "This put decided the live "
                    "generation (it won; a retried put answers as its first run did). "
                    "False: the key already held a value, which is the one returned."}}}]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PaxosKV", "version": __version__,
                 "description": "Strongly consistent, leaderless key-value store for "
                                "coordination. Every key is a CASPaxos register."},
        "paths": {
            "/v1/put": _operation(
                "Put if absent: the first value decided for a key stays until the key dies. "
                "Returns the decided value, which may be another client's.",
                {"value": _VALUE, "bindings": _BINDINGS}, ["value"], created),
            "/v1/get": _operation(
                "Read a key: linearizable by default, or this node's possibly stale copy.",
                {"consistency": {"type": "string", "enum": list(v.CONSISTENCY),
                                 "default": "linearizable",
                                 "description": "linearizable: a quorum's latest decided "
                                 "state. local: the latest state this node knows was "
                                 "chosen, with no round trip; possibly stale (even "
                                 "not-found for a key it has not learned yet), never a "
                                 "state that was merely accepted and might not be chosen."}},
                [], entry),
            "/v1/list": _plain(
                "A page of a bucket's live keys beginning with `prefix`, in key order "
                "(code points). linearizable: the candidates are the keys a quorum of "
                "members hold (so none live before the listing began and live since is "
                "left out), each read linearizably in turn (not one snapshot). local: "
                "this node's chosen states, possibly stale or incomplete.",
                {"bucket": _TARGET["bucket"],
                 "prefix": {"type": "string", "maxLength": v.MAX_KEY_BYTES, "default": "",
                            "description": "Only keys beginning with it."},
                 "after": {"type": ["string", "null"], "minLength": 1,
                           "maxLength": v.MAX_KEY_BYTES, "default": None,
                           "description": "List keys after this one: the previous page's "
                                          "`next` (null: the first page)."},
                 "limit": _LIMIT, "consistency": _CONSISTENCY},
                [], _object({
                    "bucket": {"type": "string"},
                    "entries": {"type": "array", "items": _object({
                        "key": {"type": "string"}, "value": {},
                        "token": {"type": "integer"}, "bindings": {"type": "object"}})},
                    "next": {"type": ["string", "null"], "description": "The last key of "
                             "this page when more may follow (pass it as `after`), else "
                             "null."},
                    "consistency": _CONSISTENCY})),
            "/v1/buckets": _listing(
                "A page of the buckets holding a live key, by name (the reserved `_` "
                "buckets are never listed). linearizable: the candidates are the keys a "
                "quorum of members hold, and a bucket is listed if one of its keys reads "
                "live (none that held a live key throughout the listing is left out); "
                "`keys` is null. local: this node's chosen states, and `keys` counts the "
                "bucket's live keys among them.",
                {"type": "string", "pattern": f"^{v.BUCKET_PATTERN.pattern}$"},
                "buckets", {"bucket": {"type": "string"},
                            "keys": {"type": ["integer", "null"], "minimum": 1}}),
            "/v1/sessions": _listing(
                "A page of the open sessions, by id: each read linearizably (open when "
                "read; none open throughout is left out), with its TTL, its deadline "
                "(`until`, ms since the epoch, on the clock of the node that served its "
                "latest keep-alive), what remains of it on this node's clock, and the keys "
                "bound to it that this node knows of, each read live and still bound. "
                "local: this node's chosen states.",
                _SESSION, "sessions", {
                    "session": _SESSION, "ttl_ms": {"type": "integer"}, "until": _DEADLINE,
                    "remaining_ms": {"type": "integer", "minimum": 0},
                    "keys": {"type": "array", "items": _object({
                        "bucket": {"type": "string"}, "key": {"type": "string"}})}}),
            "/v1/nodes": _listing(
                "A page of the node incarnations, by node name: every node key ever "
                "decided, live or ended, read linearizably (local: this node's chosen "
                "states). `token` is the incarnation: a node that goes down and comes "
                "back is a new one, with a larger token; `source` says who keeps it alive "
                "(\"member\": the node itself; else a reporter such as the operator).",
                _NODE_NAME, "nodes", {
                    "name": _NODE_NAME, "live": {"type": "boolean"},
                    "token": {"type": "integer", "minimum": 1},
                    "source": {"type": ["string", "null"]}}),
            "/v1/delete": _operation(
                "Delete a key: end its generation `token` if that is still the live one, "
                "or, without a token, whatever generation is live.",
                {"token": {"type": "integer", "minimum": 1, "maximum": v.MAX_INT,
                           "description": "The fencing token of the generation to end. "
                           "Without it, the delete ends the live generation (found by a "
                           "linearizable read); `deleted` is then false if the key was "
                           "absent."}},
                [], deleted),
            "/v1/swap": _operation(
                "Compare-and-swap: if the key is live, holds `expected` and (if given) the "
                "fencing token `token`, `value` replaces it as a new generation (token + 1) "
                "that keeps the key's bindings; keys bound to the key as a parent end. "
                "Values compare as JSON text with object keys in any order (true is not 1, "
                "1 is not 1.0). An absent key never matches. Runs as a linearizable read "
                "and a change conditional on the generation read, retried on the next "
                "generation while it still holds `expected`; `swapped` is exact, also for "
                "a duplicated or hedged run.",
                {"expected": {**_VALUE, "description": "The value the key must hold (any "
                              "JSON but null, within the limits of `value`)."},
                 "value": _VALUE,
                 "token": {"type": "integer", "minimum": 1, "maximum": v.MAX_INT,
                           "description": "Swap only if this is still the key's fencing "
                           "token (generation); without it, the value alone is compared."}},
                ["expected", "value"], swapped),
            "/v1/watch": _operation(
                "Long-poll until the key's fencing token differs from `token`, or "
                "timeout_ms passes; `changed` says which.",
                {"token": {"type": "integer", "minimum": 0, "maximum": v.MAX_INT,
                           "description": "The token last seen (0: never seen)."}},
                [], {"allOf": [entry, {"type": "object", "required": ["changed"],
                                       "properties": {"changed": {"type": "boolean"}}}]}),
            "/v1/pid": _operation(
                "The session a key is bound to (found: false when the key or its "
                "binding is absent).", {}, [],
                {"type": "object", "required": ["bucket", "key", "found", "pid"],
                 "properties": {"bucket": {"type": "string"}, "key": {"type": "string"},
                                "found": {"type": "boolean"},
                                "pid": {"type": ["string", "null"]}}}),
            "/v1/node": _operation(
                "The node a key is bound to (found: false when the key or its binding is "
                "absent).", {}, [],
                {"type": "object", "required": ["bucket", "key", "found", "node"],
                 "properties": {"bucket": {"type": "string"}, "key": {"type": "string"},
                                "found": {"type": "boolean"},
                                "node": {"type": ["string", "null"]}}}),
            "/v1/admin/nodes": {"post": {
                "summary": "Report which nodes are alive (admin: 'Authorization: Bearer "
                           "<admin token>'). A full, level-triggered view from one source: "
                           "true starts an incarnation if none is alive, false ends it, and "
                           "nodes the source reported before but leaves out are ended. "
                           "Resending a report changes nothing.",
                "security": [{"admin": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False,
                               "required": ["source", "nodes"], "properties": {
                                   "source": {**_NODE_NAME, "not": {"const": "member"},
                                              "description": "The reporter ('member' is "
                                              "the cluster's own)."},
                                   "nodes": {"type": "object",
                                             "propertyNames": _NODE_NAME,
                                             "additionalProperties": {"type": "boolean"}},
                                   "timeout_ms": _TARGET["timeout_ms"]}}}}},
                "responses": {"200": _json_ok(_object({
                                  "source": _NODE_NAME,
                                  "started": {"type": "array", "items": _NODE_NAME},
                                  "ended": {"type": "array", "items": _NODE_NAME}}),
                                  "The nodes whose incarnation this report started, and "
                                  "those it ended"),
                              "400": {"$ref": "#/components/responses/Error"},
                              "401": {"$ref": "#/components/responses/Unauthorized"},
                              "403": {"description": "The admin endpoint is off on this "
                                      "node (started without --admin-token).", "content": {
                                          "application/json": {"schema": {
                                              "$ref": "#/components/schemas/Error"}}}},
                              "405": _NOT_ALLOWED,
                              "413": {"$ref": "#/components/responses/Error"},
                              "503": {"$ref": "#/components/responses/Error"}}}},
            "/v1/admin/members": {"get": {
                "summary": "The configuration this node holds (admin): epoch, whether its "
                           "step is settled, quorum, members with reachability from this "
                           "node, and the membership step this node is driving, if any.",
                "security": [{"admin": []}],
                "responses": {"200": _json_ok(_MEMBERS), **_ADMIN_ERRORS,
                              "405": _NOT_ALLOWED}}},
            "/v1/admin/members/add": _member_step(
                "Add a node started with --join on an empty data directory (admin). "
                "Answers once the step is settled: every key re-decided through the new "
                "member.", {"name": _NODE_NAME, "url": {"type": "string", "format": "uri",
                                                       "pattern": "^https?://"}},
                ["name", "url"]),
            "/v1/admin/members/remove": _member_step(
                "Remove a member (admin); it may be down. Answers once the step is "
                "settled.", {"name": _NODE_NAME}, ["name"]),
            "/v1/admin/members/resume": _member_step(
                "Finish a membership step whose driver stopped before it settled (admin; "
                "nothing to do: the configuration as it is).", {}, []),
            "/v1/session/open": _plain(
                "Open a session: it lives while kept alive, at least ttl_ms after the "
                "latest keep-alive.", {"ttl_ms": {"type": "integer", "minimum": v.MIN_TTL_MS,
                                                  "maximum": v.MAX_TTL_MS}}, ["ttl_ms"],
                _object({"session": _SESSION, "ttl_ms": {"type": "integer"},
                         "until": _DEADLINE})),
            "/v1/session/keepalive": _plain(
                "Move the session's deadline ttl_ms ahead (404 not_found if it ended).",
                {"session": _SESSION}, ["session"],
                _object({"session": _SESSION, "until": _DEADLINE})),
            "/v1/session/close": _plain(
                "Close the session: every key bound to it ends.", {"session": _SESSION},
                ["session"], _object({"session": _SESSION, "closed": {
                    "type": "boolean", "description": "False: it had already ended."}})),
            "/v1/status": _get("This node's view of the cluster.", {"200": _json_ok(_object({
                "name": _NODE_NAME, "version": {"type": "string"},
                "boot": {"type": "integer", "minimum": 1},
                "quorum": {"type": "integer", "minimum": 1},
                "quorate": {"type": "boolean"},
                "members": {"type": "array", "items": _object({
                    "name": _NODE_NAME, "self": {"type": "boolean"},
                    "connected": {"type": "boolean"}})},
                "keys": {"type": "integer", "minimum": 0}}))}),
            "/v1/openapi.json": _get("This document.", {"200": _json_ok(
                {"type": "object", "required": ["openapi", "info", "paths"]})}),
            "/healthz": _get("Liveness: the process answers.", {"200": _json_ok(
                _object({"status": {"const": "ok"}}))}),
            "/readyz": _get("Readiness: a quorum of members is reachable, and this member "
                            "is caught up (a member that joined is not until the step that "
                            "adds it settles).", {
                "200": _json_ok(_object({"status": {"const": "ready"}}), "Ready"),
                "503": {"$ref": "#/components/responses/Error"}}),
            "/metrics": _get("Prometheus metrics.", {"200": {
                "description": "The Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        },
        "components": {
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer",
                          "description": "The admin token (--admin-token)."},
                "token": {"type": "http", "scheme": "bearer",
                          "description": "A data API token with read/write scopes per "
                                         "bucket, on a node started with --auth-file; a "
                                         "node without it needs none."}},
            "schemas": {"Entry": _ENTRY, "Error": _ERROR, "Json": _JSON},
            "responses": {
                "Error": {"description": "An error", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unauthorized": _challenge(
                    "No admin token, or a wrong one (unauthorized).", "paxoskv admin",
                    "a wrong token"),
                "TokenRequired": _challenge(
                    "The node needs a data token (--auth-file) and got none, or an "
                    "unknown one (unauthorized).", "paxoskv", "an unknown token"),
                "MethodNotAllowed": {
                    "description": "The path is served, not for this method (every path "
                                   "answers 405 method_not_allowed to other methods).",
                    "headers": {"Allow": {"description": "The methods the path serves.",
                                          "schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}},
            },
        },
    }
