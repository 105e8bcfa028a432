"""Data-directory identity (issue 8, violation 3): a node on a wiped directory never
votes as the member it was, two nodes never share a directory, and nodes with other
member lists are fenced out. Real node processes on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paxoskv.devcluster import serve_command
from paxoskv.server import identity as ident
from tests.harness import LocalCluster


def _serve(cluster: LocalCluster, index: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run node `index` in the foreground, for a start that must fail at once."""
    member = cluster.members[index]
    command = [arg for arg in serve_command(member, cluster.members) if arg != "--bootstrap"]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60)


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("paxoskv: error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


def test_a_wiped_member_is_refused_and_the_cluster_is_unharmed(cluster3: LocalCluster
                                                                 ) -> None:
    with cluster3.client() as kv:
        written = {f"k{i}": kv.put(f"k{i}", f"v{i}") for i in range(20)}
    cluster3.kill(0)
    shutil.rmtree(cluster3.members[0].data_dir)
    # Told to bootstrap by mistake: its peers know its old member id.
    refused = _serve(cluster3, 0, "--bootstrap")
    _one_line_error(refused, "lost", "new member")
    # Not told to bootstrap: an empty directory holds no cluster.
    _one_line_error(_serve(cluster3, 0), "holds no cluster", "--bootstrap")
    with cluster3.client(1) as kv:
        for key, entry in written.items():
            again = kv.put(key, "overwrite?")
            assert (again.value, again.token) == (entry.value, entry.token)


def test_a_node_with_an_empty_directory_needs_bootstrap(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 1)
    _one_line_error(_serve(cluster, 0), "holds no cluster")
    try:  # the refusal left the directory as it was: bootstrapping it works
        cluster.start(0)
        cluster.wait_ready([0])
        with cluster.client() as kv:
            assert kv.put("first", "value").token == 1
    finally:
        cluster.close()


def test_two_nodes_never_share_a_data_directory(cluster3: LocalCluster) -> None:
    _one_line_error(_serve(cluster3, 1), "in use by another node")
    with cluster3.client() as kv:
        assert kv.put("still", "serving").ok


def test_a_member_list_that_differs_is_refused(cluster3: LocalCluster) -> None:
    cluster3.stop(2)
    member = cluster3.members[2]
    others = [m for m in cluster3.members if m is not member]
    # The same directory under a two-member --peers list.
    command = [arg for arg in serve_command(member, [*others[:1], member])
               if arg != "--bootstrap"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    _one_line_error(result, "membership change")


@pytest.mark.parametrize("answers, outcome", [
    ({}, None),  # nobody answered: wait
    ({"b": {"state": "bootstrapping", "member_id": "B", "names": ["a", "b", "c"]}}, None),
    ({"b": {"state": "bootstrapping", "member_id": "B", "names": ["a", "b", "c"]},
      "c": {"state": "bootstrapping", "member_id": "C", "names": ["a", "b", "c"]}},
     {"a": "A", "b": "B", "c": "C"}),
    ({"b": {"state": "member", "cluster_id": "X", "members": {"a": "A", "b": "B", "c": "C"}}},
     {"a": "A", "b": "B", "c": "C"}),
])
def test_bootstrap_waits_for_every_peer_or_joins_the_cluster_that_lists_it(
        answers: dict[str, dict[str, object]], outcome: dict[str, str] | None) -> None:
    settled = ident.decide("a", "A", ["a", "b", "c"], answers)
    assert (None if settled is None else settled.members) == outcome


@pytest.mark.parametrize("answer, words", [
    ({"state": "member", "cluster_id": "X", "members": {"a": "OLD", "b": "B", "c": "C"}},
     "lost"),
    ({"state": "bootstrapping", "member_id": "B", "names": ["a", "b"]}, "same --peers"),
])
def test_bootstrap_refuses_a_lost_member_or_another_member_list(answer: dict[str, object],
                                                                 words: str) -> None:
    with pytest.raises(ident.IdentityError, match=words):
        ident.decide("a", "A", ["a", "b", "c"], {"b": answer})


def test_peers_presenting_other_ids_are_refused() -> None:
    me = ident.Identity("C1", "A", {"a": "A", "b": "B"})
    assert me.peer_problem("b", "C1", "B") is None
    assert "lost its data" in str(me.peer_problem("b", "C1", "B2"))
    assert "another --peers" in str(me.peer_problem("b", "C2", "B"))
    assert "not a member" in str(me.peer_problem("z", "C1", "Z"))


def test_the_cli_documents_bootstrap() -> None:
    result = subprocess.run([sys.executable, "-m", "paxoskv", "serve", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--bootstrap" in result.stdout
