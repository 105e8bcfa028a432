"""The HTTP API and CLI against a real 3-node cluster: results, errors, limits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv.server import validation as v
from tests.harness import LocalCluster, running, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    for started in running(tmp_path_factory.mktemp("api"), 3):
        # Each member records its own liveness key once started; wait until the key
        # counts settle, so that below they move only with what the tests write.
        deadline = time.monotonic() + 10
        counts: list[int] = []
        while counts != (counts := keys_held(started)) or not any(counts):
            assert time.monotonic() < deadline, counts
            time.sleep(1.0)
        yield started


def post(cluster: LocalCluster, path: str, body: Any, node: int = 0) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(cluster.url(node) + path, content=content,
                      headers={"Content-Type": "application/json"}, timeout=10)


def keys_held(cluster: LocalCluster) -> list[int]:
    return [httpx.get(u + "/v1/status").json()["keys"] for u in cluster.urls]


BAD_REQUESTS: list[tuple[str, bytes | dict[str, Any], int, str, str]] = [
    ("/v1/put", b"{not json", 400, "invalid_request", "body"),
    ("/v1/put", b"[1, 2]", 400, "invalid_request", "body"),
    ("/v1/put", {"key": 7, "value": "v"}, 400, "invalid_request", "key"),
    ("/v1/put", {"key": "", "value": "v"}, 400, "invalid_request", "key"),
    ("/v1/put", {"key": "bad-1"}, 400, "invalid_request", "value"),
    ("/v1/put", {"key": "bad-2", "value": None}, 400, "invalid_request", "value"),
    ("/v1/put", {"key": "bad-3", "value": "v", "colour": "red"}, 400, "invalid_request",
     "colour"),
    ("/v1/put", {"key": "bad-4", "value": "v", "bucket": "no/slash"}, 400, "invalid_request",
     "bucket"),
    ("/v1/put", {"key": "bad-5", "value": "v", "bucket": ""}, 400, "invalid_request", "bucket"),
    ("/v1/put", {"key": "bad-6", "value": "v", "bucket": "b" * 64}, 400, "invalid_request",
     "bucket"),
    ("/v1/put", {"key": "bad-7", "value": "v", "no_quorum": "maybe"}, 400, "invalid_request",
     "no_quorum"),
    ("/v1/put", {"key": "bad-8", "value": "v", "timeout_ms": "soon"}, 400, "invalid_request",
     "timeout_ms"),
    ("/v1/put", {"key": "bad-9", "value": "v", "timeout_ms": 0}, 400, "invalid_request",
     "timeout_ms"),
    ("/v1/put", {"key": "bad-10", "value": "v", "bindings": []}, 400, "invalid_request",
     "bindings"),
    ("/v1/put", {"key": "k" * 1025, "value": "v"}, 413, "too_large", "key"),
    ("/v1/put", {"key": "bad-11", "value": "x" * 70_000}, 413, "too_large", "value"),
    ("/v1/put", b'{"key": "bad-12", "value": "' + b"x" * 1_100_000 + b'"}', 413, "too_large",
     "body"),
    ("/v1/get", {"key": "bad-13", "consistency": "eventual"}, 400, "invalid_request",
     "consistency"),
    ("/v1/delete", {"key": "bad-14", "token": 0}, 400, "invalid_request", "token"),
    ("/v1/delete", {"key": "bad-15", "token": "1"}, 400, "invalid_request", "token"),
    ("/v1/delete", {"key": "bad-16", "token": True}, 400, "invalid_request", "token"),
    ("/v1/put", {"key": "bad-17", "value": "v", "timeout_ms": 60_001}, 400, "invalid_request",
     "timeout_ms"),
    ("/v1/watch", {"key": "bad-18", "token": -1}, 400, "invalid_request", "token"),
    ("/v1/watch", {"key": "bad-19", "token": "3"}, 400, "invalid_request", "token"),
    ("/v1/watch", {"key": "bad-20", "token": 1, "timeout_ms": 60_001}, 400,
     "invalid_request", "timeout_ms"),
    ("/v1/pid", {"key": 3}, 400, "invalid_request", "key"),
    ("/v1/pid", {"key": "bad-21", "value": 1}, 400, "invalid_request", "value"),
    ("/v1/node", {"bucket": "", "key": "bad-22"}, 400, "invalid_request", "bucket"),
    ("/v1/session/open", {}, 400, "invalid_request", "ttl_ms"),
    ("/v1/session/open", {"ttl_ms": 999}, 400, "invalid_request", "ttl_ms"),
    ("/v1/session/open", {"ttl_ms": 3_600_001}, 400, "invalid_request", "ttl_ms"),
    ("/v1/session/open", {"ttl_ms": 5000.5}, 400, "invalid_request", "ttl_ms"),
    ("/v1/session/keepalive", {"session": "not-hex"}, 400, "invalid_request", "session"),
    ("/v1/session/keepalive", {}, 400, "invalid_request", "session"),
    ("/v1/session/close", {"session": "ab" * 15}, 400, "invalid_request", "session"),
    ("/v1/put", {"key": "bad-23", "value": 1, "bindings": {"pid": "xyz"}}, 400,
     "invalid_request", "bindings.pid"),
    # Integers that would come back as floats are refused, not silently changed.
    ("/v1/put", {"key": "bad-24", "value": 123456789012345678901234567890}, 400,
     "invalid_request", "value"),
    ("/v1/put", {"key": "bad-25", "value": {"n": [1, -(2**63) - 1]}}, 400,
     "invalid_request", "value"),
    ("/v1/put", {"key": "bad-26", "value": 1, "timeout_ms": 2**64}, 400,
     "invalid_request", "timeout_ms"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "field"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(
        cluster: LocalCluster, path: str, body: bytes | dict[str, Any], status: int, code: str,
        field: str) -> None:
    before = keys_held(cluster)
    response = post(cluster, path, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]
    assert keys_held(cluster) == before
    if isinstance(body, dict) and isinstance(body.get("key"), str) and field != "key":
        assert post(cluster, "/v1/get", {"key": body["key"]}).json()["token"] == 0


def test_unknown_route_and_method_are_json_errors(cluster: LocalCluster) -> None:
    missing = httpx.get(cluster.url(0) + "/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(cluster.url(0) + "/v1/put")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_put_get_delete_round_trip(cluster: LocalCluster) -> None:
    put = post(cluster, "/v1/put", {"key": "lock", "value": {"owner": "a"}}).json()
    assert put == {"bucket": "default", "key": "lock", "found": True,
                   "value": {"owner": "a"}, "token": 1, "bindings": {}, "created": True}
    second = post(cluster, "/v1/put", {"key": "lock", "value": {"owner": "b"}}, node=1).json()
    assert second["value"] == {"owner": "a"}, "first write wins"
    stale = post(cluster, "/v1/delete", {"key": "lock", "token": 5}, node=2).json()
    assert stale["deleted"] is False and stale["found"] is True
    gone = post(cluster, "/v1/delete", {"key": "lock", "token": 1}, node=2).json()
    assert gone["deleted"] is True and gone["found"] is False and gone["token"] == 2
    read = post(cluster, "/v1/get", {"key": "lock"}, node=1).json()
    assert read["found"] is False and read["value"] is None and read["token"] == 2
    again = post(cluster, "/v1/put", {"key": "lock", "value": {"owner": "b"}}).json()
    assert again["value"] == {"owner": "b"} and again["token"] == 3


def test_buckets_are_isolated(cluster: LocalCluster) -> None:
    a = post(cluster, "/v1/put", {"bucket": "alpha", "key": "shard-1", "value": "x"}).json()
    b = post(cluster, "/v1/put", {"bucket": "beta", "key": "shard-1", "value": "y"}).json()
    assert (a["value"], b["value"]) == ("x", "y")
    plain = post(cluster, "/v1/get", {"key": "shard-1"}).json()
    assert plain["found"] is False


def test_integers_at_the_edges_of_the_exact_range_come_back_exactly(
        cluster: LocalCluster) -> None:
    value = {"max": 2**64 - 1, "min": -(2**63), "digits": "123456789012345678901234567890",
             "float": 1.2345678901234568e+29}
    assert post(cluster, "/v1/put", {"key": "exact-ints", "value": value}).status_code == 200
    assert post(cluster, "/v1/get", {"key": "exact-ints"}).json()["value"] == value


def test_digits_in_a_string_cost_no_second_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a body in which orjson made a float can hold an integer it made inexact: a
    key with a timestamp in nanoseconds is parsed once; a huge integer is still refused."""
    def second_parse(raw: bytes) -> Any:
        raise AssertionError("parsed a second time")

    monkeypatch.setattr("paxoskv.server.validation.json.loads", second_parse)
    assert v.parse_body(b'{"key": "job-1765123456789012345"}') == {
        "key": "job-1765123456789012345"}
    with pytest.raises(AssertionError, match="second time"):  # this one needs it
        v.parse_body(b'{"key": "k", "value": 123456789012345678901234}')
    monkeypatch.undo()
    with pytest.raises(v.RequestError) as refused:
        v.parse_body(b'{"key": "k", "value": 123456789012345678901234}')
    assert refused.value.field == "value"


