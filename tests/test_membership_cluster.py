"""Membership change with real node processes on loopback and real data directories:
a node started with --join is added, serves every key, and is removed again."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv import cli
from paxoskv.devcluster import LocalMember, free_ports, serve_command
from tests.harness import LocalCluster, running, wait_until

TOKEN = "members-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3, env={"PAXOSKV_ADMIN_TOKEN": TOKEN})


def admin(url: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if body is None:
        return httpx.get(url + path, headers=ADMIN, timeout=30)
    return httpx.post(url + path, json=body, headers=ADMIN, timeout=60)


def start_joining(cluster: LocalCluster, member: LocalMember) -> subprocess.Popen[bytes]:
    log = open(cluster.log_dir / f"{member.name}.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [*serve_command(member, [*cluster.members, member], bootstrap=False), "--join",
         "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PAXOSKV_ADMIN_TOKEN": TOKEN})
    log.close()
    return proc


def identity_state(url: str) -> str:
    try:
        return str(httpx.get(url + "/v1/identity", timeout=1).json().get("state"))
    except httpx.HTTPError:
        return "down"


def test_a_joining_node_is_added_serves_every_key_and_is_removed_again(
        cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.client() as client:
        for i in range(20):
            client.put(f"k{i}", f"v{i}")
    n4 = LocalMember("n4", "127.0.0.1", free_ports(1)[0], tmp_path / "n4")
    proc = start_joining(cluster, n4)
    try:
        wait_until(lambda: identity_state(n4.url) == "joining", 20, "n4 never waited to join")
        assert cli.main(["members", "add", "n4", n4.url, "--endpoints", cluster.url(0),
                         "--admin-token", TOKEN]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["epoch"], answer["settled"], answer["quorum"]) == (1, True, 3)
        assert [m["name"] for m in answer["members"]] == ["n1", "n2", "n3", "n4"]
        wait_until(lambda: identity_state(n4.url) == "member", 20, "n4 never became a member")
        with httpx.Client(base_url=n4.url, timeout=10) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 20, "n4 not ready")
            for i in range(20):
                local = http.post("/v1/get", json={"key": f"k{i}", "consistency": "local"})
                assert local.json()["value"] == f"v{i}", f"n4 lacks k{i}: {local.text}"
            assert http.post("/v1/put", json={"key": "via-n4", "value": 4}).json()["found"]
        listed = admin(cluster.url(1), "/v1/admin/members").json()
        assert (listed["epoch"], listed["step"]) == (1, None)
        assert all(m["reachable"] for m in listed["members"]), listed

        removed = admin(cluster.url(1), "/v1/admin/members/remove", {"name": "n4"})
        assert removed.status_code == 200, removed.text
        assert (removed.json()["epoch"], [m["name"] for m in removed.json()["members"]]) == (
            2, ["n1", "n2", "n3"])
        wait_until(lambda: "this node was removed from the cluster" in
                   (cluster.log_dir / "n4.log").read_text(), 10, "n4 never heard")
        # Restarted with its old data, the removed member is fenced out: it says so,
        # the members refuse its links, and it decides nothing.
        proc.terminate()
        proc.wait()
        proc = start_joining(cluster, n4)  # --join is ignored: its directory has a cluster
        wait_until(lambda: "this node is not a member of its cluster" in
                   (cluster.log_dir / "n4.log").read_text(), 20, "n4 did not say it")
        wait_until(lambda: "'n4' is not a member" in (cluster.log_dir / "n1.log").read_text(),
                   20, "n1 did not refuse n4")
        refused = httpx.post(n4.url + "/v1/put", json={"key": "from-n4", "value": 1},
                             timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "no_quorum"
    finally:
        proc.kill()
        proc.wait()
    with cluster.client() as client:
        for i in range(20):
            assert client.get(f"k{i}").value == f"v{i}"
        assert client.get("via-n4").value == 4
        assert not client.get("from-n4").found


def test_membership_calls_with_bad_input_are_refused_and_change_nothing(
        cluster: LocalCluster) -> None:
    url = cluster.url(0)
    free = free_ports(1)[0]
    cases = [
        ("/v1/admin/members/add", {"name": "n9", "url": f"http://127.0.0.1:{free}"}, 400,
         "url", f"no node answers at http://127.0.0.1:{free}"),
        ("/v1/admin/members/add", {"name": "n9", "url": "not-a-url"}, 400, "url",
         "url must be the node's base URL"),
        ("/v1/admin/members/add", {"name": "n2", "url": cluster.url(1)}, 400, "url",
         "is not waiting to join (it is member)"),
        ("/v1/admin/members/remove", {"name": "zz"}, 400, "membership", "'zz' is not a member"),
        ("/v1/admin/members/remove", {"name": "bad name!"}, 400, "name", "a node name is"),
        ("/v1/admin/members/remove", {"name": "n1", "extra": 1}, 400, "extra", "unknown"),
    ]
    for path, body, status, field, message in cases:
        assert isinstance(body, dict)
        answer = admin(url, path, body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert error["field"] == field and message in error["message"], (body, error)
    unauthorized = httpx.post(url + "/v1/admin/members/remove", json={"name": "n3"})
    assert unauthorized.status_code == 401
    listed = admin(url, "/v1/admin/members").json()
    assert (listed["epoch"], len(listed["members"])) == (0, 3)


def test_the_members_command_lists_and_refuses_with_one_line(
        cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    endpoints = ["--endpoints", ",".join(cluster.urls)]
    assert cli.main(["members", "list", *endpoints, "--admin-token", TOKEN, "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["epoch"], [m["name"] for m in listed["members"]]) == (0, ["n1", "n2", "n3"])
    assert cli.main(["members", "list", *endpoints, "--admin-token", TOKEN,
                     "-o", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "URL", "MEMBER", "ID", "REACHABLE"]
    assert table[-1] == "epoch 0, settled, quorum 2"
    assert cli.main(["members", "remove", "zz", *endpoints, "--admin-token", TOKEN]) == 2
    assert capsys.readouterr().err == (
        "paxoskv: error: invalid_member (membership): 'zz' is not a member\n")
    assert cli.main(["members", "list", *endpoints, "--admin-token", "wrong"]) == 2
    assert "the admin token is not valid" in capsys.readouterr().err


def test_a_joining_node_bootstraps_alone_when_asked_and_the_next_one_joins_it(
        tmp_path: Path) -> None:
    """How the operator starts a cluster: every pod waits to join; the first is told to
    bootstrap alone (with the member id the caller saw), the others are added to it."""
    n1, n2 = (LocalMember(f"n{i}", "127.0.0.1", port, tmp_path / f"n{i}")
              for i, port in enumerate(free_ports(2), start=1))
    procs: list[subprocess.Popen[bytes]] = []

    def start(member: LocalMember) -> None:
        log = open(tmp_path / f"{member.name}.log", "ab")  # noqa: SIM115 - the child's
        procs.append(subprocess.Popen(
            [*serve_command(member, [n1, n2], bootstrap=False, join=True)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PAXOSKV_ADMIN_TOKEN": TOKEN}))
        log.close()

    def bootstrap(member: LocalMember, member_id: Any, token: str = TOKEN) -> httpx.Response:
        return httpx.post(member.url + "/v1/admin/bootstrap", json={"member_id": member_id},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)

    try:
        start(n1)
        start(n2)
        for member in (n1, n2):
            wait_until(lambda m=member: identity_state(m.url) == "joining", 20,  # type: ignore[misc]
                       f"{member.name} never waited to join")
        pending = httpx.get(n1.url + "/v1/identity").json()["member_id"]
        assert bootstrap(n1, pending, token="wrong").status_code == 401
        stale = bootstrap(n1, "0" * 16)
        assert stale.status_code == 409, stale.text
        assert "pending member id is " + pending in stale.json()["error"]["message"]
        assert bootstrap(n1, pending).status_code == 202
        wait_until(lambda: identity_state(n1.url) == "member", 20, "n1 never bootstrapped")
        with httpx.Client(base_url=n1.url, timeout=10) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 20, "n1 not ready")
            assert http.post("/v1/put", json={"key": "k", "value": 1}).json()["found"]
        # A second cluster under the same names is refused: n1 is a member already.
        second = bootstrap(n2, httpx.get(n2.url + "/v1/identity").json()["member_id"])
        assert second.status_code == 409, second.text
        assert "peer n1 is a member of a cluster already" in second.json()["error"]["message"]
        added = admin(n1.url, "/v1/admin/members/add", {"name": "n2", "url": n2.url})
        assert added.status_code == 200, added.text
        assert [m["name"] for m in added.json()["members"]] == ["n1", "n2"]
        wait_until(lambda: identity_state(n2.url) == "member", 20, "n2 never joined")
        local = httpx.post(n2.url + "/v1/get", json={"key": "k", "consistency": "local"},
                           timeout=10)
        assert local.json()["value"] == 1, local.text
        # Restarted with --join, n1 serves as the member it is: the flag is for empty
        # directories only.
        procs[0].terminate()
        procs[0].wait(10)
        start(n1)
        wait_until(lambda: identity_state(n1.url) == "member", 20, "n1 did not come back")
        with httpx.Client(base_url=n1.url, timeout=10) as http:
            assert http.post("/v1/get", json={"key": "k"}).json()["value"] == 1
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
