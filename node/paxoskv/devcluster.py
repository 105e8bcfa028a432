"""`paxoskv dev`: a local cluster of node processes on 127.0.0.1, for trying it out."""

from __future__ import annotations

import ctypes
import itertools
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


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
    return [LocalMember(f"n{i}", host, base_port + i - 1, data_root / f"n{i}")
            for i in range(1, size + 1)]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that are free on `host` right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def peers_arg(members: Sequence[LocalMember]) -> str:
    return ",".join(f"{m.name}={m.url}" for m in members)


def serve_command(member: LocalMember, members: Sequence[LocalMember]) -> list[str]:
    return [sys.executable, "-m", "paxoskv", "serve", "--name", member.name,
            "--peers", peers_arg(members), "--listen", f"{member.host}:{member.port}",
            "--data-dir", str(member.data_dir), "--bootstrap"]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the `paxoskv dev` process dies, even by kill -9."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C and SIGTERM still stop the children


def start(members: Sequence[LocalMember], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for m in members:
        with open(log_dir / f"{m.name}.log", "ab") as logfile:
            # A session of their own: Ctrl-C reaches only `paxoskv dev`, which
            # then stops the nodes gracefully.
            procs.append(subprocess.Popen(serve_command(m, members), stdout=logfile,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=_die_with_parent))
    return procs


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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


def run(size: int, base_port: int, data_root: Path, timeout: float = 30.0) -> int:
    members = plan(size, base_port, data_root)
    # Stop the nodes on SIGTERM as on Ctrl-C, and on Ctrl-C even when started in the
    # background by a shell (which leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    procs = start(members, data_root / "logs")
    spinner = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout
    try:
        while True:
            up = [m for m in members if ready(m)]
            dead = [m for m, p in zip(members, procs, strict=True) if p.poll() is not None]
            if dead:
                print(f"\npaxoskv: error: node {dead[0].name} exited; see "
                      f"{data_root / 'logs' / (dead[0].name + '.log')}", file=sys.stderr)
                stop(procs)
                return 1
            line = f"{next(spinner)} starting {size} nodes: {len(up)}/{size} ready"
            if tty:
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
            if len(up) == size:
                break
            if time.monotonic() > deadline:
                print(f"\npaxoskv: error: cluster not ready after {timeout:.0f}s; logs in "
                      f"{data_root / 'logs'}", file=sys.stderr)
                stop(procs)
                return 1
            time.sleep(0.2)
        endpoints = ",".join(m.url for m in members)
        print(f"\r✔ {size}-node PaxosKV cluster ready{' ' * 20}", file=sys.stderr)
        print(f"""
  nodes:     {endpoints}
  data:      {data_root}  (logs in {data_root / 'logs'})

  Try, in another shell:
    paxoskv put greeting hello        # first write wins
    paxoskv put greeting world        # still hello
    paxoskv get greeting
    curl -s {members[0].url}/v1/get -d '{{"key": "greeting"}}'

  Press Ctrl-C to stop the cluster (data is kept for the next start).
""", file=sys.stderr, flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("paxoskv: a node exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        stop(procs)
        print("cluster stopped", file=sys.stderr)
