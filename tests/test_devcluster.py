"""`paxoskv dev` and `make run`: a usable local cluster that reports progress, survives
and restarts a killed node, refuses to start over a running one, and stops cleanly on
Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from paxoskv.client import Client
from paxoskv.devcluster import free_ports
from tests.harness import wait_until

REPO = Path(__file__).resolve().parent.parent


def free_run_of_ports(count: int) -> int:
    """A base port with `count` free ports from it (chosen by the kernel, then checked)."""
    for _ in range(200):
        base = free_ports(1)[0]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


class Dev:
    """A `paxoskv dev` process whose stderr is collected line by line."""

    def __init__(self, base: int, data_dir: Path, env: dict[str, str] | None = None,
                 nodes: int = 3) -> None:
        self.base = base
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paxoskv", "dev", "--nodes", str(nodes),
             "--base-port", str(base), "--data-dir", str(data_dir)],
            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def check() -> bool:
            match = re.search(pattern, self.text)
            if match:
                found.append(match)
            return match is not None

        wait_until(check, within, lambda: f"no {pattern!r} in:\n{self.text}")
        return found[0]

    def banner(self) -> str:
        self.wait_for("Press Ctrl-C", 30)
        return self.text

    def pids(self) -> dict[str, int]:
        """Node name -> pid, as the banner lists them."""
        return {name: int(pid) for name, pid in
                re.findall(r"^\s+(n\d)\s+http://\S+\s+pid (\d+)$", self.banner(), re.M)}

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def dev_cluster(base: int, data_dir: Path, env: dict[str, str] | None = None
                ) -> Iterator[Dev]:
    dev = Dev(base, data_dir, env)
    try:
        yield dev
    finally:
        dev.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def refused(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def members(url: str) -> dict[str, bool]:
    """Member name -> connected, as the node at `url` reports it (/v1/status)."""
    status = httpx.get(url + "/v1/status", timeout=2).json()
    return {m["name"]: m["connected"] for m in status["members"]}


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_cluster_starts_serves_and_stops_cleanly(tmp_path: Path,
                                                     stop_signal: signal.Signals) -> None:
    base = free_run_of_ports(3)
    with dev_cluster(base, tmp_path / "dev") as dev:
        text = dev.banner()
        assert "3-node PaxosKV cluster ready" in text
        assert f"http://127.0.0.1:{base + 2}" in text
        pids = dev.pids()
        assert set(pids) == {"n1", "n2", "n3"}
        with Client(f"http://127.0.0.1:{base + 1}") as kv:
            assert kv.put("hello", "world").value == "world"
            assert kv.get("hello").value == "world"
        assert dev.stop(stop_signal) == 0
        assert "cluster stopped" in dev.text
        for name in ("n1", "n2", "n3"):
            assert (tmp_path / "dev" / name / "acceptor.sqlite3").exists()
        # Every node process is gone: nothing listens on their ports.
        assert not any(alive(pid) for pid in pids.values())
        assert all(refused(port) for port in range(base, base + 3))


def test_a_killed_node_is_survived_reported_and_restarted(tmp_path: Path) -> None:
    """Issue 13, item 1: kill -9 one node of `paxoskv dev`; the others keep serving, the
    status shows it disconnected, and the dev supervisor restarts it (after the delay,
    set short here) and says so; SIGTERM then stops every process, the restarted too."""
    base = free_run_of_ports(3)
    n1, n2 = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"
    with dev_cluster(base, tmp_path / "dev", {"PAXOSKV_DEV_RESTART_DELAY_S": "3"}) as dev:
        pids = dev.pids()
        with Client(n1) as kv:
            kv.put("before", "kill")
        os.kill(pids["n2"], signal.SIGKILL)
        dev.wait_for(rf"node n2 \(pid {pids['n2']}\) exited \(killed by SIGKILL\); "
                     r"n1, n3 keep serving\. Restarting it in 3 s", 5)
        wait_until(lambda: members(n1) == {"n1": True, "n2": False, "n3": True}, 5,
                   lambda: f"n1's status: {members(n1)}")
        with Client(n1) as kv:  # still a majority: writes and reads go on
            assert kv.put("during", "outage").value == "outage"
            assert kv.get("before").value == "kill"
        assert dev.proc.poll() is None
        restarted = int(dev.wait_for(r"node n2 restarted \(pid (\d+)\)", 10).group(1))
        assert restarted != pids["n2"]
        dev.wait_for("node n2 is ready again", 20)
        wait_until(lambda: members(n1) == {"n1": True, "n2": True, "n3": True}, 5,
                   lambda: f"n1's status: {members(n1)}")
        with Client(n2) as kv:
            assert kv.get("during").value == "outage"
        assert "exited (killed by SIGKILL); paxoskv dev restarts it" in (
            tmp_path / "dev" / "logs" / "n2.log").read_text()
        assert dev.stop() == 0
        assert not any(alive(pid) for pid in [*pids.values(), restarted])
        assert all(refused(port) for port in range(base, base + 3))


def _log_sizes(logs: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in logs.iterdir()}


def _logged_since(logs: Path, sizes: dict[str, int]) -> str:
    """What the first cluster's nodes logged since `sizes` (their own info lines)."""
    assert set(_log_sizes(logs)) == set(sizes)
    return "".join(p.read_bytes()[sizes[p.name]:].decode() for p in logs.iterdir())


