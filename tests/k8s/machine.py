"""The local Kubernetes test cluster (tests/k8s/cluster.py) as the machine sees it: its
processes (found by PID, by their mark, by their namespaces), mounts, cgroups and kernel
settings; stopping them all, and saying what of the cluster is left."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .layout import MEMBER_ENV, NODE_LINK, Layout

# Where a mount of the cluster would show on the machine if one leaked from the private mount
# namespace (none should). Only paths that can be the cluster's: others mount under /run.
LEAK_PATHS = ("/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/run/docker.sock",
              "/var/log/pods", "/var/log/containers")
CGROUP_TREES = ("kubepods", "k8s.io")  # made by kubelet and containerd in every hierarchy
STOP_GRACE = 5.0

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # daemons this process started: reaped here


def track(proc: subprocess.Popen[bytes]) -> None:
    """A daemon this process started: `running` reaps it once it has exited."""
    _CHILDREN[proc.pid] = proc


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks after boot), which tells it from a later process
    with the same PID; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def running(pid: int, start: int | None = None) -> bool:
    """Whether the process runs (a zombie has stopped), and is the one that started at
    `start` when given."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def ancestors() -> set[int]:
    """This process and its ancestors: never to be stopped, whatever they share."""
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        m = re.search(r"^PPid:\s+(\d+)", status, re.M)
        pid = int(m[1]) if m else 0
    return found


def in_namespaces(pid: int, state: Path, record: dict[str, Any]) -> bool:
    """Whether the process is in the cluster's network or mount namespace. The kernel soon
    gives a freed namespace's inode number to a new one, so the inode alone proves nothing:
    the network namespace must also have the node's link, the mount one etcd's tmpfs."""
    if record.get("net") and ns_inode(pid, "net") == record["net"]:
        with contextlib.suppress(OSError):
            if f"{NODE_LINK}:" in Path(f"/proc/{pid}/net/dev").read_text():
                return True
    if record.get("mnt") and ns_inode(pid, "mnt") == record["mnt"]:
        with contextlib.suppress(OSError):
            return any(point == str(state / "etcd") for point, *_ in mountinfo(pid))
    return False


def members(state: Path, record: dict[str, Any]) -> set[int]:
    """The running processes of the cluster at `state`: those with its mark in their
    environment (the daemons, the shims they start) and those in its namespaces."""
    mark = f"{MEMBER_ENV}={state}".encode()
    mine = ancestors()
    found = set()
    for pid in all_pids():
        if pid in mine or not running(pid):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if mark in environ.split(b"\0") or in_namespaces(pid, state, record):
            found.add(pid)
    return found


def other_clusters(state: Path) -> dict[str, list[int]]:
    """Clusters of other state directories running on this machine: their state directory
    -> their marked processes. Only one can run at a time: they share the machine's cgroup
    trees, which each one's clean-up empties and removes."""
    prefix = f"{MEMBER_ENV}=".encode()
    mine = ancestors()
    found: dict[str, list[int]] = {}
    for pid in all_pids():
        if pid in mine:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix):
                other = entry[len(prefix):].decode(errors="replace")
                if other != str(state) and running(pid):
                    found.setdefault(other, []).append(pid)
                break
    return found


def unescape(field: str) -> str:
    """A mountinfo field as it is (spaces and the like come octal-escaped)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mountinfo(pid: int | str = "self") -> list[tuple[str, str, str, str]]:
    """The mounts of a process's mount namespace: (mount point, root, fstype, options)."""
    mounts = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        mounts.append((unescape(fields[4]), unescape(fields[3]), tail[0],
                       tail[2] if len(tail) > 2 else ""))
    return mounts


def cgroup_mounts() -> list[tuple[str, str, str]]:
    """The machine's cgroup hierarchies: (mount point, fstype, options to mount it again)."""
    found = []
    for point, _, fstype, options in mountinfo():
        if fstype in ("cgroup", "cgroup2") and point.startswith("/sys/fs/cgroup"):
            kept = [o for o in options.split(",") if o not in ("rw", "ro")]
            if fstype == "cgroup" and all(o.startswith("name=") for o in kept):
                kept.insert(0, "none")  # a named hierarchy without controllers
            found.append((point, fstype, ",".join(kept)))
    return found


def cgroup_trees() -> list[Path]:
    return [tree for point, _, _ in cgroup_mounts() for name in CGROUP_TREES
            if (tree := Path(point) / name).is_dir()]


def cgroup_pids() -> set[int]:
    """The processes in kubelet's and containerd's cgroups: the pods' containers."""
    found = set()
    for tree in cgroup_trees():
        for directory, _, _ in os.walk(tree):
            with contextlib.suppress(OSError, ValueError):  # gone meanwhile
                found |= {int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()}
    return found - ancestors()


