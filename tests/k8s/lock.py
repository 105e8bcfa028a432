"""The local Kubernetes test cluster's lock (tests/k8s/cluster.py): one user of a state
directory at a time.

`up` would otherwise stop whatever cluster runs there, so a second test session (or `make
k8s-up`) started while another session's cluster is in use would kill it. The lock is an
flock(2) on `<state>/lock`, held for the cluster's life by the process that owns it: a test
session from its `up` to its `down`; for `make k8s-up` (`cluster up --detach`), the cluster's
own namespace holder, which inherits the lock so that it outlives the command. The kernel
releases an flock when the last descriptor of it closes, so a crashed holder's lock never
blocks: the next `up` takes it and cleans what that run left.

The file says who took the lock (JSON: pid, command, since), but who holds it now is read
from /proc: the processes that have the file open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lock"

_HELD: dict[Path, int] = {}  # state directory -> the descriptor this process holds it with


def path(state: Path) -> Path:
    return state / LOCK_NAME


def command_line(pid: int, limit: int = 160) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    line = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _write(fd: int, owner: dict[str, object]) -> None:
    data = (json.dumps(owner) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _lock(state: Path, wait: float) -> int | None:
    """A new descriptor of the lock file, locked; None when another holds it."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(path(state), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def take(state: Path, wait: float = 0.0) -> int | None:
    """Lock `state` for this process (kept until `release` or the process ends); the
    descriptor, or None when another process holds it (after trying for `wait` seconds).
    Taking it again in the process that holds it is a no-op."""
    if state in _HELD:
        return _HELD[state]
    fd = _lock(state, wait)
    if fd is not None:
        _HELD[state] = fd
        _write(fd, {"pid": os.getpid(), "command": command_line(os.getpid()),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    return fd


def hand_over(state: Path, pid: int, note: str) -> None:
    """Say in the lock file that `pid` (which inherited the descriptor) holds it now."""
    fd = _HELD[state]
    _write(fd, {"pid": pid, "command": command_line(pid), "note": note,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")})


def held_here(state: Path) -> bool:
    return state in _HELD


def release(state: Path) -> None:
    """Close this process's descriptor. The lock goes with it unless a process it was
    handed to still has it open (closing, not LOCK_UN, which would free it for them too)."""
    fd = _HELD.pop(state, None)
    if fd is not None:
        os.close(fd)


def holders(state: Path) -> list[int]:
    """The processes, this one aside, that have the lock file open: its holder and the
    process(es) it was handed to (and, for a moment, one that tries to take it)."""
    try:
        target = os.stat(path(state))
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{entry}/fd/{fd}")
                    if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                        found.append(int(entry))
                        break
    return sorted(found)


@dataclass(frozen=True)
class Owner:
    """Who holds a state directory's lock, as the lock file and /proc say."""

    pid: int
    command: str
    note: str = ""
    since: str = ""

    def __str__(self) -> str:
        said = f"pid {self.pid} ({self.command})"
        if self.note:
            said += f", {self.note}"
        return said + (f", since {self.since}" if self.since else "")


def owner(state: Path) -> Owner | None:
    """Who holds the lock of `state`, None when it is free or this process holds it."""
    if held_here(state) or not path(state).exists():
        return None
    fd = _lock(state, 0.0)
    if fd is not None:  # free: nobody holds it
        os.close(fd)
        return None
    pids = holders(state)
    try:
        said = json.loads(path(state).read_text())
    except (OSError, ValueError):
        said = {}
    pid = said.get("pid")
    if isinstance(pid, int) and pid in pids:
        return Owner(pid, command_line(pid), str(said.get("note", "")),
                     str(said.get("since", "")))
    if pids:
        return Owner(pids[0], command_line(pids[0]))
    return Owner(0, "unknown: the lock is held but no process has its file open")
