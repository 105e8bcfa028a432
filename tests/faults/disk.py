"""Real power loss for the fault runs: the nodes' data directories on a small ext4
filesystem image, loop-mounted, which a power cut shuts down without flushing.

A kill -9 alone keeps everything a process wrote in the kernel's page cache, so it can
never show a missing fsync. Here a power cut kills every node, then shuts the
filesystem down with EXT4_IOC_SHUTDOWN and EXT4_GOING_FLAGS_NOLOGFLUSH (what was not
in the journal on the device is gone, as after a power loss), unmounts it and mounts
it again. The mount must be private to the run: run this inside `unshare --mount
--propagation private` (tests/test_faults.py does), so that nothing is left mounted on
the machine however the run ends. Needs mkfs.ext4 and loop devices; missing ones fail
the run loudly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
from pathlib import Path

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
SIZE_MB = 256


class DiskError(Exception):
    """The filesystem image could not be made, mounted or cut."""


def _run(*command: str) -> None:
    if shutil.which(command[0]) is None:
        raise DiskError(f"{command[0]} not found: install e2fsprogs and util-linux")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DiskError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")


class PowerLossDisk:
    """An ext4 image at `image`, mounted at `mountpoint` while the run lasts."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        self.image = image
        self.mountpoint = mountpoint
        with open(image, "wb") as f:
            f.truncate(SIZE_MB * 1024 * 1024)
        _run("mkfs.ext4", "-q", "-F", str(image))
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mount()
        self.cuts = 0

    def mount(self) -> None:
        _run("mount", "-o", "loop", str(self.image), str(self.mountpoint))

    def power_cut(self) -> None:
        """Lose whatever did not reach the device (every node must be dead already)."""
        fd = os.open(self.mountpoint, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)
        _run("umount", str(self.mountpoint))
        self.mount()
        self.cuts += 1

    def close(self) -> None:
        _run("umount", str(self.mountpoint))