def remove_cgroup_trees() -> None:
    for tree in cgroup_trees():
        for directory, _, _ in sorted(os.walk(tree), key=lambda w: -len(w[0])):
            for _ in range(20):  # a cgroup stays busy a moment after its last process ended
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.1)


def signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)


def stop(pids: set[int], grace: float) -> list[str]:
    """SIGTERM, then SIGKILL after `grace` seconds; the names of those that needed it."""
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (pids := {p for p in pids if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = sorted(command_name(p) for p in pids)
    signal_all(pids, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (pids := {p for p in pids if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed


def kill_pods(timeout: float = 10) -> int:
    """SIGKILL the pods' processes until their cgroups are empty (a container may still be
    starting); how many there were."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while (pids := {p for p in cgroup_pids() if running(p)}) and time.monotonic() < deadline:
        signal_all(pids, signal.SIGKILL)
        killed |= pids
        time.sleep(0.1)
    return len(killed)


# -- the cluster on the machine: stopping it, what is left of it ------------------------------


def read_sysctls(names: Sequence[str]) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):  # absent on this kernel (no br_netfilter, say)
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def host_mounts_left(layout: Layout) -> list[str]:
    """The cluster's mounts on the machine (everything is mounted inside the private mount
    namespace: any such mount has leaked). Never one that was there when `up` began."""
    roots = [str(layout.state), *LEAK_PATHS]
    before = set(layout.read_machine().get("mounts", []))
    return [point for point, *_ in mountinfo() if point not in before
            and any(point == r or point.startswith(r + "/") for r in roots)]


def stop_cluster(layout: Layout, record: dict[str, Any]) -> str:
    """Stop every process of the cluster at `layout` (recorded, marked, in its namespaces,
    in its cgroups), remove its cgroups, unmount what the machine holds of it and the mount
    points `up` made. Says what it stopped."""
    recorded = {name: c["pid"] for name, c in record.get("components", {}).items()
                if running(c["pid"], c.get("start"))}
    stopped, killed = 0, []

    def stop_recorded(*names: str) -> None:
        nonlocal stopped
        if pids := {recorded.pop(name) for name in names if name in recorded}:
            killed.extend(stop(pids, STOP_GRACE))
            stopped += len(pids)

    # kubelet first, so that it restarts no container while the pods are stopped.
    stop_recorded("kubelet")
    stopped += kill_pods()
    # The API server's clients, then the API server before etcd (its requests in flight
    # would wait for etcd), then the rest: etcd, containerd, the shims, the holder.
    stop_recorded("kube-proxy", "kube-scheduler", "kube-controller-manager", "helper")
    stop_recorded("kube-apiserver")
    rest = set(recorded.values()) | members(layout.state, record)
    stopped += len(rest)
    killed += stop(rest, STOP_GRACE)
    stopped += kill_pods()  # containers whose shim went first
    remove_cgroup_trees()
    for point in sorted(host_mounts_left(layout), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    machine = layout.read_machine()
    if machine.get("created_dirs"):
        for directory in machine["created_dirs"]:
            with contextlib.suppress(OSError):  # not empty: leftovers() says so
                os.rmdir(directory)
        machine["created_dirs"] = [d for d in machine["created_dirs"] if os.path.lexists(d)]
        layout.write_machine(machine)
    if not stopped:
        return ""
    return f"{stopped} processes" + (f" ({', '.join(killed)} after SIGKILL)" if killed else "")


def leftovers(layout: Layout, record: dict[str, Any]) -> list[str]:
    """What of the cluster is still on the machine, one phrase each."""
    found = []
    procs = members(layout.state, record) | cgroup_pids()
    procs |= {c["pid"] for c in record.get("components", {}).values()
              if running(c["pid"], c.get("start"))}
    if procs:
        found.append(f"processes still running: {' '.join(map(str, sorted(procs)))}")
    if held := [p for p in all_pids() if in_namespaces(p, layout.state, record)]:
        found.append(f"the cluster's namespaces are still held by {' '.join(map(str, held))}")
    if mounts := host_mounts_left(layout):
        found.append(f"mounts left: {' '.join(mounts)}")
    if trees := cgroup_trees():
        found.append(f"cgroups left: {' '.join(map(str, trees))}")
    if dirs := layout.read_machine().get("created_dirs", []):
        found.append(f"directories made by up left (not empty?): {' '.join(dirs)}")
    return found


def changed_sysctls(layout: Layout) -> list[str]:
    recorded: dict[str, str] = layout.read_machine().get("sysctls", {})
    now = read_sysctls(list(recorded))
    return [f"{name.replace('/', '.')} is {now.get(name)} (was {value})"
            for name, value in recorded.items() if now.get(name) != value]
