"""Start and stop the local single-node Kubernetes 1.20.2 test cluster: a "kind without Docker".

    .venv/bin/python -m tests.k8s.cluster up|down|status [--state DIR]

What `up` runs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CRI,
runc, CNI bridge), kubelet and kube-proxy, all inside one network namespace made here and one
private mount namespace, both held by a long-lived `sleep` (the holder) and entered with
nsenter. Nothing leaves the namespace: its only way out is a default route to a gateway that
never answers. The one opening is on loopback: a small forwarder listens on 127.0.0.1 of the
machine and connects to the API server inside, so the kubeconfig (`<state>/kubeconfig`) works
from the machine with the cached kubectl, and so do tests.

Why a private mount namespace: kubelet and containerd write to fixed paths and to global
kernel settings. Inside it, tmpfs or the state directory cover those paths (/var/lib/kubelet,
/var/lib/cni, /run, /var/log/pods, /var/log/containers), files holding the values
kubelet wants cover the /proc/sys entries it would otherwise rewrite for the whole machine,
and /sys is mounted afresh for the network namespace (with the cgroup hierarchies mounted
again under it). When the namespace's last process ends, all of it goes with it.

`down` stops everything by PID (the shims and the pods' processes too), removes the cgroups
kubelet made and the empty directories `up` made as mount points, then checks that the
machine is as `up` found it: no process, mount, namespace or cgroup left, the kernel settings
unchanged. `up` first cleans what a crashed run left. Binaries come from tests.k8s.build's
cache (built there once); missing Debian packages (containerd, runc, ...) are installed.

Where: the state directory is /var/lib/paxoskv-k8s unless `--state` or PAXOSKV_K8S_STATE names
another; logs go to `<state>/logs/<component>.log` (the previous run's to `logs.previous/`),
PIDs to `<state>/pids.json`. One cluster per machine at a time. Needs root, cgroup v1.

From Python (the pytest fixture): `up(state) -> ClusterInfo`, `down(state)`, `info(state)` for
a cluster already up, `load_image(archive)` to import an OCI archive into its containerd.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import errno
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .build import DEFAULT_CACHE, Builder, BuildError, installed

DEFAULT_STATE = Path("/var/lib/paxoskv-k8s")
STATE_MARK = ".paxoskv-k8s-state"  # a state directory's mark: only such a directory is wiped
NODE_NAME = "paxoskv-k8s"
NODE_IP = "10.200.0.1"
NODE_PREFIX = 24
GATEWAY = "10.200.0.254"  # nobody has this address: the namespace's way out leads nowhere
NODE_LINK, PEER_LINK = "k8s-node", "k8s-gw"
CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"  # the node's share of CLUSTER_CIDR
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"  # the cluster DNS stand-in's Service (deployed by the tests)
API_PORT = 6443
PAUSE_IMAGE = "localhost/pause:3.4"  # built from the source tree's build/pause (TAG 3.4)
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "conntrack", "iptables")
COMMANDS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
            "mount": "mount", "ctr": "containerd", "runc": "runc"}
CNI_BIN = Path("/usr/lib/cni")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MEMBER_ENV = "PAXOSKV_K8S_MEMBER"  # set to the state directory in every daemon's environment
NICE = ("nice", "-n", "5")
COMPONENTS = ("holder", "helper", "etcd", "kube-apiserver", "containerd",
              "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
# What kubelet 1.20 sets for the whole machine (pkg/kubelet/cm: setupKernelTunables).
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
# Set inside the namespace; recorded on the machine too, to check nothing reached it.
NETNS_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "1",
                 "net/bridge/bridge-nf-call-iptables": "1"}
# Paths kubelet and containerd use whatever their flags say, covered inside the mount
# namespace: by a tmpfs (None) or by a directory of the state (its name).
PRIVATE_PATHS: dict[str, str | None] = {
    "/var/lib/kubelet": None,  # device-plugins/ is hard-coded; seccomp/ by default
    "/var/lib/cni": None,  # the CNI library's result cache
    # containerd 1.6 puts shim sockets in /run/containerd/s; mount(8) its utab, iptables its
    # lock there; the Docker stand-in listens on /run/docker.sock.
    "/run": None,
    "/var/log/pods": "logs/pods",
    "/var/log/containers": "logs/containers",
}
# Where a mount of the cluster would show on the machine if one leaked from the private mount
# namespace (none should). Only paths that can be the cluster's: others mount under /run.
LEAK_PATHS = ("/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/run/docker.sock",
              "/var/log/pods", "/var/log/containers")
CGROUP_TREES = ("kubepods", "k8s.io")  # made by kubelet and containerd in every hierarchy
STOP_GRACE = 5.0

# The harness's helper inside the namespace, two small servers in one process:
# - the API forwarder: accepts on a socket the machine's side opened on its loopback (fd
#   argv[1]) and connects to the API server inside (argv[2]:argv[3]);
# - a Docker stand-in on argv[4]: kubelet 1.20's cAdvisor asks Docker for its root directory
#   five times, a second apart, before going on without it: 5 s of every start. The stand-in
#   answers at once with Docker's default root; its version, 0.0.0, makes cAdvisor then
#   decline to use it, as when there is no Docker.
HELPER = r"""
import asyncio, json, socket, sys

