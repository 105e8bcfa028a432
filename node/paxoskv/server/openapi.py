"""The OpenAPI 3.1 description of the client API, served at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from paxoskv import __version__
from paxoskv.server import validation as v

_TARGET: dict[str, Any] = {
    "bucket": {"type": "string", "pattern": f"^{v.BUCKET_PATTERN.pattern}$",
               "default": "default", "description": "Namespace, created on first use."},
    "key": {"type": "string", "minLength": 1,
            "description": f"At most {v.MAX_KEY_BYTES} bytes of UTF-8."},
    "no_quorum": {"type": "string", "enum": list(v.NO_QUORUM_POLICIES), "default": "return",
                  "description": "return/fail: 503 no_quorum at once; retry: retry with "
                                 "backoff until a quorum answers or timeout_ms passes."},
    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": v.MAX_TIMEOUT_MS,
                   "default": v.DEFAULT_TIMEOUT_MS},
}

_ENTRY = {
    "type": "object",
    "required": ["bucket", "key", "found", "value", "token", "bindings"],
    "properties": {
        "bucket": {"type": "string"},
        "key": {"type": "string"},
        "found": {"type": "boolean", "description": "The key holds a live value."},
        "value": {"description": "The decided value (null when not found)."},
        "token": {"type": "integer", "description": "Fencing token: the key's generation, "
                  "which grows every time the key is decided anew (put or delete)."},
        "bindings": {"type": "object"},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": ["invalid_request", "too_large", "no_quorum",
                                           "not_found", "method_not_allowed", "internal"]},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The request field at fault."},
    }}},
}


def _operation(summary: str, extra: dict[str, Any], required: list[str],
               result: dict[str, Any]) -> dict[str, Any]:
    errors = {"$ref": "#/components/responses/Error"}
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "required": ["key", *required], "properties": {**_TARGET, **extra}}}}},
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": result}}},
            "400": errors, "413": errors, "503": errors},
    }}


def openapi_document() -> dict[str, Any]:
    entry = {"$ref": "#/components/schemas/Entry"}
    deleted = {"allOf": [entry, {"type": "object", "required": ["deleted"], "properties": {
        "deleted": {"type": "boolean", "description": "The named generation has ended."}}}]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PaxosKV", "version": __version__,
                 "description": "Strongly consistent, leaderless key-value store for "
                                "coordination. Every key is a CASPaxos register."},
        "paths": {
            "/v1/put": _operation(
                "Put if absent: the first value decided for a key stays until the key dies. "
                "Returns the decided value, which may be another client's.",
                {"value": {"description": f"Any JSON value but null, at most "
                           f"{v.MAX_VALUE_BYTES} bytes encoded."},
                 "bindings": {"type": "object", "maxProperties": 0,
                              "description": "Reserved for lifetimes (not yet supported)."}},
                ["value"], entry),
            "/v1/get": _operation(
                "Read a key: linearizable by default, or this node's possibly stale copy.",
                {"consistency": {"type": "string", "enum": list(v.CONSISTENCY),
                                 "default": "linearizable"}},
                [], entry),
            "/v1/delete": _operation(
                "Delete a key if its fencing token still matches.",
                {"token": {"type": "integer", "minimum": 1}}, ["token"], deleted),
            "/v1/status": {"get": {"summary": "This node's view of the cluster.",
                                   "responses": {"200": {"description": "OK"}}}},
            "/healthz": {"get": {"summary": "Liveness: the process answers.",
                                 "responses": {"200": {"description": "OK"}}}},
            "/readyz": {"get": {"summary": "Readiness: a quorum of members is reachable.",
                                "responses": {"200": {"description": "Ready"},
                                              "503": {"$ref": "#/components/responses/Error"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.",
                                 "responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "schemas": {"Entry": _ENTRY, "Error": _ERROR},
            "responses": {"Error": {"description": "An error", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }
