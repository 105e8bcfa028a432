"""Start and stop the local single-node Kubernetes 1.20.2 test cluster: a "kind without Docker".

    .venv/bin/python -m tests.k8s.cluster up|down|status [--state DIR]

What `up` runs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CRI,
runc, CNI bridge), kubelet and kube-proxy, and the stand-ins for the cluster DNS and a volume
provisioner (tests/k8s/addons.py, one process), all inside one network namespace made here and
one private mount namespace, both held by a long-lived `sleep` (the holder) and entered with
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

One user at a time (tests/k8s/lock.py): `up` takes the state directory's lock and keeps it
until `down` (a test session), or hands it to the cluster's holder (the `up` command, for
`make k8s-up`); when another process holds it, `up` and `down` stop with one line naming it
instead of stopping a cluster in use. `up` and `down` also refuse while a cluster of another
state directory runs (they would share the machine's cgroup trees).

From Python (the pytest fixture): `up(state) -> ClusterInfo`, `down(state)`, `info(state)` for
a cluster already up, `attach(state)` for one a test session shares, `load_image(archive)` to
import an OCI archive into its containerd, `prepare()` to install and build what `up` needs
before it is called.

This module holds the commands; the rest is in: `layout` (addresses, names, the state
directory, ClusterError), `machine` (the cluster's processes, mounts, cgroups and kernel
settings as the machine sees them: stopping them, checking nothing is left), `pki`
(certificates, kubeconfigs), `components` (configuration files, the namespaces and each
daemon with its flags).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lock
from .build import DEFAULT_CACHE, Builder, BuildError, installed
from .components import Api, Starter
from .layout import (
    API_SERVICE_IP,
    CNI_BIN,
    COMPONENTS,
    DEFAULT_STATE,
    DNS_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    PATH,
    PAUSE_IMAGE,
    STATE_MARK,
    Clock,
    ClusterError,
    Layout,
    default_cache,
    default_state,
)
from .machine import (
    cgroup_mounts,
    changed_sysctls,
    leftovers,
    members,
    other_clusters,
    running,
    stop_cluster,
)
from .pki import kubeconfig

# The entry point's API (ClusterError comes from .layout, shared by all the modules).
__all__ = ["Clock", "ClusterError", "ClusterInfo", "attach", "default_cache", "default_state",
           "down", "info", "load_image", "main", "prepare", "status", "up"]

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "conntrack", "iptables")
COMMANDS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
            "mount": "mount", "ctr": "containerd", "runc": "runc"}

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


# -- the commands ------------------------------------------------------------------------------


def check_state(state: Path) -> None:
    """Only a directory of ours is cleaned and wiped."""
    if (state.is_dir() and any(e.name != lock.LOCK_NAME for e in state.iterdir())
            and not (state / STATE_MARK).exists()):
        raise ClusterError(f"{state} is not empty and not a cluster state directory "
                           f"(no {STATE_MARK}); choose a new or empty --state")


def check_alone(layout: Layout) -> None:
    """No cluster of another state directory runs here: they would share the machine's
    cgroup trees, and this one's clean-up would kill the other's pods."""
    if others := other_clusters(layout.state):
        said = "; ".join(f"{state} (pids {' '.join(map(str, pids[:5]))})"
                         for state, pids in sorted(others.items()))
        raise ClusterError(f"another local cluster runs on this machine, of state {said}: "
                           "one at a time; stop it first")


def lock_for(layout: Layout, doing: str) -> None:
    """Take the state directory's lock for this process, or fail naming who holds it."""
    try:
        if lock.take(layout.state) is not None:
            return
    except PermissionError:
        raise ClusterError(f"cannot lock {lock.path(layout.state)}: permission denied (the "
                           "local cluster needs root)") from None
    raise ClusterError(f"not {doing} the cluster at {layout.state}: {busy(layout)}")


def busy(layout: Layout) -> str:
    """Who holds the lock of `layout`'s cluster, and what to do about it."""
    owner = lock.owner(layout.state)
    if owner is None:
        return "its lock is free now; try again"
    record = layout.read_record()
    holder = record.get("components", {}).get("holder", {}).get("pid")
    if owner.pid == holder:
        return (f"it is up and holds its own lock ({owner}); use it (PAXOSKV_K8S_EXISTING=1 "
                "for the tests) or stop it first (make k8s-down)")
    return f"it is in use by {owner}"


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


def up(state: Path | None = None, cache: Path | None = None, clock: Clock | None = None,
       detach: bool = False) -> ClusterInfo:
    """Start the cluster (after cleaning what an earlier run left) with its DNS and volume
    stand-ins, and wait until its node is Ready, kube-proxy has programmed the Services, the
    stand-ins serve and pods can be created.

    The state directory's lock is taken first: when another process holds it (a test
    session whose cluster is up, or a cluster `make k8s-up` started), ClusterError names it
    and nothing is stopped. This process keeps the lock until `down`, or its end; with
    `detach`, the cluster's holder process takes it over and keeps it for the cluster's
    life (for a command that returns, like `make k8s-up`)."""
    clock = clock or Clock()
    layout = Layout((state or default_state()).absolute())
    check_state(layout.state)
    lock_for(layout, "starting")
    try:
        check_machine()
        check_alone(layout)
        clean_earlier(layout, clock)
        bin_dir = prepare(cache, clock)
    except BaseException:
        lock.release(layout.state)
        raise
    starter = Starter(layout, bin_dir, clock)
    try:
        starter.prepare()
        starter.start_holder(lock.take(layout.state) if detach else None)
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
                  "kubelet, kube-proxy, the DNS and volume stand-ins")
        starter.start_controllers()
        starter.start_node()
        starter.start_addons()
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
        starter.wait_for("the DNS and volume stand-ins serve", starter.addons_ready, 60,
                         str(layout.log("addons")))
        starter.wait_for("kube-proxy has programmed the kube-dns Service",
                         lambda: starter.services_programmed(DNS_SERVICE_IP), 30,
                         str(layout.log("kube-proxy")))
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
        lock.release(layout.state)
        raise
    if detach:
        lock.hand_over(layout.state, starter.holder, f"the holder of the cluster that pid "
                       f"{os.getpid()} ({lock.command_line(os.getpid())}) started")
        lock.release(layout.state)
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


