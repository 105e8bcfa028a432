"""The operator's decisions (operator/paxoskv_operator/plan.py), without a cluster: each
observation gives the one step a careful human would take, and the steps chain from a
new resource to a whole cluster, through scaling and a member's lost volume."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from paxoskv.server.auth import digest, parse_tokens
from paxoskv_operator import install, plan
from paxoskv_operator import manifests as m
from paxoskv_operator.certificates import cluster_certificates
from paxoskv_operator.plan import (
    Add,
    Bootstrap,
    DeleteClaim,
    DeletePod,
    Observed,
    Pod,
    Remove,
    Resume,
    ScaleStatefulSet,
    Wait,
)

CLUSTER = "c0ffee"


def member(ordinal: int, members: dict[int, str], epoch: int = 1, settled: bool = True,
           ready: bool = True) -> Pod:
    config = {"epoch": epoch, "settled": settled,
              "members": [{"name": f"kv-{n}", "member_id": mid, "url": "u"}
                          for n, mid in members.items()]}
    return Pod(ordinal, ready, f"10.0.0.{ordinal}", identity={
        "state": "member", "cluster_id": CLUSTER, "member_id": members.get(ordinal, "old"),
        "config": config})


def joining(ordinal: int, member_id: str = "new") -> Pod:
    return Pod(ordinal, False, f"10.0.0.{ordinal}", identity={"state": "joining",
                                                              "member_id": member_id})


def world(desired: int, members: dict[int, str], sts: int, extra: dict[int, Pod] | None = None,
          claims: set[int] | None = None, **kwargs: Any) -> Observed:
    pods = {n: member(n, members) for n in members}
    pods.update(extra or {})
    return Observed("kv", desired, statefulset_replicas=sts, pods=pods,
                    claims=frozenset(claims if claims is not None else set(pods)),
                    cluster_id=CLUSTER, **kwargs)


def test_a_new_resource_gets_one_pod_then_bootstraps_it_alone() -> None:
    assert plan.next_action(Observed("kv", 3)) == ScaleStatefulSet(1)
    starting = Observed("kv", 3, statefulset_replicas=1, pods={0: Pod(0)},
                        claims=frozenset({0}))
    assert isinstance(plan.next_action(starting), Wait)
    ready = Observed("kv", 3, statefulset_replicas=1, pods={0: joining(0, "m0")},
                     claims=frozenset({0}))
    assert plan.next_action(ready) == Bootstrap(0, "m0")


def test_a_cluster_is_never_bootstrapped_twice() -> None:
    # Recorded, but every pod came back empty: reported, not repaired by force.
    lost = Observed("kv", 3, statefulset_replicas=3, cluster_id=CLUSTER,
                    pods={n: joining(n) for n in range(3)}, claims=frozenset(range(3)))
    action = plan.next_action(lost)
    assert isinstance(action, Wait) and action.reason == "DataLost" and action.degraded
    # Not recorded, but a member answers: its cluster is adopted, not made anew.
    adopted = Observed("kv", 1, statefulset_replicas=1, pods={0: member(0, {0: "m0"})},
                       claims=frozenset({0}))
    assert adopted.cluster == CLUSTER and plan.next_action(adopted) == plan.IDLE
    # Not recorded, and another pod's claim exists (its pod not up yet): wait.
    other = Observed("kv", 3, statefulset_replicas=3, pods={0: joining(0)},
                     claims=frozenset({0, 1}))
    assert isinstance(plan.next_action(other), Wait)


def test_scale_up_adds_the_pod_first_then_the_member_one_at_a_time() -> None:
    one = {0: "m0"}
    assert plan.next_action(world(3, one, sts=1)) == ScaleStatefulSet(2)
    assert isinstance(plan.next_action(world(3, one, sts=2)), Wait)  # pod 1 not up yet
    assert plan.next_action(world(3, one, sts=2, extra={1: joining(1)})) == Add(1)
    two = {0: "m0", 1: "m1"}
    assert plan.next_action(world(3, two, sts=2)) == ScaleStatefulSet(3)
    assert plan.next_action(world(3, two, sts=3, extra={2: joining(2)})) == Add(2)
    assert plan.next_action(world(3, {0: "m0", 1: "m1", 2: "m2"}, sts=3)) == plan.IDLE


def test_no_step_starts_while_a_member_is_not_ready() -> None:
    observed = world(4, {0: "m0", 1: "m1", 2: "m2"}, sts=4, extra={3: joining(3)})
    pods = dict(observed.pods)
    pods[1] = member(1, {0: "m0", 1: "m1", 2: "m2"}, ready=False)
    action = plan.next_action(Observed(**{**observed.__dict__, "pods": pods}))
    assert isinstance(action, Wait) and "kv-1" in action.message


def test_a_half_done_step_is_resumed_first() -> None:
    members = {0: "m0", 1: "m1", 2: "m2"}
    pods = {n: member(n, members, epoch=4, settled=False) for n in members}
    observed = Observed("kv", 5, statefulset_replicas=3, pods=pods,
                        claims=frozenset(members), cluster_id=CLUSTER)
    assert plan.next_action(observed) == Resume(4)


def test_scale_down_removes_the_member_then_the_pod_then_the_claim() -> None:
    five = {n: f"m{n}" for n in range(5)}
    assert plan.next_action(world(3, five, sts=5)) == Remove("kv-4", "scale down")
    four = {n: f"m{n}" for n in range(4)}
    removed = world(3, four, sts=5, extra={4: member(4, four, ready=False)})
    assert plan.next_action(removed) == Remove("kv-3", "scale down")
    three = {n: f"m{n}" for n in range(3)}
    assert plan.next_action(world(3, three, sts=5)) == ScaleStatefulSet(3)
    shrunk = world(3, three, sts=3, claims={0, 1, 2, 3, 4})
    assert plan.next_action(shrunk) == DeleteClaim(3, "its member was removed and its pod "
                                                      "is gone")
    # A member being removed for scale-down may be down itself.
    down = world(2, three, sts=3, extra={2: Pod(2)})
    assert plan.next_action(down) == Remove("kv-2", "scale down")


def test_a_member_whose_volume_came_back_empty_is_replaced() -> None:
    three = {0: "m0", 1: "m1", 2: "m2"}
    lost = world(3, three, sts=3, extra={1: joining(1, "fresh")})
    assert plan.next_action(lost) == Remove("kv-1", "lost its data")
    after = world(3, {0: "m0", 2: "m2"}, sts=3, extra={1: joining(1, "fresh")})
    assert plan.next_action(after) == Add(1)


def test_a_pod_with_data_from_before_its_removal_is_emptied_before_it_joins() -> None:
    two = {0: "m0", 1: "m1"}
    stale = world(3, two, sts=3, extra={2: member(2, {0: "m0", 1: "m1", 2: "m2"})})
    assert plan.next_action(stale) == DeleteClaim(2, "it holds this cluster's data from "
                                                     "before it was removed; it must come "
                                                     "back empty to join again")


def test_a_pod_whose_claim_is_gone_is_made_anew() -> None:
    three = {0: "m0", 1: "m1", 2: "m2"}
    pending = world(3, three, sts=3, extra={1: Pod(1)}, claims={0, 2})
    assert plan.next_action(pending) == DeletePod(1)


def test_paused_changes_nothing() -> None:
    action = plan.next_action(world(5, {0: "m0"}, sts=1, paused=True))
    assert isinstance(action, Wait) and action.reason == "Paused"


def test_status_reports_members_quorum_and_conditions() -> None:
    members = {0: "m0", 1: "m1", 2: "m2"}
    pods = {n: member(n, members, epoch=2, ready=n != 2) for n in members}
    observed = Observed("kv", 3, statefulset_replicas=3, pods=pods,
                        claims=frozenset(members), cluster_id=CLUSTER)
    action = plan.next_action(observed)
    status = plan.status(observed, action, 7, m.selector_string("kv"))
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert (status["replicas"], status["readyReplicas"], status["configEpoch"],
            status["observedGeneration"]) == (3, 2, 2, 7)
    assert conditions["Ready"][0] == "False" and conditions["Quorate"] == ("True",
                                                                           "QuorumReady")
    assert conditions["Degraded"] == ("True", "MembersNotReady")
    assert [(s["name"], s["ready"]) for s in status["members"]] == [
        ("kv-0", True), ("kv-1", True), ("kv-2", False)]


def test_manifests_keep_a_quorum_and_name_the_pods_peers() -> None:
    owner = {"metadata": {"name": "kv", "namespace": "ns", "uid": "u1"},
             "spec": {"replicas": 3}}
    assert m.disruption_budget(owner, 2, "policy/v1") is None  # would block drains forever
    budget = m.disruption_budget(owner, 5, "policy/v1beta1")
    assert budget is not None and budget["spec"]["maxUnavailable"] == 2
    sts = m.statefulset(owner, "img", 1)
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--join" in args and "--bootstrap" not in args
    assert "kv-8=https://kv-8.kv-peers.ns.svc.cluster.local:7001" in args[args.index("--peers")
                                                                           + 1]
    # The hash does not change with the replicas, which the operator sets step by step.
    assert (m.statefulset(owner, "img", 5)["metadata"]["annotations"]
            == sts["metadata"]["annotations"])
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_tls_and_tokens_are_on_unless_the_spec_turns_them_off() -> None:
    def pod(spec: dict[str, Any]) -> dict[str, Any]:
        owner = {"metadata": {"name": "kv", "namespace": "ns", "uid": "u1"}, "spec": spec}
        template: dict[str, Any] = m.statefulset(owner, "img", 3)["spec"]["template"]["spec"]
        return template

    secure = pod({})
    node = secure["containers"][0]
    args, env = node["args"], {e["name"]: e for e in node["env"]}
    assert args[args.index("--tls-cert") + 1] == "/etc/paxoskv/tls/tls.crt"
    assert args[args.index("--auth-file") + 1] == "/etc/paxoskv/auth/tokens.toml"
    assert {v["name"]: v["secret"]["secretName"] for v in secure["volumes"]} == {
        "tls": "kv-tls", "auth": "kv-tokens"}
    assert node["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # `kubectl exec kv-0 -- paxoskv get k` finds the node, the CA and the token.
    assert env["PAXOSKV_ENDPOINTS"]["value"] == "https://127.0.0.1:7001"
    assert env["PAXOSKV_CACERT"]["value"] == "/etc/paxoskv/tls/ca.crt"
    assert env["PAXOSKV_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kv-tokens",
                                                                      "key": "token"}
    mine = pod({"tls": {"secretName": "from-cert-manager"}})
    assert mine["volumes"][0]["secret"]["secretName"] == "from-cert-manager"
    plain = pod({"tls": {"enabled": False}, "auth": {"enabled": False}})
    node = plain["containers"][0]
    assert "volumes" not in plain and "--tls-cert" not in node["args"]
    assert "--auth-file" not in node["args"]
    assert "kv-0=http://" in node["args"][node["args"].index("--peers") + 1]
    assert node["livenessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_the_tokens_file_made_for_a_cluster_grants_its_token_everything() -> None:
    token = "a-token-made-by-the-operator-0123"
    text = m.client_tokens_file(hashlib.sha256(token.encode()).hexdigest())
    grant = parse_tokens(text, "tokens.toml")[digest(token)]
    assert grant.name == "client" and grant.may("*", None) and grant.may("write", "any")


async def test_the_members_certificate_serves_every_name_and_verifies_peers(
        tmp_path: Path) -> None:
    files = cluster_certificates("kv", "ns")
    for name, pem in files.items():
        (tmp_path / name).write_text(pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.load_verify_locations(tmp_path / "ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED  # a member as a client: mutual
    peers: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))  # verified, or no handshake
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listening.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    client.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    try:
        for host in ("kv-4.kv-peers.ns.svc.cluster.local", "kv.ns.svc", "kv", "localhost",
                     "127.0.0.1"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                           server_hostname=host)
            assert await reader.read() == b"ok"  # the server took our certificate
            writer.close()
        assert len(peers) == 5 and all(dict(p["subject"][0])["commonName"] == "kv"
                                       for p in peers)
        for host in ("kv-4.other-peers.ns.svc.cluster.local", "kv.other"):
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                              server_hostname=host)
    finally:
        listening.close()
        await listening.wait_closed()


def every_manifest() -> list[dict[str, Any]]:
    """What the operator makes for a resource using every spec field, and what
    deploy/paxoskv.yaml installs."""
    owner = {"metadata": {"name": "kv", "namespace": "ns", "uid": "u1"}, "spec": {
        "replicas": 5, "image": "img", "imagePullPolicy": "Always", "logLevel": "debug",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "storage": {"size": "2Gi", "storageClassName": "fast"},
        "scheduling": {"antiAffinity": "required", "nodeSelector": {"disk": "ssd"},
                       "tolerations": [{"key": "k", "operator": "Exists"}],
                       "priorityClassName": "high"}}}
    budget = m.disruption_budget(owner, 5, "policy/v1")
    assert budget is not None
    return [m.peer_service(owner), m.client_service(owner), m.admin_secret(owner, "t"),
            m.tokens_secret(owner, m.client_tokens_file("0" * 64), "t"),
            m.tls_secret(owner, {"ca.crt": "c", "tls.crt": "c", "tls.key": "k"}),
            m.statefulset(owner, "img", 5), budget, *install.objects()]


def test_the_manifests_validate_against_current_kubernetes_schemas() -> None:
    versions = sorted(set(kubernetes_validate.utils.all_versions()),
                      key=lambda v: tuple(int(p) for p in v.split(".")))[-3:]
    for version in versions:
        for manifest in every_manifest():
            kubernetes_validate.validate(manifest, version, strict=True)


def test_deploy_file_is_what_the_install_module_makes() -> None:
    committed = (Path(__file__).resolve().parents[1] / "deploy" / "paxoskv.yaml").read_text()
    assert committed == install.document(), ("deploy/paxoskv.yaml is stale: run "
                                             "`python -m paxoskv_operator.install > "
                                             "deploy/paxoskv.yaml`")