def test_a_put_says_whether_it_created_the_generation(cluster: LocalCluster) -> None:
    first = post(cluster, "/v1/put", {"key": "created", "value": "v"}).json()
    same = post(cluster, "/v1/put", {"key": "created", "value": "v"}, node=1).json()
    assert (first["created"], first["token"]) == (True, 1)
    assert (same["created"], same["value"], same["token"]) == (False, "v", 1)


def test_a_delete_without_a_token_ends_whatever_is_live(cluster: LocalCluster) -> None:
    post(cluster, "/v1/put", {"key": "any-gen", "value": 1})
    gone = post(cluster, "/v1/delete", {"key": "any-gen"}, node=1).json()
    assert (gone["deleted"], gone["found"], gone["token"]) == (True, False, 2)
    absent = post(cluster, "/v1/delete", {"key": "any-gen"}, node=2).json()
    assert (absent["deleted"], absent["token"]) == (False, 2), "nothing live to end"
    post(cluster, "/v1/put", {"key": "any-gen", "value": 2})
    again = post(cluster, "/v1/delete", {"key": "any-gen"}).json()
    assert (again["deleted"], again["token"]) == (True, 4)


def test_local_read_is_this_nodes_copy(cluster: LocalCluster) -> None:
    post(cluster, "/v1/put", {"key": "local-read", "value": 42})
    # The node that answered the put took part in the quorum, so it holds it.
    body = post(cluster, "/v1/get", {"key": "local-read", "consistency": "local"}).json()
    assert body["value"] == 42


