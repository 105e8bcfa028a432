"""A local cluster of real node processes for tests: start, kill -9, stop, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from paxoskv.client import AsyncClient, Client
from paxoskv.devcluster import LocalMember, free_ports, ready, serve_command


def wait_until(check: Callable[[], bool], within: float,
               what: str | Callable[[], str]) -> float:
    """Seconds until `check()` holds; fails with `what` once a check that began after
    `within` seconds still finds it false. A slow check that began in time is retried,
    so the bound is on when the condition came true, not on how long checking took."""
    started = time.monotonic()
    while True:
        began = time.monotonic()
        if check():
            return time.monotonic() - started
        assert began - started < within, what if isinstance(what, str) else what()
        time.sleep(0.02)


class LocalCluster:
    """Node processes on 127.0.0.1 with data directories under `root`."""

    def __init__(self, root: Path, size: int, hosts: list[str] | None = None,
                 env: dict[str, str] | None = None,
                 node_env: dict[int, dict[str, str]] | None = None,
                 log_dir: Path | None = None) -> None:
        """`hosts`: one loopback address per member (default: all on 127.0.0.1);
        `env`: test switches for every node, `node_env` for some; kept for restarts;
        `log_dir`: where the nodes' logs go (default `root`)."""
        self.root = root
        self.log_dir = log_dir or root
        self.env = env or {}
        self.node_env = node_env or {}
        hosts = hosts or ["127.0.0.1"] * size
        self.members = [LocalMember(f"n{i + 1}", hosts[i], port, root / f"n{i + 1}")
                        for i, port in enumerate(free_ports(size))]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def url(self, index: int) -> str:
        return self.members[index].url

    def start(self, index: int, env: dict[str, str] | None = None, join: bool = False
              ) -> None:
        """Start node `index`; `env` adds environment variables (test switches); `join`:
        on an empty data directory, wait to be added (`serve --join`)."""
        member = self.members[index]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{member.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[member.name] = subprocess.Popen(
            [*serve_command(member, self.members, bootstrap=not join, join=join),
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, **self.node_env.get(index, {}), **(env or {})})
        log.close()

    def start_all(self, env: dict[str, str] | None = None) -> None:
        for i in range(len(self.members)):
            self.start(i, env)
        self.wait_ready(range(len(self.members)))

    def wait_ready(self, indexes: range | list[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        pending = [self.members[i] for i in indexes]
        while pending:
            pending = [m for m in pending if not ready(m)]
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready: {[m.name for m in pending]}")
            time.sleep(0.05)

    def wait_up(self, index: int, timeout: float = 20.0) -> None:
        """Serving HTTP (not necessarily quorate)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(self.url(index) + "/healthz", timeout=0.5)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        """kill -9: no chance to flush anything."""
        proc = self.procs.pop(self.members[index].name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self, index: int) -> int:
        """SIGTERM, as Kubernetes stops a pod; returns the exit status."""
        proc = self.procs.pop(self.members[index].name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=10)

    def client(self, index: int | None = None, **options: object) -> Client:
        urls = self.urls if index is None else [self.url(index)]
        return Client(urls, **options)

    def async_client(self, index: int | None = None, **options: object) -> AsyncClient:
        urls = self.urls if index is None else [self.url(index)]
        return AsyncClient(urls, **options)

    def log_problems(self, expected: tuple[str, ...] = ()) -> list[str]:
        """Error and critical lines, and tracebacks, in the nodes' logs (they log at
        warning level), except those containing one of `expected`."""
        found = []
        for log in sorted(self.log_dir.glob("n*.log")):
            for line in log.read_text(errors="replace").splitlines():
                bad = ('"level": "error"' in line or '"level": "critical"' in line
                       or "Traceback" in line)
                if bad and not any(e in line for e in expected):
                    found.append(f"{log.name}: {line[:500]}")
        return found

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.procs.clear()


def running(root: Path, size: int, env: dict[str, str] | None = None
            ) -> Iterator[LocalCluster]:
    """A started cluster for a fixture (`env`: for every node); every process is gone
    afterwards."""
    cluster = LocalCluster(root, size, env=env)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
