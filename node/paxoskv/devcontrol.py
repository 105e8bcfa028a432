"""`paxoskv dev add` and `paxoskv dev remove NAME`: scaling a running local cluster.

The `paxoskv dev` supervisor owns the node processes; the membership steps are the
cluster's own (`paxoskv members add|remove`, server/membership.py). So the work is
split: the supervisor answers three small requests on a control socket, and the
command does the step itself, with the progress line of `paxoskv members`:

    add:     supervisor "start" (a new node with --join, supervised from now on)
             -> members add -> supervisor "keep" (saved in dev.json for restarts)
             (any failure: supervisor "drop": the node is stopped, its directory removed)
    remove:  members remove -> supervisor "drop" (stopped, its directory removed)

The socket is an abstract Unix socket named after the data directory: nothing to
clean up after a crash, and two `paxoskv dev` on different directories never meet.
Every node of a dev cluster gets the admin token kept in the data directory
(`admin-token`), which the command reads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import select
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paxoskv import members_cli

TOKEN_FILE = "admin-token"
STATE_FILE = "dev.json"
MAX_NODES = 9


class ControlError(Exception):
    """A request the supervisor refused, or could not be asked."""


def admin_token(data_root: Path) -> str:
    """The dev cluster's admin token, created (readable by its owner only) at first use."""
    path = data_root / TOKEN_FILE
    if not path.exists():
        data_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def saved_state(data_root: Path) -> tuple[list[str], int] | None:
    """The member names and base port a previous run left (None: nothing saved)."""
    try:
        raw = json.loads((data_root / STATE_FILE).read_text())
        return [str(n) for n in raw["members"]], int(raw["base_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_state(data_root: Path, names: list[str], base_port: int) -> None:
    """Saved atomically: a restarted `paxoskv dev` starts the same members on the same
    ports (their URLs are part of the cluster's configuration)."""
    data_root.mkdir(parents=True, exist_ok=True)
    temporary = data_root / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps({"members": names, "base_port": base_port}) + "\n")
    temporary.replace(data_root / STATE_FILE)


def _address(data_root: Path) -> str:
    digest = hashlib.blake2b(str(data_root.resolve()).encode(), digest_size=8).hexdigest()
    return f"\0paxoskv-dev-{digest}"


# -- the supervisor's side -------------------------------------------------------------

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """The supervisor's control socket; `serve(timeout)` answers what arrived meanwhile
    (one JSON line in, one out), so the supervisor's loop stays single-threaded."""

    def __init__(self, data_root: Path, handle: Handler) -> None:
        self._handle = handle
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(_address(data_root))
        self._sock.listen(4)

    def serve(self, timeout: float) -> None:
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                request = json.loads(conn.makefile("rb").readline())
                reply = self._handle(request)
            except ControlError as exc:
                reply = {"error": str(exc)}
            except (OSError, ValueError, TypeError, KeyError) as exc:
                reply = {"error": f"bad control request ({exc.__class__.__name__})"}
            with contextlib.suppress(OSError):  # the command went away: nothing to tell
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self._sock.close()


# -- the command's side ----------------------------------------------------------------

def ask(data_root: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request to the supervisor of `data_root`; ControlError if it refuses."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(_address(data_root))
        except OSError:
            raise ControlError(f"no `paxoskv dev` is running on {data_root}; start one "
                               "first (`paxoskv dev`, or `make run`)") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline()
    if not line:
        raise ControlError("the `paxoskv dev` supervisor stopped while answering")
    reply: dict[str, Any] = json.loads(line)
    if "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply


def run(args: argparse.Namespace, output: str) -> int:
    """`paxoskv dev add` / `paxoskv dev remove NAME`."""
    from paxoskv import members_cli
    from paxoskv.cli import OK, USAGE, CliError

    data_root: Path = args.data_dir
    try:
        if not (data_root / TOKEN_FILE).exists():
            raise ControlError(f"no `paxoskv dev` cluster in {data_root}; start one first "
                               "(`paxoskv dev`, or `make run`)")
        token = admin_token(data_root)
        if args.dev_command == "add":
            started = ask(data_root, {"start": True})
            endpoints = [m["url"] for m in started["members"] if m["name"] != started["name"]]
            admin = members_cli.Admin(endpoints, token)
            try:
                view = admin.step("/v1/admin/members/add",
                                  {"name": started["name"], "url": started["url"]})
            except BaseException:
                # Drop the new node unless the step was decided after all (it is a
                # member then, and its data is the cluster's).
                ask(data_root, {"keep" if _is_member(admin, started["name"]) else "drop":
                                started["name"]})
                raise
            ask(data_root, {"keep": started["name"]})
        else:
            members = ask(data_root, {"members": True})["members"]
            if args.name not in {m["name"] for m in members}:
                raise ControlError(f"{args.name!r} is not a node of this dev cluster "
                                   f"({', '.join(m['name'] for m in members)})")
            endpoints = [m["url"] for m in members if m["name"] != args.name]
            view = members_cli.Admin(endpoints, token).step("/v1/admin/members/remove",
                                                            {"name": args.name})
            ask(data_root, {"drop": args.name})
    except ControlError as exc:
        raise CliError(str(exc), USAGE) from None
    members_cli.show(view, output)
    if output == "text" and sys.stderr.isatty():
        print("paxoskv dev: the supervisor keeps this membership across restarts",
              file=sys.stderr)
    return OK


def _is_member(admin: members_cli.Admin, name: str) -> bool:
    from paxoskv.cli import CliError

    try:
        return name in {m["name"] for m in admin.get()["members"]}
    except CliError:
        return True  # cannot tell: keeping a node is harmless, removing a member's data is not


def remove_data(data_dir: Path) -> None:
    """A removed member's data: never used again (a member that comes back does so as a
    new member, with a new member id), so it goes."""
    shutil.rmtree(data_dir, ignore_errors=True)