def test_local_reads_on_every_member_serve_a_put_once_its_commit_mark_arrives(
        cluster: LocalCluster) -> None:
    """A follower serves only states it knows were chosen: it learns that from the
    commit mark, a notice that waits for other traffic at most NOTICE_DELAY_S."""
    post(cluster, "/v1/put", {"key": "marked", "value": "m"})
    for node in (1, 2):
        def local_value(node: int = node) -> Any:
            return post(cluster, "/v1/get", {"key": "marked", "consistency": "local"},
                        node=node).json()["value"]

        wait_until(lambda: local_value() == "m", 2.0,
                   f"node {node} never learned the put was chosen")


def test_a_clean_restart_keeps_what_local_reads_knew_was_chosen(cluster: LocalCluster) -> None:
    """Commit marks are written lazily (they ride along with later writes), but a
    clean stop writes them out: a restarted member serves its local reads at once."""
    post(cluster, "/v1/put", {"key": "marked-before-restart", "value": "kept"})

    def local(node: int) -> dict[str, Any]:
        return dict(post(cluster, "/v1/get", {"key": "marked-before-restart",
                                              "consistency": "local"}, node=node).json())

    wait_until(lambda: local(2)["found"], 5.0, "node 3 never learned the put was chosen")
    assert cluster.stop(2) == 0
    cluster.start(2)
    cluster.wait_up(2)
    body = local(2)
    assert (body["found"], body["value"]) == (True, "kept"), body
    cluster.wait_ready([2])


