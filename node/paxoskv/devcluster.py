"""`paxoskv dev`: a local cluster of node processes on 127.0.0.1, for trying it out.

It checks first that its ports and data directory are free (a second `paxoskv dev`
fails at once, touching nothing of the first), starts the nodes, waits until they are
ready, and then supervises them: a node that exits (kill one to see the others keep
serving) is restarted after a delay, and the restart is reported. Ctrl-C or SIGTERM
stops every node.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from paxoskv import devcontrol, lockfile


@dataclass(frozen=True)
class LocalMember:
    name: str
    host: str
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def plan(size: int, base_port: int, data_root: Path, host: str = "127.0.0.1"
         ) -> list[LocalMember]:
    return [local_member(f"n{i}", base_port, data_root, host) for i in range(1, size + 1)]


def local_member(name: str, base_port: int, data_root: Path, host: str = "127.0.0.1"
                 ) -> LocalMember:
    """Node nI of a dev cluster: port base_port + I - 1, data in data_root/nI."""
    return LocalMember(name, host, base_port + int(name[1:]) - 1, data_root / name)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that are free on `host` right now, from below the
    kernel's ephemeral range: a port inside it (what binding port 0 gives) can be
    taken as the source port of any outgoing connection, a peer link's say, before
    the node that should listen on it starts (seen in a benchmark run)."""
    first_ephemeral = _first_ephemeral_port()
    ports: list[int] = []
    while len(ports) < count:
        port = _random.randrange(FIRST_PICKED_PORT, first_ephemeral)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # in use
        ports.append(port)
    return ports


FIRST_PICKED_PORT = 10_000  # well above the ports that services usually claim
_random = random.SystemRandom()  # not the random module's: tests seed that one


def _first_ephemeral_port() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default
    return max(low, FIRST_PICKED_PORT + 1000)


def peers_arg(members: Sequence[LocalMember]) -> str:
    return ",".join(f"{m.name}={m.url}" for m in members)


def serve_command(member: LocalMember, members: Sequence[LocalMember],
                  bootstrap: bool = True, join: bool = False) -> list[str]:
    """The node's command line; `bootstrap`: it may create the cluster on an empty data
    directory (not for a restart: a member that lost its data must not); `join`: it
    waits, on an empty data directory, to be added to the running cluster."""
    return [sys.executable, "-m", "paxoskv", "serve", "--name", member.name,
            "--peers", peers_arg(members), "--listen", f"{member.host}:{member.port}",
            "--data-dir", str(member.data_dir), *(["--bootstrap"] if bootstrap else []),
            *(["--join"] if join else [])]


# Seconds before a node that exited is restarted (a test sets it short); "off": never.
RESTART_DELAY_VARIABLE = "PAXOSKV_DEV_RESTART_DELAY_S"
DEFAULT_RESTART_DELAY = 10.0
# A node that exits sooner than this after its start is failing to start: each such
# exit doubles its next delay, up to the maximum.
QUICK_EXIT_S = 10.0
MAX_RESTART_DELAY = 120.0


def restart_delay() -> float | None:
    raw = os.environ.get(RESTART_DELAY_VARIABLE, "").strip().lower()
    if not raw:
        return DEFAULT_RESTART_DELAY
    if raw in ("off", "never", "no"):
        return None
    try:
        delay = float(raw)
    except ValueError:
        raise SystemExit(f"paxoskv: error: {RESTART_DELAY_VARIABLE}: expected seconds "
                         f"or 'off', not {raw!r}") from None
    if not 0 <= delay <= 3600:
        raise SystemExit(f"paxoskv: error: {RESTART_DELAY_VARIABLE}: expected 0 to 3600 "
                         "seconds or 'off'")
    return delay


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the `paxoskv dev` process dies, even by kill -9."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C and SIGTERM still stop the children


def start_node(member: LocalMember, members: Sequence[LocalMember], log_dir: Path,
               env: dict[str, str], bootstrap: bool = True, join: bool = False
               ) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{member.name}.log", "ab") as logfile:
        # A session of their own: Ctrl-C reaches only `paxoskv dev`, which
        # then stops the nodes gracefully.
        return subprocess.Popen(serve_command(member, members, bootstrap, join),
                                stdout=logfile, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent,
                                env={**os.environ, **env})


def ready(member: LocalMember) -> bool:
    try:
        return httpx.get(member.url + "/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def stop(procs: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(end - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def busy_port(members: Sequence[LocalMember]) -> str | None:
    """Why one of the members' ports cannot be listened on now (None: all are free)."""
    for m in members:
        with socket.socket() as sock:
            # As the node will (a port in TIME_WAIT after a stop is free to it).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((m.host, m.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (f"port {m.port} on {m.host} (node {m.name}) is already in use, "
                            "maybe by another `paxoskv dev`; stop it, or choose other ports "
                            "with --base-port")
                return f"cannot listen on {m.host}:{m.port} (node {m.name}): {exc.strerror}"
    return None


