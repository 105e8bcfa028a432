"""`paxoskv members list|add|remove|resume`: membership from the command line.

Calls the admin endpoints (server/members_api.py) of the first endpoint that
answers, with the admin token. A step answers once it is settled, which can take
a while on a large cluster: meanwhile a progress line shows the phase and the
keys re-scanned so far (on a terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import threading
from typing import Any

import httpx

from paxoskv.cli import NO, OK, UNAVAILABLE, USAGE, CliError
from paxoskv.client import tls_context

STEP_TIMEOUT_S = 3600.0  # a step re-scans every key: minutes on a large cluster


def run(args: argparse.Namespace, endpoints: list[str], output: str,
        security: dict[str, str]) -> int:
    """`security`: the client's TLS options (cafile, certfile, keyfile); the data
    API's auth token is not the admin token, and is not sent."""
    token = getattr(args, "admin_token", None) or os.environ.get("PAXOSKV_ADMIN_TOKEN")
    if not token:
        raise CliError("the admin token is needed: --admin-token or "
                           "$PAXOSKV_ADMIN_TOKEN", USAGE)
    try:
        verify = tls_context(security.get("cafile"), security.get("certfile"),
                             security.get("keyfile"))
    except ValueError as exc:
        raise CliError(str(exc), USAGE) from None
    admin = Admin(endpoints, token, verify)
    action = args.members_command
    if action == "list":
        show(admin.get(), output)
        return OK
    body: dict[str, Any] = {}
    if action == "add":
        body = {"name": args.name, "url": args.url}
    elif action == "remove":
        body = {"name": args.name}
    answer = admin.step(f"/v1/admin/members/{action}", body)
    show(answer, output)
    return OK


class Admin:
    """The admin endpoints of the first of `endpoints` that answers."""

    def __init__(self, endpoints: list[str], token: str, verify: ssl.SSLContext | bool = True
                 ) -> None:
        self.endpoints = endpoints
        self.headers = {"Authorization": f"Bearer {token}"}
        self.verify = verify

    def get(self) -> dict[str, Any]:
        return self._call("GET", "/v1/admin/members", None, 10.0)

    def step(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        stop = threading.Event()
        watcher = threading.Thread(target=self._progress, args=(stop,), daemon=True)
        if sys.stderr.isatty():
            watcher.start()
        try:
            return self._call("POST", path, body, STEP_TIMEOUT_S)
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
                print(file=sys.stderr)

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              timeout: float) -> dict[str, Any]:
        reasons = []
        for url in self.endpoints:
            try:
                response = httpx.request(method, url.rstrip("/") + path, json=body,
                                         headers=self.headers, verify=self.verify,
                                         timeout=httpx.Timeout(timeout, connect=2.0))
            except httpx.ConnectError as exc:
                reasons.append(f"{url}: {exc}")
                continue  # nothing was sent: the next endpoint may take it
            except httpx.HTTPError as exc:
                raise CliError(f"{url} stopped answering ({exc.__class__.__name__}); a "
                                   "step may have started: see `paxoskv members list`, "
                                   "then `paxoskv members resume`", UNAVAILABLE) from None
            return _answer(response)
        raise CliError("unreachable: no endpoint answered (" + "; ".join(reasons) + ")",
                           UNAVAILABLE)

    def _progress(self, stop: threading.Event) -> None:
        """A progress line while a step runs (polls the driver's view)."""
        while not stop.wait(0.5):
            try:
                step = self.get().get("step")
            except CliError:
                continue
            if step:
                done, total = step["keys_done"], step["keys_total"]
                bar = f" {done}/{total} keys" if total else ""
                print(f"\rpaxoskv: {step['action']}: {step['phase']}{bar}   ", end="",
                      file=sys.stderr, flush=True)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise CliError(f"HTTP {response.status_code} with a body that is not JSON",
                           UNAVAILABLE) from None
    if response.status_code == 200:
        return dict(data)
    error = data.get("error", {}) if isinstance(data, dict) else {}
    where = f" ({error['field']})" if error.get("field") else ""
    status = {400: USAGE, 401: USAGE, 403: USAGE, 409: NO}.get(response.status_code,
                                                               UNAVAILABLE)
    raise CliError(f"{error.get('code', response.status_code)}{where}: "
                       f"{error.get('message', response.text[:200])}", status)


def show(view: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(view))
        return
    if output == "value":
        print(view["epoch"])
        return
    rows = [[m["name"], m["url"], m["member_id"], "yes" if m["reachable"] else "NO",
             "*" if m["self"] else ""] for m in view["members"]]
    widths = [max(len(str(r[i])) for r in [["NAME", "URL", "MEMBER ID", "REACHABLE", ""],
                                           *rows]) for i in range(5)]
    for row in [["NAME", "URL", "MEMBER ID", "REACHABLE", ""], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    step = view.get("step")
    state = "settled" if view["settled"] else "re-scanning (a step is in progress)"
    print(f"epoch {view['epoch']}, {state}, quorum {view['quorum']}"
          + (f"; this node is driving: {step['action']} ({step['phase']})" if step else ""))