def test_openapi_document_describes_every_client_route(cluster: LocalCluster) -> None:
    doc = httpx.get(cluster.url(0) + "/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/put", "/v1/get", "/v1/delete", "/v1/swap", "/v1/watch", "/v1/list",
                 "/v1/pid", "/v1/session/open", "/v1/session/keepalive", "/v1/session/close",
                 "/v1/node", "/v1/admin/nodes", "/v1/buckets", "/v1/sessions", "/v1/nodes",
                 "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"]
    put_fields = doc["paths"]["/v1/put"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    assert {"bucket", "key", "value", "no_quorum", "timeout_ms"} <= set(put_fields)
    assert set(put_fields["bindings"]["properties"]) == {"until", "key", "pid", "node"}
    # Every POST operation described is served: an empty body is a 400, not a 404
    # (401 for the admin endpoint: the request carries no credentials; 200 where the
    # document says no field is required, as for a listing).
    for path, item in doc["paths"].items():
        if "post" in item:
            optional = not item["post"]["requestBody"]["required"]
            expected = 401 if path.startswith("/v1/admin/") else 200 if optional else 400
            assert httpx.post(cluster.url(0) + path, content=b"{}").status_code == expected, path
    assert not doc["paths"]["/v1/list"]["post"]["requestBody"]["required"]


def _metric(cluster: LocalCluster, line_start: str) -> float:
    for line in httpx.get(cluster.url(0) + "/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def test_health_readiness_and_metrics(cluster: LocalCluster) -> None:
    assert httpx.get(cluster.url(0) + "/healthz").status_code == 200
    assert httpx.get(cluster.url(0) + "/readyz").json() == {"status": "ready"}
    ok_puts = 'paxoskv_requests_total{code="ok",op="put"}'
    before = _metric(cluster, ok_puts) if ok_puts in httpx.get(
        cluster.url(0) + "/metrics").text else 0.0
    commits = _metric(cluster, "paxoskv_storage_commits")
    for n in range(3):
        post(cluster, "/v1/put", {"key": f"metered-{n}", "value": n})
    assert _metric(cluster, ok_puts) == before + 3
    assert _metric(cluster, "paxoskv_quorate") == 1.0
    assert _metric(cluster, "paxoskv_peers_connected") == 2.0
    assert _metric(cluster, "paxoskv_storage_commits") > commits


def cli(*args: str, cluster: LocalCluster | None = None) -> subprocess.CompletedProcess[str]:
    endpoints = ["--endpoints", ",".join(cluster.urls)] if cluster else []
    command, *rest = args
    return subprocess.run([sys.executable, "-m", "paxoskv", command, *endpoints, *rest],
                          capture_output=True, text=True, timeout=30)


def test_cli_put_get_delete(cluster: LocalCluster) -> None:
    put = cli("put", "cli-key", '{"a": 1}', "--json", cluster=cluster)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["value"] == {"a": 1}
    got = cli("get", "cli-key", cluster=cluster)
    assert json.loads(got.stdout)["token"] == 1
    deleted = cli("delete", "cli-key", "--token", "1", cluster=cluster)
    assert deleted.returncode == 0, deleted.stderr
    missing = cli("get", "cli-key", cluster=cluster)
    assert missing.returncode == 1 and "not found" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("put", "k", "{oops", "--json"), "value is not valid JSON"),
    (("put", "k" * 2000, "v"), "too_large (key)"),
    (("put", "k", "v", "--bucket", "bad/bucket"), "invalid_request (--bucket)"),
    (("delete", "never-there", "--token", "1"), "not deleted"),
])
def test_cli_bad_input_is_one_line_and_nonzero(cluster: LocalCluster, args: tuple[str, ...],
                                               message: str) -> None:
    result = cli(*args, cluster=cluster)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "paxoskv", "get", "k", "--endpoints",
                             "http://127.0.0.1:9", "--timeout", "1"],
                            capture_output=True, text=True, timeout=30)
    # Unreachable is never "not found" (exit 1): exit 3, naming the endpoint.
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "http://127.0.0.1:9" in result.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "paxoskv", "serve", "--name", "n1", "--peers",
             f"n1=http://127.0.0.1:{port}", "--data-dir", str(tmp_path), "--bootstrap"],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    # One line naming the address; no "Unclosed client session" after it.
    assert result.stderr.count("\n") == 1 and "address already in use" in result.stderr


def test_serve_rejects_a_name_not_among_peers(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "paxoskv", "serve", "--name", "n9",
                             "--peers", "n1=http://127.0.0.1:7999", "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "not one of --peers" in result.stderr and "Traceback" not in result.stderr


def test_serve_usage_errors_exit_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "paxoskv", "serve", "--name", "n1",
                             "--peers", "garbage", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "expected NAME=http://HOST:PORT" in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_session_binds_keys_until_stopped_then_closes_it(cluster: LocalCluster,
                                                            stop: signal.Signals) -> None:
    key = f"cli-held-{stop.name}"
    holder = subprocess.Popen(
        [sys.executable, "-m", "paxoskv", "session", "--endpoints", ",".join(cluster.urls),
         "--ttl", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        session_id = holder.stdout.readline().strip()
        assert len(session_id) == 32
        put = cli("put", key, "x", "--session", session_id, cluster=cluster)
        assert put.returncode == 0, put.stderr
        unchanged = cli("watch", key, "--token", "1", "--timeout", "0.3", cluster=cluster)
        assert unchanged.returncode == 1 and json.loads(unchanged.stdout)["found"]
        holder.send_signal(stop)
        assert holder.wait(timeout=10) == 0
        # Closed, not abandoned: an abandoned session would hold the key for ~3-5 s more.
        gone = cli("watch", key, "--token", "1", "--timeout", "3", cluster=cluster)
        assert gone.returncode == 0, gone.stderr
        assert json.loads(gone.stdout)["found"] is False
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_cli_put_with_a_ttl_ends_the_key(cluster: LocalCluster) -> None:
    put = cli("put", "cli-ttl", "x", "--ttl", "0.3", cluster=cluster)
    assert put.returncode == 0, put.stderr
    gone = cli("watch", "cli-ttl", "--token", "1", "--timeout", "5", cluster=cluster)
    assert gone.returncode == 0 and json.loads(gone.stdout)["token"] == 2
