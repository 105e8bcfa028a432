"""The local Kubernetes test cluster's components (tests/k8s/cluster.py): the configuration
files of containerd and CNI, the pause image, the helper inside the namespace (API forwarder,
Docker stand-in), the network namespace and private mount namespace with what covers the
machine's paths, and each daemon with its flags (`Starter`); `Api`, just enough of an API
client to wait for them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
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

from .layout import (
    API_PORT,
    API_SERVICE_IP,
    CLUSTER_CIDR,
    CNI_BIN,
    DNS_SERVICE_IP,
    GATEWAY,
    KUBELET_SYSCTLS,
    MEMBER_ENV,
    NETNS_SYSCTLS,
    NICE,
    NODE_IP,
    NODE_LINK,
    NODE_NAME,
    NODE_PREFIX,
    PATH,
    PAUSE_IMAGE,
    PEER_LINK,
    POD_CIDR,
    PRIVATE_PATHS,
    SERVICE_CIDR,
    STATE_MARK,
    Clock,
    ClusterError,
    Layout,
    write_atomic,
)
from .lock import LOCK_NAME
from .machine import cgroup_mounts, mountinfo, ns_inode, read_sysctls, start_time, track
from .pki import Pki, kubeconfig

REPO = Path(__file__).resolve().parents[2]

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


# -- configuration files ---------------------------------------------------------------------


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


# -- the API, as `up` and `status` ask it ------------------------------------------------------


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
              pass_fds: Sequence[int] = (), env: dict[str, str] | None = None) -> None:
        command = [*(["nsenter", "-t", str(self.holder), "-m", "-n", "--"] if enter else []),
                   *NICE, *argv]
        log = self.layout.log(name)
        with log.open("a") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            # A session of its own: a daemon outlives the command that started it.
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**self.env(), **(env or {})},
                                    start_new_session=True, pass_fds=tuple(pass_fds))
        track(proc)
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
            if entry.name in (STATE_MARK, LOCK_NAME, "logs", "logs.previous"):
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
                 "kube-proxy": ("system:kube-proxy", ""),
                 "stand-ins": ("paxoskv-k8s-stand-ins", "system:masters")}
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

    def start_holder(self, lock_fd: int | None = None) -> None:
        """The holder: `sleep` in a new network and a new private mount namespace; given the
        state's lock (`lock_fd`), it holds it for the cluster's life."""
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
                              "--", "sleep", "infinity"], enter=False,
                   pass_fds=() if lock_fd is None else (lock_fd,))
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
            "--node-status-update-frequency=2s",
            # A deleted pod leaves the API once kubelet's status manager finds it stopped and
            # cleaned up; it looks again at its 10-second tick or when a pod worker resyncs the
            # pod (--sync-frequency, 1 min by default): a pod took 5-12 s to go after its
            # deletion (its container exited at once), 4-5 s with 2 s. The cost: each running
            # pod is resynced every 2-3 s (kubelet 0.84 -> 1.09 CPU seconds a minute with
            # 3 pods). See also the kubelet fix in tests/k8s/build.py.
            "--sync-frequency=2s"])
        self.spawn("kube-proxy", [
            str(self.bin / "kube-proxy"), f"--kubeconfig={configs / 'kube-proxy.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", "--proxy-mode=iptables",
            f"--cluster-cidr={CLUSTER_CIDR}",
            # It may not change the machine's conntrack settings here: 0 leaves them.
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256"])

    def start_addons(self) -> None:
        """The DNS and volume stand-ins, one process inside the namespaces (tests/k8s/addons.py);
        `addons_ready` says when they serve."""
        self.layout.addons_ready.unlink(missing_ok=True)
        # Entering the mount namespace resets the working directory: find `tests` so.
        self.spawn("addons", [sys.executable, "-m", "tests.k8s.addons",
                              "--state", str(self.layout.state)],
                   env={"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})

    def addons_ready(self) -> bool:
        return self.layout.addons_ready.exists()

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

    def services_programmed(self, *addresses: str) -> bool:
        """Whether kube-proxy has written the rules for the Services of these cluster IPs
        (by default the API server's)."""
        rules = subprocess.run(["nsenter", "-t", str(self.holder), "-n", "--", "iptables",
                                "-w", "-t", "nat", "-S", "KUBE-SERVICES"],
                               capture_output=True, text=True)
        return all(f"{ip}/32" in rules.stdout for ip in addresses or (API_SERVICE_IP,))

    def default_account_ready(self, api: Api) -> bool:
        """Whether the controller manager has made the default ServiceAccount and its token:
        until then no pod can be created."""
        account = api.get_json("/api/v1/namespaces/default/serviceaccounts/default")
        return bool((account or {}).get("secrets"))
