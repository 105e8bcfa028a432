"""An exclusive lock on a file, held for the life of the process.

The kernel drops an flock when its holder dies, however it dies, so a lock left
by a killed process never needs cleaning up. The file holds the holder's pid,
for the message a second process gives.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Held(Exception):
    """Another process holds the lock; `holder` is its pid as it wrote it."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by pid {holder}")
        self.holder = holder


def hold(path: Path) -> int:
    """Take the lock on `path` (creating it and its directory); the descriptor keeps
    it until the process ends or closes it. Raises Held if another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Held(holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
