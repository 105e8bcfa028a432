"""`paxoskv dev`: starts a usable local cluster, reports progress, stops cleanly on Ctrl-C
or SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paxoskv.client import Client


def _free_run_of_ports(count: int) -> int:
    """A base port with `count` free ports after it."""
    for base in range(21000, 30000, 50):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_cluster_starts_serves_and_stops_cleanly(tmp_path: Path,
                                                     stop_signal: signal.Signals) -> None:
    base = _free_run_of_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "paxoskv", "dev", "--nodes", "3", "--base-port", str(base),
         "--data-dir", str(tmp_path / "dev")],
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        banner = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            banner.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(banner)
        assert "3-node PaxosKV cluster ready" in text
        assert f"http://127.0.0.1:{base + 2}" in text
        with Client(f"http://127.0.0.1:{base + 1}") as kv:
            assert kv.put("hello", "world").value == "world"
            assert kv.get("hello").value == "world"
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
        assert "cluster stopped" in proc.stderr.read()
        for name in ("n1", "n2", "n3"):
            assert (tmp_path / "dev" / name / "acceptor.sqlite3").exists()
        # Every node process is gone: nothing listens on their ports.
        for port in range(base, base + 3):
            with socket.socket() as s, pytest.raises(ConnectionRefusedError):
                s.connect(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
