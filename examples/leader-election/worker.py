"""A tiny leader-elected worker: of all its replicas, one leads at a time.

Each replica asks its sidecar (http://127.0.0.1:7001) to put the key `leader` with its
pod's name, bound to its pod ("node": "self"). The first put wins; the key lives while
the winner's pod is Ready (the operator reports it). The leader does its work with the
key's fencing token, which the resource it writes to checks: a write with a token lower
than one it has seen is refused, so a former leader that has not noticed yet cannot
overwrite its successor. The others watch the key and try again when it ends.

Environment: POD_NAME (the downward API), RESOURCE_URL (the fenced resource's base URL).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

SIDECAR = os.environ.get("PAXOSKV_SIDECAR", "http://127.0.0.1:7001")
POD = os.environ["POD_NAME"]
RESOURCE = os.environ["RESOURCE_URL"].rstrip("/")
ELECTION = {"bucket": "leader-election", "key": "leader"}


def post(url: str, body: dict[str, Any], timeout: float = 70) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def say(**fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "pod": POD, **fields}), flush=True)


def main() -> None:
    open("/tmp/ready", "w").close()  # the readiness probe's file (a test removes it)
    while True:
        try:
            status, entry = post(f"{SIDECAR}/v1/put", {**ELECTION, "value": POD,
                                                        "bindings": {"node": "self"}})
        except OSError as exc:
            say(event="sidecar unreachable", error=str(exc))
            time.sleep(1)
            continue
        if status != 200:
            say(event="no election", status=status, error=entry.get("error"))
            time.sleep(1)
            continue
        token = entry["token"]
        if entry["value"] == POD:
            say(event="leading", token=token)
            while True:  # work, fenced by the token, until the resource refuses it
                status, answer = post(f"{RESOURCE}/write", {"token": token, "writer": POD})
                if status != 200:
                    say(event="fenced off", token=token, answer=answer)
                    break
                time.sleep(0.5)
        else:
            say(event="following", leader=entry["value"], token=token)
            # Until the key changes (the leader's pod went away): a long poll.
            post(f"{SIDECAR}/v1/watch", {**ELECTION, "token": token, "timeout_ms": 55_000})


if __name__ == "__main__":
    sys.exit(main())