async def pump(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass

async def forward(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(sys.argv[2], int(sys.argv[3]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
    for w in (writer, up_writer):
        w.close()

DOCKER = json.dumps({"DockerRootDir": "/var/lib/docker", "Driver": "", "ServerVersion": "0.0.0",
                     "Version": "0.0.0", "ApiVersion": "1.40"}).encode()

async def docker(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")  # any request gets the same answer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Api-Version: 1.40\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(DOCKER), DOCKER))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    writer.close()

async def main():
    api = await asyncio.start_server(forward, sock=socket.socket(fileno=int(sys.argv[1])))
    stand_in = await asyncio.start_unix_server(docker, path=sys.argv[4])
    await asyncio.gather(api.serve_forever(), stand_in.serve_forever())

asyncio.run(main())
"""


class ClusterError(Exception):
    """An expected failure (a missing prerequisite, a component that did not start, a machine
    not left clean), said in one line."""


class Clock:
    """Progress lines on stderr, with the seconds since the command started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        print(f"k8s-cluster: [{self.elapsed():5.1f} s] {message}", file=sys.stderr, flush=True)


# -- processes and namespaces --------------------------------------------------------------

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # daemons this process started: reaped here


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


# -- the state directory ---------------------------------------------------------------------


def default_state() -> Path:
    return Path(os.environ.get("PAXOSKV_K8S_STATE") or DEFAULT_STATE).absolute()


def default_cache() -> Path:
    return Path(os.environ.get("PAXOSKV_K8S_CACHE") or DEFAULT_CACHE).absolute()


@dataclass
class Layout:
    """Where things are in the state directory."""

    state: Path

    def __post_init__(self) -> None:
        s = self.state
        self.record = s / "pids.json"
        self.machine = s / "machine.json"
        self.kubeconfig = s / "kubeconfig"
        self.logs = s / "logs"
        self.pki = s / "pki"
        self.configs = s / "configs"
        self.etcd = s / "etcd"
        self.kubelet = s / "kubelet"
        self.sysctl = s / "sysctl"
        self.containerd = s / "containerd"
        self.socket = self.containerd / "containerd.sock"
        self.cni = s / "cni"
        self.images = s / "images"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def read_record(self) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        record.setdefault("components", {})
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        write_atomic(self.record, json.dumps(record, indent=2) + "\n")

    def read_machine(self) -> dict[str, Any]:
        """What `up` found on the machine: kernel settings, mount points, and the directories
        it made there (kept from run to run until removed, should a run crash)."""
        try:
            machine: dict[str, Any] = json.loads(self.machine.read_text())
        except (OSError, ValueError):
            return {}
        return machine

    def write_machine(self, machine: dict[str, Any]) -> None:
        write_atomic(self.machine, json.dumps(machine, indent=2) + "\n")


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(mode)
    partial.replace(path)


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


# -- certificates, tokens, configuration -----------------------------------------------------


class Pki:
    """A CA and the certificates and keys the cluster needs, as PEM files in one directory
    (ECDSA P-256: quick to make, and every component takes it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paxoskv-k8s-ca")])
        ca = (self.builder(self.ca_name, self.ca_name, self.ca_key.public_key(), ca=True)
              .sign(self.ca_key, hashes.SHA256()))
        self.write("ca", self.ca_key, ca)

    def builder(self, subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
                *, ca: bool) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(issuer).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                    crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                               critical=False))

    def issue(self, name: str, cn: str, orgs: Sequence[str] = (), *, server: bool = False,
              dns: Sequence[str] = (), ips: Sequence[str] = ()) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                             *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (self.builder(subject, self.ca_name, key.public_key(), ca=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.ca_key.public_key()), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if dns or ips:
            names: list[x509.GeneralName] = [
                *(x509.DNSName(d) for d in dns),
                *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        self.write(name, key, builder.sign(self.ca_key, hashes.SHA256()))

    def service_account_keys(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self.write("sa", key)
        (self.directory / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def write(self, name: str, key: ec.EllipticCurvePrivateKey,
              cert: x509.Certificate | None = None) -> None:
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        write_atomic(self.directory / f"{name}.key", pem.decode(), 0o600)
        if cert is not None:
            (self.directory / f"{name}.crt").write_bytes(
                cert.public_bytes(serialization.Encoding.PEM))


def kubeconfig(server: str, ca: Path, user: str, token: str) -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "paxoskv-k8s",
        "clusters": [{"name": "paxoskv-k8s", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "paxoskv-k8s",
                      "context": {"cluster": "paxoskv-k8s", "user": user}}],
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML: kubectl reads it as is


def containerd_config(layout: Layout) -> str:
    c = layout.containerd
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{layout.socket}"

[ttrpc]
  address = "{layout.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  # The machine's capability bounding set lacks CAP_SYS_RESOURCE: without this, runc fails
  # every sandbox ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{c / 'runc'}"

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{layout.cni / 'net.d'}"
  max_conf_num = 1
"""


def cni_config(layout: Layout) -> str:
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "paxoskv-k8s",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(layout.cni / "networks"),
                      "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def pause_archive(pause: Path, archive: Path) -> None:
    """The pause image: an OCI image-layout tar with one uncompressed layer holding /pause."""
    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        data = pause.read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    layer = blob(layer_io.getvalue())
    platform = {"architecture": "amd64", "os": "linux"}
    config = blob(json.dumps({
        **platform, "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer[0]]}}).encode())
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config[0], "size": len(config[1])},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer[0], "size": len(layer[1])}]}).encode())
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest[0],
        "size": len(manifest[1]), "platform": platform,
        "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                        "org.opencontainers.image.ref.name": PAUSE_IMAGE}}]}).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", index),
                           *((f"blobs/sha256/{d.removeprefix('sha256:')}", b)
                             for d, b in (layer, config, manifest))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- the cluster as the tests see it ----------------------------------------------------------


@dataclass
class ClusterInfo:
    """A running cluster: what a test needs to use it."""

    state: Path
    kubeconfig: Path  # for the machine's side: the API through the loopback forwarder
    kubectl: Path  # the 1.20.2 one built with the rest
    node_ip: str
    server: str  # the API server's URL on the machine's loopback
    holder: int  # the PID whose namespaces the cluster runs in
    containerd_socket: Path

    def enter(self) -> list[str]:
        """The command prefix that runs a command inside the cluster's namespaces."""
        return ["nsenter", "-t", str(self.holder), "-m", "-n", "--"]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside the cluster's network (and mount) namespace, where pod and
        Service addresses are reachable."""
        return subprocess.run([*self.enter(), *argv], **kwargs)

    def kubectl_command(self) -> list[str]:
        """kubectl for this cluster, from the machine, with KUBECONFIG set to `kubeconfig`
        (its discovery cache in the state directory, not in ~/.kube: each cluster has a new
        port)."""
        return [str(self.kubectl), f"--cache-dir={self.state / 'kubectl-cache'}"]

    def kubectl_run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run kubectl against the cluster, from the machine."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **kwargs.pop("env", {})}
        return subprocess.run([*self.kubectl_command(), *args], env=env, **kwargs)


class Api:
    """Just enough of an API client for `up` and `status`, with the admin token."""

    def __init__(self, server: str, ca: Path, token: str) -> None:
        self.server, self.token = server, token
        context = ssl.create_default_context(cafile=str(ca))
        # No proxy: the machine's proxy settings must not catch a loopback address.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPSHandler(context=context))

    def get(self, path: str) -> bytes | None:
        request = urllib.request.Request(self.server + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with self.opener.open(request, timeout=5) as response:
                body: bytes = response.read()
                return body
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return None

    def patch(self, path: str, patch: Any) -> bool:
        request = urllib.request.Request(
            self.server + path, data=json.dumps(patch).encode(), method="PATCH",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/merge-patch+json"})
        try:
            with self.opener.open(request, timeout=5):
                return True
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def get_json(self, path: str) -> Any:
        body = self.get(path)
        try:
            return json.loads(body) if body is not None else None
        except ValueError:
            return None

    def node_ready(self) -> bool:
        node = self.get_json(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# -- starting ---------------------------------------------------------------------------------


@dataclass
class Starter:
    """One `up`: the state directory filled, the namespaces made, the daemons started."""

    layout: Layout
    bin: Path
    clock: Clock
    record: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def holder(self) -> int:
        pid: int = self.record["components"]["holder"]["pid"]
        return pid

    def env(self) -> dict[str, str]:
        # A clean environment: no proxy variables (client-go would send the node's API
        # traffic to a proxy), and the mark that finds every daemon again after a crash.
        return {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8",
                MEMBER_ENV: str(self.layout.state)}

    def save(self) -> None:
        self.layout.write_record(self.record)

    def spawn(self, name: str, argv: Sequence[str], *, enter: bool = True,
              pass_fds: Sequence[int] = ()) -> None:
        command = [*(["nsenter", "-t", str(self.holder), "-m", "-n", "--"] if enter else []),
                   *NICE, *argv]
        log = self.layout.log(name)
        with log.open("a") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            # A session of its own: a daemon outlives the command that started it.
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env(),
                                    start_new_session=True, pass_fds=tuple(pass_fds))
        _CHILDREN[proc.pid] = proc
        self.procs[name] = proc
        self.record["components"][name] = {"pid": proc.pid, "start": start_time(proc.pid)}
        self.save()

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float, log: str) -> None:
        """Wait until `ready()`, failing at once when a daemon started so far has exited."""
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited (code {proc.returncode}) before {what}; "
                                       f"see {self.layout.log(name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{what}: not within {timeout:.0f} s; see {log}")
            time.sleep(0.2)

    # -- preparing --------------------------------------------------------------------------

    def prepare(self) -> None:
        """A fresh state directory (the previous logs kept aside), the machine's kernel
        settings recorded, certificates, tokens and every configuration file."""
        state, layout = self.layout.state, self.layout
        state.mkdir(parents=True, exist_ok=True)
        (state / STATE_MARK).touch()
        made_before = layout.read_machine().get("created_dirs", [])  # a crashed run's
        previous = state / "logs.previous"
        for entry in state.iterdir():
            if entry.name in (STATE_MARK, "logs", "logs.previous"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if layout.logs.exists():
            shutil.rmtree(previous, ignore_errors=True)
            layout.logs.rename(previous)
        for directory in (layout.logs / "pods", layout.logs / "containers", layout.configs,
                          layout.etcd, layout.kubelet, layout.sysctl, layout.cni / "net.d",
                          layout.containerd, layout.images):
            directory.mkdir(parents=True, exist_ok=True)
        self.machine = {"sysctls": read_sysctls([*KUBELET_SYSCTLS, *NETNS_SYSCTLS]),
                        "mounts": sorted({point for point, *_ in mountinfo()}),
                        "created_dirs": made_before}
        layout.write_machine(self.machine)
        self.record = {"state": str(state), "components": {}, "node_ip": NODE_IP}
        self.save()

        pki = Pki(layout.pki)
        pki.issue("apiserver", "kube-apiserver", server=True,
                  dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", "localhost", NODE_NAME],
                  ips=["127.0.0.1", NODE_IP, API_SERVICE_IP])
        pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                  ["system:masters"])
        pki.service_account_keys()
        users = {"admin": ("paxoskv-k8s-admin", "system:masters"),
                 "kube-controller-manager": ("system:kube-controller-manager", ""),
                 "kube-scheduler": ("system:kube-scheduler", ""),
                 "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
                 "kube-proxy": ("system:kube-proxy", "")}
        lines = []
        for component, (user, groups) in users.items():
            self.tokens[component] = secrets.token_hex(16)
            line = f"{self.tokens[component]},{user},{user}"
            lines.append(f'{line},"{groups}"' if groups else line)
            # Inside the namespace: the control plane on its loopback, the node's daemons
            # on the node's address as on a real node.
            local = component in ("kube-controller-manager", "kube-scheduler", "admin")
            server = f"https://{'127.0.0.1' if local else NODE_IP}:{API_PORT}"
            (layout.configs / f"{component}.kubeconfig").write_text(
                kubeconfig(server, layout.pki / "ca.crt", user, self.tokens[component]))
        write_atomic(layout.pki / "tokens.csv", "\n".join(lines) + "\n", 0o600)
        (layout.configs / "containerd.toml").write_text(containerd_config(layout))
        (layout.cni / "net.d" / "10-paxoskv-k8s.conflist").write_text(cni_config(layout))
        (layout.configs / "resolv.conf").write_text(f"nameserver {DNS_SERVICE_IP}\n")
        (layout.configs / "machine-resolv.conf").write_text("nameserver 127.0.0.1\n")
        for name, value in KUBELET_SYSCTLS.items():
            (layout.sysctl / name.replace("/", ".")).write_text(value + "\n")
        pause_archive(self.bin / "pause", layout.images / "pause.oci.tar")

    # -- the namespaces ---------------------------------------------------------------------

    def start_holder(self) -> None:
        """The holder: `sleep` in a new network and a new private mount namespace."""
        for path in PRIVATE_PATHS:  # mount points; removed again by down
            missing: list[str] = []
            for parent in [Path(path), *Path(path).parents]:
                if parent.exists():
                    break
                missing.append(str(parent))
            for directory in reversed(missing):  # the deepest first in the record
                os.mkdir(directory, 0o755)
                self.machine["created_dirs"].insert(0, directory)
                self.layout.write_machine(self.machine)
        self.spawn("holder", ["unshare", "--net", "--mount", "--propagation", "private",
                              "--", "sleep", "infinity"], enter=False)
        holder, machine_net = self.holder, ns_inode("self", "net")
        self.wait_for("the holder's namespaces exist",
                      lambda: (ns_inode(holder, "net") not in (None, machine_net)
                               and os.path.realpath(f"/proc/{holder}/exe").endswith("/sleep")),
                      5, str(self.layout.log("holder")))
        self.record["net"] = ns_inode(holder, "net")
        self.record["mnt"] = ns_inode(holder, "mnt")
        self.save()

    def setup_namespace(self) -> None:
        """Links, routes and sysctls of the network namespace; the mounts of the private
        mount namespace. One shell script, traced into logs/namespace.log."""
        layout = self.layout
        commands: list[list[str]] = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", PEER_LINK],
            ["ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", NODE_LINK],
            ["ip", "link", "set", NODE_LINK, "up"],
            ["ip", "link", "set", PEER_LINK, "up"],
            ["ip", "route", "add", "default", "via", GATEWAY, "dev", NODE_LINK],
            # kubelet's cloud credential probe would otherwise wait 6 s for 169.254.169.254.
            ["ip", "route", "add", "unreachable", "169.254.0.0/16"],
            *(["sh", "-c", f"echo {v} > /proc/sys/{k}"] for k, v in NETNS_SYSCTLS.items()),
            # A sysfs of this network namespace hides the cgroup hierarchies: mount them again.
            ["mount", "-t", "sysfs", "sysfs", "/sys"],
            ["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", "/sys/fs/cgroup"],
        ]
        for point, fstype, options in cgroup_mounts():
            commands += [["mkdir", "-p", point],
                         ["mount", "-t", fstype, *(["-o", options] if options else []),
                          fstype, point]]
        for link in Path("/sys/fs/cgroup").iterdir():
            if link.is_symlink():  # cpu -> cpu,cpuacct on some machines
                commands.append(["ln", "-s", os.readlink(link), str(link)])
        for path, source in PRIVATE_PATHS.items():
            commands.append(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", path]
                            if source is None else
                            ["mount", "--bind", str(layout.state / source), path])
        commands.append(["mount", "-t", "tmpfs", "-o", "mode=700,size=1g", "tmpfs",
                         str(layout.etcd)])  # etcd's data need no disk: the cluster is new
        # The machine's nameserver is out of reach from here: a lookup (cAdvisor's cloud
        # probe at kubelet's start, say) would wait 5 s for nothing. On loopback it fails
        # at once.
        if Path("/etc/resolv.conf").resolve().is_file():
            commands.append(["mount", "--bind", str(layout.configs / "machine-resolv.conf"),
                             "/etc/resolv.conf"])
        for name in KUBELET_SYSCTLS:
            commands.append(["mount", "--bind", str(layout.sysctl / name.replace("/", ".")),
                             f"/proc/sys/{name}"])
        script = "set -ex\n" + "".join(shlex.join(c) + "\n" for c in commands)
        log = layout.log("namespace")
        with log.open("a") as out:
            code = subprocess.run(["nsenter", "-t", str(self.holder), "-m", "-n", "--",
                                   "sh", "-c", script], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=self.env()).returncode
        if code != 0:
            raise ClusterError(f"setting up the namespace failed (exit {code}); see {log}")

    def start_helper(self) -> None:
        """The machine's one way in (127.0.0.1:<free port> to the API server's port inside)
        and the Docker stand-in: see HELPER."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.record["api_port"] = listener.getsockname()[1]
        self.spawn("helper", [sys.executable, "-I", "-c", HELPER, str(listener.fileno()),
                              "127.0.0.1", str(API_PORT), "/run/docker.sock"],
                   pass_fds=[listener.fileno()])
        listener.close()

    # -- the daemons ------------------------------------------------------------------------

    def start_etcd_and_apiserver(self) -> None:
        etcd_url, peer_url = "http://127.0.0.1:2379", "http://127.0.0.1:2380"
        self.spawn("etcd", [
            str(self.bin / "etcd"), "--name=paxoskv-k8s", f"--data-dir={self.layout.etcd}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=paxoskv-k8s={peer_url}", "--logger=zap"])
        pki = self.layout.pki
        # Started together: the API server waits for etcd itself.
        self.spawn("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}",
            f"--etcd-servers={etcd_url}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP"])

    def start_containerd(self) -> None:
        self.spawn("containerd", ["containerd", "--config",
                                  str(self.layout.configs / "containerd.toml")])

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.holder), "-m", "-n", "--", "ctr",
                               "--address", str(self.layout.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, env=self.env())

    def import_pause(self) -> None:
        self.wait_for("containerd answers", lambda: self.layout.socket.exists()
                      and self.ctr("version").returncode == 0,
                      60, str(self.layout.log("containerd")))
        done = self.ctr("images", "import", str(self.layout.images / "pause.oci.tar"))
        if done.returncode != 0 or PAUSE_IMAGE not in self.ctr("images", "ls", "-q").stdout:
            reason = (done.stderr.strip().splitlines() or ["no image by that name"])[-1]
            raise ClusterError(f"importing the pause image failed: {reason}")

    def start_controllers(self) -> None:
        configs, pki = self.layout.configs, self.layout.pki
        for name, extra in [
            # No --allocate-node-cidrs: its node IPAM controller sleeps 10 s before it first
            # lists the nodes, and the controllers started after it (map order: random) wait
            # as long. The harness gives the node its pod CIDR (see give_pod_cidr).
            ("kube-controller-manager", [
                f"--cluster-cidr={CLUSTER_CIDR}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                # Its default is under /usr/libexec, which it would create on the machine.
                f"--flex-volume-plugin-dir={self.layout.state / 'controller-volume-plugins'}"]),
            ("kube-scheduler", []),
        ]:
            config = configs / f"{name}.kubeconfig"
            self.spawn(name, [
                str(self.bin / name), f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
                f"--cert-dir={pki / name}", *extra])

    def start_node(self) -> None:
        configs, pki, kubelet = self.layout.configs, self.layout.pki, self.layout.kubelet
        self.spawn("kubelet", [
            str(self.bin / "kubelet"), f"--kubeconfig={configs / 'kubelet.kubeconfig'}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.layout.socket}",
            "--cgroup-driver=cgroupfs", "--fail-swap-on=false",
            f"--root-dir={kubelet}", f"--cert-dir={kubelet / 'pki'}",
            f"--volume-plugin-dir={kubelet / 'volume-plugins'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--pod-infra-container-image={PAUSE_IMAGE}",
            f"--cluster-dns={DNS_SERVICE_IP}", "--cluster-domain=cluster.local",
            f"--resolv-conf={configs / 'resolv.conf'}", "--read-only-port=0",
            "--anonymous-auth=false", f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Webhook",
            # The disk is shared with the rest of the machine: evict only when nearly full,
            # and never collect images (they cannot be pulled again).
            "--eviction-hard=memory.available<100Mi,nodefs.available<2%,"
            "nodefs.inodesFree<2%,imagefs.available<2%",
            "--image-gc-high-threshold=100", "--image-gc-low-threshold=99",
            # Ready as soon as it is (first PLEG relist), not at the next 10-second tick;
            # status is still sent only when it changes.
            "--node-status-update-frequency=2s"])
        self.spawn("kube-proxy", [
            str(self.bin / "kube-proxy"), f"--kubeconfig={configs / 'kube-proxy.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", "--proxy-mode=iptables",
            f"--cluster-cidr={CLUSTER_CIDR}",
            # It may not change the machine's conntrack settings here: 0 leaves them.
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256"])

    def give_pod_cidr(self, api: Api) -> bool:
        """The node IPAM part of the controller manager, played by the harness: once the node
        has registered, set its pod CIDR (the CNI configuration's subnet). kubelet, which
        watches for it, then reports the node's status at once instead of at its next
        10-second tick."""
        node = api.get_json(f"/api/v1/nodes/{NODE_NAME}")
        if node is None:
            return False
        if node.get("spec", {}).get("podCIDR") == POD_CIDR:
            return True
        return api.patch(f"/api/v1/nodes/{NODE_NAME}",
                         {"spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]}})

    def services_programmed(self) -> bool:
        """Whether kube-proxy has written the rules for the API server's Service."""
        rules = subprocess.run(["nsenter", "-t", str(self.holder), "-n", "--", "iptables",
                                "-w", "-t", "nat", "-S", "KUBE-SERVICES"],
                               capture_output=True, text=True)
        return API_SERVICE_IP in rules.stdout

    def default_account_ready(self, api: Api) -> bool:
        """Whether the controller manager has made the default ServiceAccount and its token:
        until then no pod can be created."""
        account = api.get_json("/api/v1/namespaces/default/serviceaccounts/default")
        return bool((account or {}).get("secrets"))


# -- the commands ------------------------------------------------------------------------------


def check_state(state: Path) -> None:
    """Only a directory of ours is cleaned and wiped."""
    if state.is_dir() and any(state.iterdir()) and not (state / STATE_MARK).exists():
        raise ClusterError(f"{state} is not empty and not a cluster state directory "
                           f"(no {STATE_MARK}); choose a new or empty --state")


def check_machine() -> None:
    if sys.platform != "linux":
        raise ClusterError("the local cluster runs on Linux only")
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (namespaces, mounts, cgroups)")
    if not any(fstype == "cgroup" and "memory" in options.split(",")
               for _, fstype, options in cgroup_mounts()):
        raise ClusterError("no cgroup v1 memory hierarchy under /sys/fs/cgroup: "
                           "Kubernetes 1.20's kubelet needs cgroup v1")


def ensure_packages(clock: Clock) -> None:
    if shutil.which("dpkg-query") is None:
        raise ClusterError("dpkg-query not found: the local cluster needs a Debian machine")
    missing = [p for p in PACKAGES if not installed(p)]
    if missing:
        clock.say(f"installing missing Debian packages: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "-q", "install", "-y", "--no-install-recommends", *missing]
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # the machine's package lists may be empty or stale
            subprocess.run(["apt-get", "-q", "update"], env=env, capture_output=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not all(installed(p) for p in missing):
            reason = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise ClusterError(f"apt-get install {' '.join(missing)} failed: {reason}")
        clock.say(f"installed {' '.join(missing)}")
    for command, package in COMMANDS.items():
        if shutil.which(command, path=PATH) is None:
            raise ClusterError(f"missing prerequisite: {command} (Debian package {package})")
    if not (CNI_BIN / "bridge").exists():
        raise ClusterError(f"missing prerequisite: {CNI_BIN}/bridge "
                           "(Debian package containernetworking-plugins)")


def ensure_binaries(cache: Path) -> Path:
    try:
        builder = Builder(cache)
        builder.build()  # nothing but a check when the cache is complete
    except BuildError as e:
        raise ClusterError(f"building the binaries: {e}") from None
    return builder.bin


def prepare(cache: Path | None = None, clock: Clock | None = None) -> Path:
    """What `up` needs that takes long the first time, done: the machine checked, the missing
    Debian packages installed, the binaries built (about 10 minutes from cold, a check once
    cached). The binaries' directory."""
    clock = clock or Clock()
    check_machine()
    ensure_packages(clock)
    return ensure_binaries((cache or default_cache()).absolute())


def clean_earlier(layout: Layout, clock: Clock) -> None:
    """Stop and remove whatever an earlier run left (crashed or still up)."""
    record = layout.read_record()
    stopped = stop_cluster(layout, record)
    left = leftovers(layout, record)
    if left:
        raise ClusterError(f"cannot clean what an earlier run left: {'; '.join(left)}")
    if stopped:
        clock.say(f"cleaned what an earlier run left: {stopped}")
    if changed := changed_sysctls(layout):
        clock.say(f"warning: kernel settings differ from an earlier run's: {', '.join(changed)}")
    layout.record.unlink(missing_ok=True)


def cluster_info(layout: Layout, bin_dir: Path, record: dict[str, Any]) -> ClusterInfo:
    return ClusterInfo(state=layout.state, kubeconfig=layout.kubeconfig,
                       kubectl=bin_dir / "kubectl", node_ip=record["node_ip"],
                       server=f"https://127.0.0.1:{record['api_port']}",
                       holder=record["components"]["holder"]["pid"],
                       containerd_socket=layout.socket)


def up(state: Path | None = None, cache: Path | None = None,
       clock: Clock | None = None) -> ClusterInfo:
    """Start the cluster (after cleaning what an earlier run left) and wait until its node
    is Ready, kube-proxy has programmed the Services and pods can be created."""
    clock = clock or Clock()
    layout = Layout((state or default_state()).absolute())
    check_machine()
    check_state(layout.state)
    clean_earlier(layout, clock)
    bin_dir = prepare(cache, clock)
    starter = Starter(layout, bin_dir, clock)
    try:
        starter.prepare()
        starter.start_holder()
        starter.setup_namespace()
        starter.start_helper()
        clock.say(f"namespace ready (holder pid {starter.holder}, node {NODE_IP}); "
                  "starting etcd, kube-apiserver, containerd")
        starter.start_etcd_and_apiserver()
        starter.start_containerd()
        starter.import_pause()
        clock.say(f"containerd up, {PAUSE_IMAGE} imported")
        api = Api(f"https://127.0.0.1:{starter.record['api_port']}",
                  layout.pki / "ca.crt", starter.tokens["admin"])
        starter.wait_for("kube-apiserver is ready", lambda: api.get("/readyz") == b"ok", 120,
                         str(layout.log("kube-apiserver")))
        clock.say("kube-apiserver ready; starting the controller manager, the scheduler, "
                  "kubelet, kube-proxy")
        starter.start_controllers()
        starter.start_node()
        starter.wait_for(f"node {NODE_NAME} has registered", lambda: starter.give_pod_cidr(api),
                         60, str(layout.log("kubelet")))
        starter.wait_for(f"node {NODE_NAME} is Ready", api.node_ready, 120,
                         str(layout.log("kubelet")))
        clock.say(f"node {NODE_NAME} Ready")
        starter.wait_for("kube-proxy has programmed the Services", starter.services_programmed,
                         60, str(layout.log("kube-proxy")))
        starter.wait_for("the default ServiceAccount exists",
                         lambda: starter.default_account_ready(api), 60,
                         str(layout.log("kube-controller-manager")))
        layout.kubeconfig.write_text(kubeconfig(api.server, layout.pki / "ca.crt",
                                                "paxoskv-k8s-admin", starter.tokens["admin"]))
        layout.kubeconfig.chmod(0o600)
    except BaseException:
        record = starter.record or layout.read_record()
        if record.get("components"):
            clock.say("start failed: stopping what was started")
        stop_cluster(layout, record)
        if left := leftovers(layout, record):
            clock.say(f"warning: not all cleaned: {'; '.join(left)}")
        raise
    clock.say(f"cluster up in {clock.elapsed():.1f} s")
    return cluster_info(layout, bin_dir, starter.record)


def info(state: Path | None = None, cache: Path | None = None) -> ClusterInfo:
    """The cluster already up at `state` (started by `up`, in this process or another)."""
    layout = Layout((state or default_state()).absolute())
    record = layout.read_record()
    holder = record.get("components", {}).get("holder")
    if not holder or not running(holder["pid"], holder.get("start")) or "api_port" not in record:
        raise ClusterError(f"no cluster is up at {layout.state}")
    return cluster_info(layout, (cache or default_cache()).absolute() / "bin", record)


def load_image(archive: Path, state: Path | None = None) -> list[str]:
    """Import an OCI archive into the cluster's containerd (where kubelet finds it);
    the names of the images imported."""
    cluster = info(state)
    done = cluster.run(["ctr", "--address", str(cluster.containerd_socket), "-n", "k8s.io",
                        "images", "import", str(Path(archive).absolute())],
                       capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise ClusterError(f"importing {archive} failed: {reason}")
    return re.findall(r"^unpacking (\S+) ", done.stdout, re.M)


def down(state: Path | None = None, clock: Clock | None = None) -> None:
    """Stop the cluster and check the machine is as `up` found it; ClusterError if not."""
    clock = clock or Clock()
    layout = Layout((state or default_state()).absolute())
    if os.geteuid() != 0:
        raise ClusterError("stopping the local cluster needs root")
    check_state(layout.state)
    record = layout.read_record()
    stopped = stop_cluster(layout, record)
    clock.say(f"stopped {stopped}" if stopped else "nothing was running")
    problems = leftovers(layout, record) + [f"kernel setting {c}"
                                            for c in changed_sysctls(layout)]
    if problems:
        raise ClusterError("the machine is not as it was: " + "; ".join(problems))
    layout.record.unlink(missing_ok=True)
    clock.say("clean: no process, mount, namespace or cgroup of the cluster left; "
              "kernel settings as recorded at up")


def status(state: Path | None = None) -> bool:
    """One line per component; whether all run."""
    layout = Layout((state or default_state()).absolute())
    record = layout.read_record()
    if not record.get("components"):
        print(f"cluster: not up (no {layout.record})")
        return False
    all_up = True
    for name in COMPONENTS:
        component = record["components"].get(name)
        up_now = bool(component) and running(component["pid"], component.get("start"))
        all_up &= up_now
        pid = f"pid {component['pid']}" if component else "never started"
        print(f"{name:<24} {'running' if up_now else 'stopped':<8} {pid:<12} "
              f"{layout.log(name)}")
    if all_up:
        token = next((line.split(",")[0] for line in
                      (layout.pki / "tokens.csv").read_text().splitlines()
                      if ",paxoskv-k8s-admin," in line), "")
        api = Api(f"https://127.0.0.1:{record['api_port']}", layout.pki / "ca.crt", token)
        ready = api.node_ready()
        all_up &= ready
        print(f"{'node ' + NODE_NAME:<24} {'Ready' if ready else 'NotReady':<8} "
              f"{'':<12} {api.server}")
    return all_up


def usage(cluster: ClusterInfo) -> str:
    return (f"export KUBECONFIG={cluster.kubeconfig}\n"
            f"{cluster.kubectl} get nodes\n"
            f"# inside the cluster's network namespace (pod and Service addresses):\n"
            f"nsenter -t {cluster.holder} -m -n -- <command>\n"
            f"# logs: {cluster.state / 'logs'}/; stop: .venv/bin/python -m tests.k8s.cluster "
            f"down --state {cluster.state}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.cluster", description=(
        "Start, stop or show the local single-node Kubernetes 1.20.2 test cluster."))
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state", type=Path, help="state directory (default: "
                        f"$PAXOSKV_K8S_STATE or {DEFAULT_STATE})")
    parser.add_argument("--cache", type=Path, help="binaries' cache (default: "
                        f"$PAXOSKV_K8S_CACHE or {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    clock = Clock()
    try:
        if args.command == "up":
            cluster = up(args.state, args.cache, clock)
            print(usage(cluster), end="")
        elif args.command == "down":
            down(args.state, clock)
        else:
            return 0 if status(args.state) else 1
    except ClusterError as e:
        clock.say(f"error: {e}")
        return 1
    except PermissionError as e:
        clock.say(f"error: {e.filename}: permission denied")
        return 1
    except OSError as e:
        clock.say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        clock.say("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
