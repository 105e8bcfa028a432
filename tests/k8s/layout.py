"""The local Kubernetes test cluster (tests/k8s/cluster.py): its fixed names and addresses,
the paths it covers on the machine, its state directory's layout, and the error and progress
lines every part of it uses."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import DEFAULT_CACHE

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
DNS_SERVICE_IP = "10.96.0.10"  # the cluster DNS stand-in's Service (tests/k8s/addons.py)
API_PORT = 6443
PAUSE_IMAGE = "localhost/pause:3.4"  # built from the source tree's build/pause (TAG 3.4)
CNI_BIN = Path("/usr/lib/cni")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MEMBER_ENV = "PAXOSKV_K8S_MEMBER"  # set to the state directory in every daemon's environment
NICE = ("nice", "-n", "5")
COMPONENTS = ("holder", "helper", "etcd", "kube-apiserver", "containerd",
              "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "addons")
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
        self.addons_ready = s / "addons.ready"  # written by the stand-ins once they serve

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