def test_a_second_dev_cluster_fails_fast_and_leaves_the_first_alone(tmp_path: Path) -> None:
    """Issue 13, item 1: a second `paxoskv dev` on the same ports, or the same data
    directory, exits at once with a one-line error, and the first cluster's logs and
    service are untouched."""
    base = free_run_of_ports(3)
    with dev_cluster(base, tmp_path / "first") as first:
        first.banner()
        logs = tmp_path / "first" / "logs"
        before = _log_sizes(logs)
        same_ports = subprocess.run(
            [sys.executable, "-m", "paxoskv", "dev", "--base-port", str(base + 1),
             "--data-dir", str(tmp_path / "second")],
            capture_output=True, text=True, timeout=10, cwd=REPO)
        assert same_ports.returncode == 1
        assert same_ports.stderr.count("\n") == 1, same_ports.stderr
        assert f"port {base + 1} on 127.0.0.1 (node n1) is already in use" in (
            same_ports.stderr)
        assert not (tmp_path / "second").exists()
        same_all = subprocess.run(  # the very same command, as a second `make run`
            [sys.executable, "-m", "paxoskv", "dev", "--base-port", str(base),
             "--data-dir", str(tmp_path / "first")],
            capture_output=True, text=True, timeout=10, cwd=REPO)
        assert same_all.returncode == 1
        assert same_all.stderr.count("\n") == 1, same_all.stderr
        assert f"data directory {tmp_path / 'first'} is in use by another `paxoskv dev` " \
               f"(pid {first.proc.pid})" in same_all.stderr
        other = free_run_of_ports(3)
        same_data = subprocess.run(
            [sys.executable, "-m", "paxoskv", "dev", "--base-port", str(other),
             "--data-dir", str(tmp_path / "first")],
            capture_output=True, text=True, timeout=10, cwd=REPO)
        assert same_data.returncode == 1
        assert same_data.stderr.count("\n") == 1, same_data.stderr
        assert f"data directory {tmp_path / 'first'} is in use by another `paxoskv dev` " \
               f"(pid {first.proc.pid})" in same_data.stderr
        assert all(refused(port) for port in range(other, other + 3))
        since = _logged_since(logs, before)
        for bad in ("Unclosed", "address already in use", "Traceback", '"level": "error"',
                    "paxoskv: error"):
            assert bad not in since, since
        with Client(f"http://127.0.0.1:{base}") as kv:
            assert kv.put("first", "still serving").value == "still serving"
        assert "exited" not in first.text
        assert first.stop() == 0