def lock_data_root(data_root: Path) -> int:
    """Hold `data_root` for this `paxoskv dev` (the kernel drops the lock however the
    process ends); OSError naming the holder if another one has it."""
    try:
        return lockfile.hold(data_root / "dev.lock")
    except lockfile.Held as held:
        raise OSError(f"data directory {data_root} is in use by another `paxoskv dev` "
                      f"(pid {held.holder}); stop it, or choose another --data-dir") from None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def last_line(path: Path) -> str:
    """The last line of a node's log, its "msg" if a JSON log line."""
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 4096, 0))
            lines = [line for line in f.read().decode(errors="replace").splitlines()
                     if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    try:
        entry = json.loads(lines[-1])
        text = str(entry["msg"]) if isinstance(entry, dict) and "msg" in entry else lines[-1]
    except ValueError:
        text = lines[-1]
    return text[:300]


def command_name() -> str:
    """How the user can run this `paxoskv` from their shell: `paxoskv` if the PATH finds
    this one, else the path of the script next to this Python (e.g. .venv/bin/paxoskv)."""
    script = Path(sys.executable).parent / "paxoskv"
    if not script.exists():
        return f"{sys.executable} -m paxoskv"
    found = shutil.which("paxoskv")
    if found is not None:
        try:
            if os.path.samefile(found, script):
                return "paxoskv"
        except OSError:
            pass
    relative = os.path.relpath(script)
    return str(script) if relative.startswith("..") else relative


@dataclass
class Supervised:
    """One node process of the dev cluster, and its restart state."""

    member: LocalMember
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # when to restart it, once it has exited
    delay: float = 0.0  # the delay of its latest restart
    rejoining: bool = False  # restarted, not yet ready
    joining: bool = False  # started by `paxoskv dev add`, not yet a member


class _StopRequested:
    """Set by SIGINT/SIGTERM: the loops notice within a fraction of a second (a
    KeyboardInterrupt could land anywhere, even between starting a node and noting it)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum


def say(text: str) -> None:
    print(f"paxoskv dev: {text}", file=sys.stderr, flush=True)


def _note_in_log(log_dir: Path, name: str, text: str) -> None:
    """A JSON line in a node's log, as the node would log it, by the supervisor."""
    line = json.dumps({"ts": round(time.time(), 3), "level": "warning",
                       "logger": "paxoskv.dev", "msg": text, "node": name})
    try:
        with open(log_dir / f"{name}.log", "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def run(size: int, base_port: int, data_root: Path, timeout: float = 30.0) -> int:
    lock: int | None = None
    try:
        # Another `paxoskv dev` on this directory is the likeliest conflict: say so first
        # (a new directory is only created once its ports are known to be free).
        if data_root.exists():
            lock = lock_data_root(data_root)
        members, base_port = _members(size, base_port, data_root)
        problem = busy_port(members)
        if problem is not None:
            print(f"paxoskv: error: {problem}", file=sys.stderr)
            return 1
        if lock is None:
            lock = lock_data_root(data_root)
    except OSError as exc:
        print(f"paxoskv: error: {exc}", file=sys.stderr)
        return 1
    try:
        devcontrol.save_state(data_root, [m.name for m in members], base_port)
        return Supervisor(data_root, base_port, restart_delay()).run(members, timeout)
    finally:
        os.close(lock)


def _members(size: int, base_port: int, data_root: Path) -> tuple[list[LocalMember], int]:
    """The members to start: those a previous run saved (their URLs are part of the
    cluster's configuration), else `size` new ones from `base_port`."""
    saved = devcontrol.saved_state(data_root)
    if saved is None:
        return plan(size, base_port, data_root), base_port
    names, saved_port = saved
    if (len(names), saved_port) != (size, base_port):
        say(f"{data_root} holds a cluster of {', '.join(names)} from port {saved_port}; "
            "it starts as it is (--nodes and --base-port apply to a new data directory)")
    return [local_member(name, saved_port, data_root) for name in names], saved_port


class Supervisor:
    """The node processes of one dev cluster: starts them, restarts those that exit,
    and answers `paxoskv dev add|remove` (devcontrol) on its control socket."""

    def __init__(self, data_root: Path, base_port: int, delay: float | None) -> None:
        self.data_root, self.base_port, self.delay = data_root, base_port, delay
        self.log_dir = data_root / "logs"
        self.env = {"PAXOSKV_ADMIN_TOKEN": devcontrol.admin_token(data_root)}
        self.nodes: list[Supervised] = []
        # Stop the nodes on SIGTERM as on Ctrl-C, and on Ctrl-C even when started in
        # the background by a shell (which leaves SIGINT ignored).
        self.stop_requested = _StopRequested()

    @property
    def members(self) -> list[LocalMember]:
        return [n.member for n in self.nodes]

    def run(self, members: list[LocalMember], timeout: float) -> int:
        signal.signal(signal.SIGTERM, self.stop_requested)
        signal.signal(signal.SIGINT, self.stop_requested)
        control = devcontrol.ControlServer(self.data_root, self.control)
        try:
            for m in members:
                if self.stop_requested.signal is not None:
                    break
                self.nodes.append(Supervised(m, start_node(m, members, self.log_dir,
                                                           self.env)))
            if self.stop_requested.signal is None and not _wait_ready(
                    self.nodes, self.log_dir, timeout, self.stop_requested):
                return 1
            if self.stop_requested.signal is None:
                _banner(self.nodes, self.data_root, self.delay)
                self.supervise(control)
            print("\nstopping…", file=sys.stderr, flush=True)
            return 0
        finally:
            control.close()
            stop([n.proc for n in self.nodes])
            print("cluster stopped", file=sys.stderr, flush=True)

    def supervise(self, control: devcontrol.ControlServer) -> None:
        """Until a stop is requested: restart nodes that exit, after the delay; answer
        control requests in between."""
        while self.stop_requested.signal is None:
            now = time.monotonic()
            for n in self.nodes:
                if n.proc.poll() is not None and n.restart_at is None:
                    _exited(n, self.nodes, self.log_dir, self.delay, now)
                elif n.restart_at is not None and now >= n.restart_at:
                    n.proc = start_node(n.member, self.members, self.log_dir, self.env,
                                        bootstrap=False)
                    n.started, n.restart_at, n.rejoining = now, None, True
                    say(f"node {n.member.name} restarted (pid {n.proc.pid})")
                elif n.rejoining and n.proc.poll() is None and ready(n.member):
                    n.rejoining = False
                    say(f"node {n.member.name} is ready again")
            control.serve(0.1)

    # -- control requests (devcontrol) ------------------------------------------------

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        if "start" in request:
            return self._start_joining()
        if "keep" in request:
            self._node(str(request["keep"])).joining = False
            self._save()
            say(f"node {request['keep']} is a member now")
        elif "drop" in request:
            self._drop(self._node(str(request["drop"])))
        return {"members": [{"name": m.name, "url": m.url} for m in self.members]}

    def _node(self, name: str) -> Supervised:
        found = next((n for n in self.nodes if n.member.name == name), None)
        if found is None:
            raise devcontrol.ControlError(f"{name!r} is not a node of this dev cluster")
        return found

    def _start_joining(self) -> dict[str, Any]:
        """Start the next node nI (the lowest I free, with no data directory left) with
        --join, and wait until it waits to be added."""
        taken = {n.member.name for n in self.nodes}
        name = next((f"n{i}" for i in range(1, devcontrol.MAX_NODES + 1)
                     if f"n{i}" not in taken and not (self.data_root / f"n{i}").exists()),
                    None)
        if name is None:
            raise devcontrol.ControlError(f"a dev cluster has at most "
                                          f"{devcontrol.MAX_NODES} nodes")
        member = local_member(name, self.base_port, self.data_root)
        problem = busy_port([member])
        if problem is not None:
            raise devcontrol.ControlError(problem)
        node = Supervised(member, start_node(member, [*self.members, member], self.log_dir,
                                             self.env, bootstrap=False, join=True),
                          joining=True)
        self.nodes.append(node)
        say(f"node {name} started (pid {node.proc.pid}) on {member.url}, to be added")
        deadline = time.monotonic() + JOIN_START_S
        while not _waiting_to_join(member):
            if node.proc.poll() is not None or time.monotonic() > deadline:
                why = last_line(self.log_dir / f"{name}.log")
                self._drop(node)
                raise devcontrol.ControlError(f"node {name} did not start: {why}")
            time.sleep(0.1)
        return {"name": name, "url": member.url,
                "members": [{"name": m.name, "url": m.url} for m in self.members]}

    def _drop(self, node: Supervised) -> None:
        """Stop a node for good: no longer supervised, its data removed."""
        self.nodes.remove(node)
        stop([node.proc])
        devcontrol.remove_data(node.member.data_dir)
        self._save()
        say(f"node {node.member.name} stopped and its data removed")

    def _save(self) -> None:
        devcontrol.save_state(self.data_root,
                              [n.member.name for n in self.nodes if not n.joining],
                              self.base_port)


JOIN_START_S = 20.0  # how long a new node may take to start listening


def _waiting_to_join(member: LocalMember) -> bool:
    try:
        answer = httpx.get(member.url + "/v1/identity", timeout=0.5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("state") == "joining"


def _wait_ready(nodes: list[Supervised], log_dir: Path, timeout: float,
                stop_requested: _StopRequested) -> bool:
    size = len(nodes)
    spinner = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout
    while stop_requested.signal is None:
        up = [n for n in nodes if ready(n.member)]
        dead = [n for n in nodes if n.proc.poll() is not None]
        if dead:
            name = dead[0].member.name
            why = last_line(log_dir / f"{name}.log")
            print(f"\npaxoskv: error: node {name} exited "
                  f"({describe_exit(dead[0].proc.returncode)})"
                  f"{': ' + why if why else ''}; see {log_dir / (name + '.log')}",
                  file=sys.stderr)
            return False
        line = f"{next(spinner)} starting {size} nodes: {len(up)}/{size} ready"
        if tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        if len(up) == size:
            return True
        if time.monotonic() > deadline:
            print(f"\npaxoskv: error: cluster not ready after {timeout:.0f}s; logs in "
                  f"{log_dir}", file=sys.stderr)
            return False
        time.sleep(0.2)
    return True


def _banner(nodes: list[Supervised], data_root: Path, delay: float | None) -> None:
    size = len(nodes)
    members = [n.member for n in nodes]
    paxoskv = command_name()
    width = max(len(m.url) for m in members)
    node_lines = "\n".join(f"    {n.member.name}  {n.member.url:<{width}}  pid {n.proc.pid}"
                           for n in nodes)
    default = [m.url for m in members] == [f"http://127.0.0.1:{7001 + i}" for i in range(3)]
    endpoints = "" if default else (
        f"    export PAXOSKV_ENDPOINTS={','.join(m.url for m in members)}\n")
    victim = nodes[1] if size > 1 else nodes[0]
    data_option = "" if data_root == Path(".paxoskv-dev") else f" --data-dir {data_root}"
    restart = ("it is restarted after "
               f"{delay:g} s" if delay is not None else "it stays down (restarts are off)")
    print(f"\r✔ {size}-node PaxosKV cluster ready{' ' * 20}", file=sys.stderr)
    print(f"""
  nodes:
{node_lines}
  data:      {data_root}  (logs in {data_root / 'logs'})

  Try, in another shell:
{endpoints}    {paxoskv} put greeting hello        # first write wins
    {paxoskv} put greeting world        # still hello
    {paxoskv} get greeting
    {paxoskv} status                    # each member, connected or not
    curl -s {members[0].url}/v1/get -d '{{"key": "greeting"}}'

  Kill a node (kill -9 {victim.proc.pid} stops {victim.member.name}): the others keep serving
  while a majority is up, and status shows it disconnected; {restart}.

  Scale it, one member at a time: `dev add` starts the next node and adds it, `dev
  remove` removes a member, stops it and deletes its data (the next start keeps this):
    {paxoskv} dev add{data_option}
    {paxoskv} dev remove {victim.member.name}{data_option}

  Press Ctrl-C to stop the cluster (data is kept for the next start).
""", file=sys.stderr, flush=True)


def _exited(n: Supervised, nodes: list[Supervised], log_dir: Path, delay: float | None,
            now: float) -> None:
    name = n.member.name
    how = describe_exit(n.proc.returncode)
    alive = [o.member.name for o in nodes if o.proc.poll() is None]
    quorum = len(nodes) // 2 + 1
    serving = (f"{', '.join(alive)} keep serving" if len(alive) >= quorum else
               f"only {', '.join(alive) or 'none'} left: no majority, requests fail "
               "with no_quorum")
    if delay is None:
        n.restart_at = float("inf")
        say(f"node {name} (pid {n.proc.pid}) exited ({how}); {serving}. Restarts are off "
            f"({RESTART_DELAY_VARIABLE}); log: {log_dir / (name + '.log')}")
        _note_in_log(log_dir, name, f"node exited ({how}); not restarted")
        return
    # An error exit soon after a start is a node failing to start: back off, and show
    # its last words (a kill, or a clean exit on SIGTERM, is restarted as usual).
    failing = n.proc.returncode > 0 and now - n.started < QUICK_EXIT_S
    wait = min(max(n.delay * 2, delay, 1.0), MAX_RESTART_DELAY) if failing and n.delay \
        else delay
    n.delay, n.restart_at = wait, now + wait
    why = last_line(log_dir / f"{name}.log") if n.proc.returncode > 0 else ""
    say(f"node {name} (pid {n.proc.pid}) exited ({how}){': ' + why if why else ''}; "
        f"{serving}. Restarting it in {wait:g} s; log: {log_dir / (name + '.log')}")
    _note_in_log(log_dir, name, f"node exited ({how}); paxoskv dev restarts it in {wait:g} s")