def attach(state: Path | None = None, cache: Path | None = None) -> ClusterInfo:
    """The cluster already up at `state`, for a test session that shares it and leaves it
    running (PAXOSKV_K8S_EXISTING): ClusterError if it is not up, if its stand-ins are not
    serving, or if another test session owns it (it would stop it when that one ends)."""
    cluster = info(state, cache)
    layout = Layout(cluster.state)
    record = layout.read_record()
    addons = record["components"].get("addons")
    if not addons or not running(addons["pid"], addons.get("start")):
        raise ClusterError(f"the cluster at {layout.state} has no DNS and volume stand-ins "
                           f"running (see {layout.log('addons')}); restart it: make k8s-down "
                           "k8s-up")
    owner = lock.owner(layout.state)
    if owner is not None and owner.pid not in members(layout.state, record):
        raise ClusterError(f"the cluster at {layout.state} belongs to another test session, "
                           f"{owner}, and stops when it ends")
    return cluster


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
    """Stop the cluster and check the machine is as `up` found it; ClusterError if not.
    Refused (ClusterError naming it) when a process other than the cluster's own holds its
    lock: a test session whose cluster it is."""
    clock = clock or Clock()
    layout = Layout((state or default_state()).absolute())
    check_state(layout.state)
    if not layout.state.is_dir():
        clock.say(f"nothing was running (no {layout.state})")
        return
    record = layout.read_record()
    try:
        taken = lock.take(layout.state)
    except PermissionError:
        raise ClusterError("stopping the local cluster needs root") from None
    if taken is None:  # held: only by the cluster itself (make k8s-up's) may it be stopped
        owner = lock.owner(layout.state)
        if owner is not None and owner.pid not in members(layout.state, record):
            raise ClusterError(f"not stopping the cluster at {layout.state}: it is in use by "
                               f"{owner}")
    try:
        _down(layout, record, clock, locked=taken is not None)
    finally:
        lock.release(layout.state)


def _down(layout: Layout, record: dict[str, Any], clock: Clock, locked: bool) -> None:
    if os.geteuid() != 0:
        raise ClusterError("stopping the local cluster needs root")
    check_alone(layout)
    stopped = stop_cluster(layout, record)
    if not locked:  # the cluster's holder had it: gone with it, so ours until the end
        lock.take(layout.state, wait=5)
    clock.say(f"stopped {stopped}" if stopped else "nothing was running")
    problems = leftovers(layout, record) + [f"kernel setting {c}"
                                            for c in changed_sysctls(layout)]
    if problems:
        raise ClusterError("the machine is not as it was: " + "; ".join(problems))
    layout.record.unlink(missing_ok=True)
    clock.say("clean: no process, mount, namespace or cgroup of the cluster left; "
              "kernel settings as recorded at up")


def dns_answer(holder: int) -> str:
    """What the cluster DNS (through its Service's address, from the node) says
    kubernetes.default.svc.cluster.local is."""
    try:
        answer = subprocess.run(
            ["nsenter", "-t", str(holder), "-n", "--", sys.executable, "-c",
             "from tests.k8s import dns, layout; print(*dns.lookup((layout.DNS_SERVICE_IP, "
             "53), 'kubernetes.default.svc.cluster.local'))"],
            capture_output=True, text=True, timeout=10,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return ""
    return answer.stdout.strip()


def status(state: Path | None = None) -> bool:
    """One line per component; whether all run."""
    layout = Layout((state or default_state()).absolute())
    record = layout.read_record()
    owner = lock.owner(layout.state)
    said = ("held by this process" if lock.held_here(layout.state) else
            f"held by {owner}" if owner else "free")
    print(f"{'lock':<24} {said}")
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
        found = dns_answer(record["components"]["holder"]["pid"])
        dns_ok = found == API_SERVICE_IP
        all_up &= dns_ok
        print(f"{'DNS stand-in':<24} {'answers' if dns_ok else 'silent':<8} {'':<12} "
              f"{DNS_SERVICE_IP}:53 (kubernetes.default.svc.cluster.local: {found or '-'})")
    return all_up


def usage(cluster: ClusterInfo) -> str:
    return (f"# DNS: {DNS_SERVICE_IP} (a stand-in; *.svc.cluster.local); volumes: default "
            f"StorageClass standard (a stand-in, hostPath)\n"
            f"export KUBECONFIG={cluster.kubeconfig}\n"
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
            cluster = up(args.state, args.cache, clock, detach=True)
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
