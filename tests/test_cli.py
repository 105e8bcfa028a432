"""The `paxoskv` command against a real one-node cluster (issue 13, items 2, 3 and 5):
what it prints, its exit statuses, options anywhere, settings, help, completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv import cli
from paxoskv.devcluster import free_ports
from tests.harness import LocalCluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("cli"), 1)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings from the environment or a configuration file of the machine."""
    for name in list(os.environ):
        if name.startswith("PAXOSKV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def dead() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """`paxoskv ARGS` in this process."""
    try:
        status = cli.main(list(args))
    except SystemExit as exc:  # argparse: --help, usage errors
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return Run(status, captured.out, captured.err)


def at(cluster: LocalCluster) -> tuple[str, str]:
    return "--endpoints", cluster.url(0)


# -- item 2: unreachable never looks like absent ------------------------------------------


@pytest.mark.parametrize("policy", ["fail", "retry", "return"])
def test_unreachable_exits_3_and_never_prints_not_found(capsys: pytest.CaptureFixture[str],
                                                        dead: str, policy: str) -> None:
    result = run(capsys, "get", "k", "--endpoints", dead, "--no-quorum", policy,
                 "--timeout", "0.5")
    assert result.status == cli.UNAVAILABLE, result
    assert "not found" not in result.err and '"found"' not in result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and dead in lines[0] and "connection refused" in lines[0]
    if policy == "return":
        assert result.json()["error"] == "unreachable"


def test_unreachable_with_value_output_prints_nothing(capsys: pytest.CaptureFixture[str],
                                                      dead: str) -> None:
    result = run(capsys, "-o", "value", "--no-quorum", "return", "get", "k", "--endpoints", dead)
    assert result.status == cli.UNAVAILABLE and result.out == ""


# -- item 3: status fails over; endpoint errors name the URL ------------------------------


def test_status_answers_while_an_endpoint_is_down(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  cluster: LocalCluster, dead: str) -> None:
    monkeypatch.setattr("paxoskv.client.random.randrange", lambda n: 0)  # the dead one first
    result = run(capsys, "status", "--endpoints", f"{dead},{cluster.url(0)}")
    assert result.status == 0, result
    assert result.json()["name"] == "n1" and result.json()["endpoint"] == cluster.url(0)
    every = run(capsys, "status", "--all", "-o", "table", "--endpoints",
                f"{dead},{cluster.url(0)}")
    assert every.status == 0
    rows = every.out.splitlines()
    assert rows[0].split()[:3] == ["ENDPOINT", "NAME", "QUORATE"]
    assert dead in rows[1] and "connection refused" in rows[1]
    assert cluster.url(0) in rows[2] and "true" in rows[2]


def test_status_with_no_endpoint_up_names_them(capsys: pytest.CaptureFixture[str],
                                               dead: str) -> None:
    result = run(capsys, "status", "--endpoints", dead)
    assert result.status == cli.UNAVAILABLE
    assert f"{dead} (connection refused)" in result.err and "Errno" not in result.err


@pytest.mark.parametrize("command", [("status",), ("get", "k")])
def test_an_endpoint_without_a_scheme_is_a_usage_error_naming_it(
        capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    result = run(capsys, *command, "--endpoints", "localhost:7001")
    assert result.status == cli.USAGE
    assert "'localhost:7001'" in result.err and "http://localhost:7001" in result.err
    assert "no_quorum" not in result.err


# -- item 5: the CLI shows what the API says ----------------------------------------------


def test_entries_show_bindings_deleted_and_changed(capsys: pytest.CaptureFixture[str],
                                                   cluster: LocalCluster) -> None:
    put = run(capsys, "put", "shown", "v", "--until", str(2**53), *at(cluster))
    assert put.status == 0 and put.json()["bindings"] == {"until": 2**53}
    deleted = run(capsys, "delete", "shown", "--token", "1", *at(cluster))
    assert deleted.status == 0 and deleted.json()["deleted"] is True
    assert run(capsys, "put", "shown-2", "v", *at(cluster)).status == 0
    unconditional = run(capsys, "delete", "shown-2", *at(cluster))
    assert unconditional.status == 0 and unconditional.json()["deleted"] is True
    nothing = run(capsys, "delete", "shown-2", *at(cluster))
    assert nothing.status == cli.NO and "not found" in nothing.err
    watched = run(capsys, "watch", "shown", "--token", "1", "--timeout", "2", *at(cluster))
    assert watched.status == 0 and watched.json()["changed"] is True


def test_a_put_that_lost_exits_1_and_says_so(capsys: pytest.CaptureFixture[str],
                                             cluster: LocalCluster) -> None:
    won = run(capsys, "put", "contested", "first", *at(cluster))
    assert won.status == 0 and won.json()["created"] is True
    # The same value again: the key holds it, but this put did not decide it (another
    # client's lock of the same name must not pass for ours).
    again = run(capsys, "put", "contested", "first", *at(cluster))
    assert again.status == cli.NO and again.json()["created"] is False
    assert "this value, put by another" in again.err
    lost = run(capsys, "put", "contested", "second", *at(cluster))
    assert lost.status == cli.NO
    assert lost.json()["value"] == "first" and "put lost" in lost.err


def test_value_output(capsys: pytest.CaptureFixture[str], cluster: LocalCluster) -> None:
    assert run(capsys, "put", "plain", "hello world", *at(cluster)).out.startswith("{")
    assert run(capsys, "get", "plain", "-o", "value", *at(cluster)).out == "hello world\n"
    run(capsys, "put", "structured", '{"a": [1, 2]}', "--json", *at(cluster))
    assert run(capsys, "-o", "value", "get", "structured", *at(cluster)).out == \
        '{"a": [1, 2]}\n'
    missing = run(capsys, "get", "never-put", "-o", "value", *at(cluster))
    assert missing.status == cli.NO and missing.out == ""
    table = run(capsys, "get", "plain", "-o", "table", *at(cluster)).out.splitlines()
    assert table[0].split() == ["BUCKET", "KEY", "FOUND", "VALUE", "TOKEN", "BINDINGS"]
    assert table[1].split()[:3] == ["default", "plain", "true"]


def test_pid_node_and_session_commands(capsys: pytest.CaptureFixture[str],
                                       cluster: LocalCluster) -> None:
    opened = run(capsys, "session", "open", "--ttl", "30", "-o", "value", *at(cluster))
    assert opened.status == 0, opened
    session = opened.out.strip()
    assert len(session) == 32
    assert run(capsys, "put", "held", "x", "--session", session, *at(cluster)).status == 0
    pid = run(capsys, "pid", "held", *at(cluster))
    assert pid.status == 0 and pid.json()["pid"] == session
    unbound = run(capsys, "node", "held", *at(cluster))
    assert unbound.status == cli.NO and unbound.json()["node"] is None
    kept = run(capsys, "session", "keepalive", session, *at(cluster))
    assert kept.status == 0 and kept.json()["alive"] is True
    closed = run(capsys, "session", "close", session, *at(cluster))
    assert closed.status == 0 and closed.json()["closed"] is True
    assert run(capsys, "session", "keepalive", session, *at(cluster)).status == cli.NO
    assert run(capsys, "session", "close", session, *at(cluster)).status == cli.NO
    gone = run(capsys, "watch", "held", "--token", "1", "--timeout", "3", *at(cluster))
    assert gone.status == 0 and gone.json()["found"] is False


def test_global_options_go_before_or_after_the_command(capsys: pytest.CaptureFixture[str],
                                                       cluster: LocalCluster) -> None:
    run(capsys, "put", "anywhere", "v", "--bucket", "b1", *at(cluster))
    before = run(capsys, "--endpoints", cluster.url(0), "--bucket", "b1", "-o", "value",
                 "get", "anywhere")
    after = run(capsys, "get", "anywhere", "--endpoints", cluster.url(0), "--bucket", "b1",
                "-o", "value")
    mixed = run(capsys, "--bucket", "b1", "get", "-o", "value", "anywhere", *at(cluster))
    assert before.out == after.out == mixed.out == "v\n", (before, after, mixed)


def test_settings_from_environment_and_configuration_file(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        cluster: LocalCluster, tmp_path: Path, dead: str) -> None:
    run(capsys, "put", "configured", "v", "--bucket", "cfg", *at(cluster))
    config = tmp_path / "config" / "paxoskv" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'endpoints = ["{cluster.url(0)}"]\nbucket = "cfg"\noutput = "value"\n')
    assert run(capsys, "get", "configured").out == "v\n"
    monkeypatch.setenv("PAXOSKV_OUTPUT", "json")  # the environment beats the file
    assert run(capsys, "get", "configured").json()["value"] == "v"
    assert run(capsys, "get", "configured", "-o", "value").out == "v\n"  # a flag beats both
    monkeypatch.setenv("PAXOSKV_ENDPOINTS", dead)
    assert run(capsys, "get", "configured").status == cli.UNAVAILABLE
    config.write_text('endpont = "typo"\n')
    typo = run(capsys, "get", "configured")
    assert typo.status == cli.USAGE and "'endpont'" in typo.err
    monkeypatch.setenv("PAXOSKV_TIMEOUT", "soon")
    bad = run(capsys, "get", "configured", "--config", str(tmp_path / "missing.toml"))
    assert bad.status == cli.USAGE and "missing.toml" in bad.err


def test_a_timeout_over_60_seconds_is_not_capped(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["timeout_ms"])
        return httpx.Response(200, json={"bucket": "default", "key": "k", "found": True,
                                         "value": 1, "token": len(sent), "bindings": {},
                                         "changed": len(sent) > 1})

    real = httpx.Client
    monkeypatch.setattr("paxoskv.client.httpx.Client",
                        lambda **options: real(transport=httpx.MockTransport(handler),
                                               **options))
    result = run(capsys, "watch", "k", "--token", "1", "--timeout", "100")
    assert result.status == 0 and result.json()["changed"] is True
    assert len(sent) == 2, "a watch of 100 s outlasts one 60 s request"


def test_a_reads_no_quorum_does_not_say_a_change_may_have_been_decided(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    message = "no quorum answered within 5000 ms; the change may or may not have been decided"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"code": "no_quorum", "message": message}})

    real = httpx.Client
    monkeypatch.setattr("paxoskv.client.httpx.Client",
                        lambda **options: real(transport=httpx.MockTransport(handler),
                                               **options))
    read = run(capsys, "get", "k")
    assert read.status == cli.UNAVAILABLE
    assert "may or may not" not in read.err and "changes nothing" in read.err
    write = run(capsys, "put", "k", "v")
    assert write.status == cli.UNAVAILABLE and "may or may not" in write.err


@pytest.mark.parametrize(("args", "flag", "http_field"), [
    (("session", "--ttl", "0.5"), "--ttl", "ttl_ms"),
    (("session", "open", "--ttl", "7200"), "--ttl", "ttl_ms"),
    (("put", "k", "v", "--bucket", "no/slash"), "--bucket", "(bucket)"),
    (("put", "k", "v", "--session", "not-a-session"), "--session", "bindings.pid"),
    (("put", "k", "v", "--until", "1"), "--until", "bindings.until"),
])
def test_errors_name_the_option_not_the_http_field(
        capsys: pytest.CaptureFixture[str], cluster: LocalCluster, args: tuple[str, ...],
        flag: str, http_field: str) -> None:
    result = run(capsys, *args, *at(cluster))
    assert result.status in (cli.NO, cli.USAGE)
    assert flag in result.err and http_field not in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [
    ("get",), ("put", "k"), ("delete",), ("delete", "k", "--token", "0"),
    ("get", "k", "--timeout", "-1"), ("get", "k", "-o", "yaml"), ("frobnicate",),
    ("session", "close"),
])
def test_usage_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str],
                                               args: tuple[str, ...]) -> None:
    result = run(capsys, *args)
    assert result.status == cli.USAGE
    assert len(result.err.strip().splitlines()) == 1 and "--help" in result.err


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    top = run(capsys, "--help")
    assert top.status == 0 and "exit status:" in top.out
    for code in ("0  done", "1  the answer is no", "2  usage", "3  no quorum"):
        assert code in top.out
    commands = cli._subcommands(cli.build_parser())
    assert {"put", "get", "delete", "watch", "pid", "node", "session", "status",
            "completion", "serve", "dev"} <= set(commands)
    for name in commands:
        page = run(capsys, name, "--help")
        assert page.status == 0 and "example" in page.out, name
    for action in ("open", "keepalive", "close"):
        assert run(capsys, "session", action, "--help").status == 0


def test_bash_completion_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "paxoskv.bash"
    script.write_text(run(capsys, "completion", "bash").out)
    complete = ('source "$1"; COMP_WORDS=(paxoskv --endpoints u ge); COMP_CWORD=3; _paxoskv; '
                'echo "${COMPREPLY[*]}"; COMP_WORDS=(paxoskv get k -o ""); COMP_CWORD=4; '
                '_paxoskv; echo "${COMPREPLY[*]}"; COMP_WORDS=(paxoskv session ""); '
                'COMP_CWORD=2; _paxoskv; echo "${COMPREPLY[*]}"')
    done = subprocess.run(["bash", "-c", complete, "bash", str(script)], capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    commands, outputs, session = done.stdout.splitlines()
    assert commands == "get" and outputs == "json table value"
    assert {"open", "keepalive", "close", "--ttl"} <= set(session.split())
    assert "bashcompinit" in run(capsys, "completion", "zsh").out


def test_as_a_process_no_traceback(cluster: LocalCluster, dead: str) -> None:
    """The real command: options anywhere, and errors as one line without a traceback."""
    def paxoskv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "paxoskv", *args], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "PAXOSKV_CONFIG": ""})

    put = paxoskv("--endpoints", cluster.url(0), "-o", "value", "put", "proc", "v")
    assert put.returncode == 0 and put.stdout == "v\n", put.stderr
    for args, status in [(("--endpoints", dead, "get", "k"), 3),
                         (("--endpoints", "nowhere", "status"), 2),
                         (("--endpoints", cluster.url(0), "get", "k" * 2000), 1)]:
        result = paxoskv(*args)
        assert result.returncode == status, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