def dev_command(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paxoskv", "dev", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def test_dev_add_and_remove_scale_the_running_cluster_and_survive_its_restart(
        tmp_path: Path) -> None:
    """Issue 9: `paxoskv dev add` starts n4 and adds it (it then holds every key);
    `paxoskv dev remove n2` removes n2, stops it and deletes its data; the next
    `paxoskv dev` on the directory starts n1, n3 and n4. Refusals are one line."""
    base = free_run_of_ports(4)
    data = tmp_path / "dev"
    n1, n4 = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 3}"
    no_dev = dev_command("add", data_dir=data)
    assert (no_dev.returncode, no_dev.stderr.count("\n")) == (2, 1), no_dev.stderr
    assert f"no `paxoskv dev` cluster in {data}" in no_dev.stderr
    with dev_cluster(base, data) as dev:
        dev.banner()
        with Client(n1) as kv:
            for i in range(20):
                kv.put(f"k{i}", i)
        added = dev_command("add", "-o", "json", data_dir=data)
        assert added.returncode == 0, added.stderr
        view = json.loads(added.stdout)
        assert [m["name"] for m in view["members"]] == ["n1", "n2", "n3", "n4"]
        assert (view["epoch"], view["settled"]) == (1, True)
        dev.wait_for("node n4 is a member now", 5)
        with httpx.Client(base_url=n4, timeout=5) as http:
            for i in range(20):
                local = http.post("/v1/get", json={"key": f"k{i}", "consistency": "local"})
                assert local.json()["value"] == i, local.text

        removed = dev_command("remove", "n2", "-o", "json", data_dir=data)
        assert removed.returncode == 0, removed.stderr
        assert [m["name"] for m in json.loads(removed.stdout)["members"]] == ["n1", "n3", "n4"]
        dev.wait_for("node n2 stopped and its data removed", 10)
        assert not (data / "n2").exists()
        assert refused(base + 1)
        for args, message in ((("remove", "n2"), "'n2' is not a node of this dev cluster"),
                              (("remove", "n9"), "'n9' is not a node of this dev cluster")):
            bad = dev_command(*args, data_dir=data)
            assert (bad.returncode, bad.stderr.count("\n")) == (2, 1), bad.stderr
            assert message in bad.stderr, bad.stderr
        assert dev.stop() == 0
    with dev_cluster(base, data) as again:  # the saved membership, not --nodes 3
        assert set(again.pids()) == {"n1", "n3", "n4"}
        with Client(n4) as kv:
            assert kv.get("k7").value == 7
            assert kv.put("after", "restart").value == "restart"
        assert again.stop() == 0


def test_the_banner_commands_run_without_the_venv_on_the_path(tmp_path: Path) -> None:
    """Issue 13, item 9: the banner's `paxoskv ...` lines work as printed in a shell
    whose PATH lacks the venv (as after `make run`, which does not activate it)."""
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and Path(d).resolve() != Path(bindir).resolve())
    base = free_run_of_ports(3)
    with dev_cluster(base, tmp_path / "dev", {"PATH": path}) as dev:
        text = dev.banner()
        tried = text.split("Try, in another shell:")[1].split("curl")[0]
        commands = [line.split("#")[0].strip() for line in tried.splitlines() if line.strip()]
        setup = [c for c in commands if c.startswith("export ")]
        put = next(c for c in commands if "put greeting hello" in c)
        shell = shutil.which("bash") or "/bin/sh"
        ran = subprocess.run([shell, "-c", "; ".join([*setup, put])], capture_output=True,
                             text=True, timeout=20, cwd=REPO, env={**os.environ, "PATH": path})
        assert ran.returncode == 0, (put, ran.stderr)
        assert '"hello"' in ran.stdout
        assert dev.stop() == 0


def test_make_run_shows_progress_while_installing(tmp_path: Path) -> None:
    """Issue 13, item 9: `make run` says it is installing, and ticks, before the quiet
    pip runs (a stub Python stands in for the venv, so no network is needed)."""
    venv = tmp_path / "venv"
    stub = tmp_path / "python3"
    stub.write_text("#!/bin/sh\n"
                    'mkdir -p "$3/bin"\n'
                    """printf '#!/bin/sh\\nsleep 2.5\\necho PIP-RAN\\n' > "$3/bin/pip"\n"""
                    """printf '#!/bin/sh\\necho PAXOSKV-RAN "$@"\\n' > "$3/bin/paxoskv"\n"""
                    'chmod +x "$3/bin/pip" "$3/bin/paxoskv"\n')
    stub.chmod(0o755)
    make = ["make", "--no-print-directory", "-C", str(REPO), "run", f"VENV={venv}",
            f"PYTHON={stub}"]
    first = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert out.index("installing PaxosKV") < out.index("PIP-RAN"), out
    assert "." in out[out.index("first time)"):out.index("PIP-RAN")], out  # a tick
    assert re.search(r"done in \d+ s", out), out
    assert out.rstrip().endswith("PAXOSKV-RAN dev"), out
    again = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "PAXOSKV-RAN dev", again.stdout
