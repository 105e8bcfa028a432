"""TLS and tokens on a real cluster: three nodes serving HTTPS with certificates made
here (peers mutual), the data API behind bearer tokens with per-bucket scopes; refusals
write nothing; certificates and tokens reloaded from their files while the nodes run."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest

from paxoskv.client import Client, PaxosKVError, Unreachable, tls_context
from paxoskv.devcluster import free_ports
from paxoskv.server.auth import SCOPES, Grant, digest, parse_tokens
from tests.harness import wait_until
from tests.k8s.pki import Pki

ADMIN = "admin-token-of-the-test-0123456789"
WRITER = "writer-token-0123456789abcdef"  # write orders*, read config
READER = "reader-token-0123456789abcdef"  # read orders
ALL = "all-token-0123456789abcdef0123"  # read and write everything


def tokens_file(extra: str = "") -> str:
    return f"""
[[token]]
name = "writer"
token = "{WRITER}"
read = ["config"]
write = ["orders*"]

[[token]]
name = "reader"
sha256 = "{digest(READER)}"
read = ["orders"]

[[token]]
name = "all"
token = "{ALL}"
read = ["*"]
write = ["*"]
{extra}"""


@dataclass
class SecureCluster:
    root: Path
    pki: Path
    other_pki: Path
    urls: list[str]
    procs: list[subprocess.Popen[bytes]]
    authority: Pki  # signs the nodes' certificates

    @property
    def ca(self) -> str:
        return str(self.pki / "ca.crt")

    def client(self, token: str | None, **options: object) -> Client:
        return Client(self.urls, auth_token=token, cafile=self.ca, **options)

    def http(self, cert: str | None = None) -> httpx.Client:
        context = tls_context(self.ca, *((str(self.pki / f"{cert}.crt"),
                                          str(self.pki / f"{cert}.key")) if cert else ()))
        return httpx.Client(verify=context, timeout=5.0)


def node_command(name: str, peers: str, port: int, root: Path, pki: Path,
                 *extra: str) -> list[str]:
    return [sys.executable, "-m", "paxoskv", "serve", "--name", name, "--peers", peers,
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(root / name), "--bootstrap",
            "--tls-cert", str(pki / "node.crt"), "--tls-key", str(pki / "node.key"),
            "--tls-ca", str(pki / "ca.crt"), "--auth-file", str(root / "tokens.toml"),
            "--admin-token", ADMIN, "--log-level", "warning", *extra]


def issue_node_certificate(pki: Pki) -> None:
    """One certificate for every node, for both ends of a peer link."""
    pki.issue("node", "paxoskv node", server=True, client=True, dns=["localhost"],
              ips=["127.0.0.1"])


def make_pki(directory: Path, ca_name: str) -> Pki:
    pki = Pki(directory, ca_name)
    issue_node_certificate(pki)
    pki.issue("expired", "paxoskv node", server=True, client=True, ips=["127.0.0.1"],
              expired=True)
    pki.issue("app", "an application")  # a client certificate: not a key for a node
    return pki


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    root = tmp_path_factory.mktemp("secure")
    authority = make_pki(root / "pki", "test CA")
    make_pki(root / "other", "another CA")
    (root / "tokens.toml").write_text(tokens_file())
    ports = free_ports(3)
    urls = [f"https://127.0.0.1:{p}" for p in ports]
    peers = ",".join(f"n{i + 1}={u}" for i, u in enumerate(urls))
    procs = []
    for i, port in enumerate(ports):
        log = open(root / f"n{i + 1}.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(subprocess.Popen(node_command(f"n{i + 1}", peers, port, root,
                                                   root / "pki"),
                                      stdout=log, stderr=subprocess.STDOUT))
        log.close()
    found = SecureCluster(root, root / "pki", root / "other", urls, procs, authority)
    try:
        with found.http() as http:
            seen: list[str] = []

            def ready() -> bool:
                try:
                    answers = [http.get(u + "/readyz") for u in urls]
                    seen[:] = [f"{u}: {a.status_code} {a.text}" for u, a in zip(urls, answers,
                                                                               strict=True)]
                    return all(a.status_code == 200 for a in answers)
                except httpx.HTTPError as exc:
                    seen[:] = [repr(exc)]
                    return False
            wait_until(ready, 30, lambda: "not ready over TLS: " + "; ".join(seen) + "; exits "
                       f"{[p.poll() for p in procs]}; logs: " + "".join(
                           (root / f"n{i}.log").read_text()[-2000:] for i in (1, 2, 3)))
        yield found
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=10) == 0


def test_a_client_with_the_ca_and_a_token_reads_and_writes(cluster: SecureCluster) -> None:
    with cluster.client(WRITER, bucket="orders") as kv:
        put = kv.put("o1", {"qty": 2})
        assert put.created and put.value == {"qty": 2}
        assert kv.get("o1").value == {"qty": 2}
        assert kv.put("o1", "other").value == {"qty": 2}  # a put still never overwrites
    with cluster.client(READER, bucket="orders") as kv:
        assert kv.get("o1").value == {"qty": 2}


def test_missing_or_wrong_tokens_are_401_and_write_nothing(cluster: SecureCluster) -> None:
    with cluster.http() as http:
        for headers, error in (({}, None), ({"Authorization": "Bearer not-a-token"},
                                            "invalid_token"),
                               ({"Authorization": f"Bearer {ADMIN}"}, "invalid_token"),
                               ({"Authorization": f"Basic {WRITER}"}, None)):
            answer = http.post(cluster.urls[0] + "/v1/put", headers=headers,
                               json={"bucket": "orders", "key": "refused", "value": 1})
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "unauthorized"
            assert answer.json()["error"]["field"] == "authorization"
            challenge = answer.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="paxoskv"')
            assert (f'error="{error}"' in challenge) == (error is not None)
    with cluster.client(ALL, bucket="orders") as kv:
        assert not kv.get("refused").found
    # The client reports the refusal as such, naming the field.
    with cluster.client(None, bucket="orders") as kv, pytest.raises(PaxosKVError) as raised:
        kv.get("o1")
    assert (raised.value.code, raised.value.status) == ("unauthorized", 401)


def test_scopes_are_per_bucket_and_a_refusal_writes_nothing(cluster: SecureCluster) -> None:
    with cluster.client(READER, bucket="orders") as kv:
        with pytest.raises(PaxosKVError) as raised:
            kv.put("by-reader", 1)
        assert (raised.value.code, raised.value.status, raised.value.field) == (
            "forbidden", 403, "bucket")
        assert "'reader' may not write bucket 'orders'" in raised.value.message
        with pytest.raises(PaxosKVError, match="may not read bucket 'config'"):
            kv.get("x", bucket="config")
    with cluster.client(WRITER) as kv:
        # write "orders*" covers orders and orders-eu, and includes reading them.
        assert kv.put("w", 1, bucket="orders-eu").created
        assert kv.get("w", bucket="orders-eu").value == 1
        assert not kv.get("x", bucket="config").found  # read-only there
        with pytest.raises(PaxosKVError, match="may not write bucket 'config'"):
            kv.put("x", 1, bucket="config")
        with pytest.raises(PaxosKVError, match="may not write bucket 'locks'"):
            kv.delete("x", bucket="locks")
    with cluster.http() as http:
        # A body naming no bucket is checked as the default bucket, which it is.
        for path in ("/v1/put", "/v1/get", "/v1/delete", "/v1/list"):
            answer = http.post(cluster.urls[0] + path, json={"key": "k", "value": 1}
                               if path == "/v1/put" else {"key": "k"} if path != "/v1/list"
                               else {}, headers={"Authorization": f"Bearer {READER}"})
            assert answer.status_code == 403, (path, answer.text)
            assert "bucket 'default'" in answer.json()["error"]["message"]
    with cluster.client(ALL) as kv:
        assert not kv.get("by-reader", bucket="orders").found
        assert not kv.get("x", bucket="config").found
        assert not kv.get("k").found


def test_sessions_need_a_token_and_bindings_a_write(cluster: SecureCluster) -> None:
    with cluster.http() as http:
        answer = http.post(cluster.urls[1] + "/v1/session/open", json={"ttl_ms": 5000})
        assert answer.status_code == 401
    with cluster.client(WRITER, bucket="orders") as kv, kv.session(ttl=5.0) as session:
        held = kv.put("held", "me", session=session.id)
        assert held.bindings["pid"] == session.id
        with pytest.raises(PaxosKVError, match="may not write bucket 'config'"):
            kv.put("held", "me", bucket="config", session=session.id)


def test_a_session_is_kept_alive_and_closed_by_its_own_token_only(
        cluster: SecureCluster) -> None:
    with cluster.http() as http:
        def call(path: str, token: str, body: dict[str, object]) -> httpx.Response:
            return http.post(cluster.urls[0] + path, json=body,
                             headers={"Authorization": f"Bearer {token}"})

        opened = call("/v1/session/open", WRITER, {"ttl_ms": 10_000})
        assert opened.status_code == 200, opened.text
        sid = opened.json()["session"]
        assert call("/v1/put", WRITER, {"bucket": "orders", "key": "held-by-session",
                                        "value": 1, "bindings": {"pid": sid}}).is_success
        # A reader sees the session id (the key's pid) but cannot end the owner's keys.
        assert call("/v1/pid", READER, {"bucket": "orders", "key": "held-by-session"}
                    ).json()["pid"] == sid
        for path in ("/v1/session/keepalive", "/v1/session/close"):
            refused = call(path, READER, {"session": sid})
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["field"] == "session"
        assert call("/v1/get", READER, {"bucket": "orders", "key": "held-by-session"}
                    ).json()["found"]
        assert call("/v1/session/keepalive", WRITER, {"session": sid}).is_success
        # A token that may write every bucket may close any session.
        assert call("/v1/session/close", ALL, {"session": sid}).json()["closed"]


def test_the_admin_token_stays_separate(cluster: SecureCluster) -> None:
    with cluster.http() as http:
        report = {"source": "test", "nodes": {}}
        refused = http.post(cluster.urls[0] + "/v1/admin/nodes", json=report,
                            headers={"Authorization": f"Bearer {ALL}"})
        assert refused.status_code == 401
        taken = http.post(cluster.urls[0] + "/v1/admin/nodes", json=report,
                          headers={"Authorization": f"Bearer {ADMIN}"})
        assert taken.status_code == 200, taken.text
        # Health, readiness, status and the document stay open.
        for path in ("/healthz", "/readyz", "/v1/status", "/v1/openapi.json", "/metrics"):
            assert http.get(cluster.urls[0] + path).status_code == 200, path


def test_clients_verify_the_server(cluster: SecureCluster) -> None:
    # Without the cluster's CA, the system's CAs do not know the nodes' certificate.
    with (Client(cluster.urls, auth_token=ALL, no_quorum="fail") as kv,
          pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED")):
        kv.get("o1", bucket="orders")
    # Trusting another CA is no better.
    with Client(cluster.urls, auth_token=ALL, cafile=str(cluster.other_pki / "ca.crt"),
                no_quorum="fail") as kv, pytest.raises(Unreachable):
        kv.get("o1", bucket="orders")
    # Plain HTTP to a TLS port is not served.
    with Client([u.replace("https", "http") for u in cluster.urls], auth_token=ALL,
                no_quorum="fail", timeout=2.0) as kv, pytest.raises(PaxosKVError):
        kv.get("o1", bucket="orders")
    # A missing CA file is a clear error at construction.
    with pytest.raises(ValueError, match=r"/nonexistent/ca\.crt: no such file"):
        Client(cluster.urls, cafile="/nonexistent/ca.crt")


async def _peer_connect(cluster: SecureCluster, context: ssl.SSLContext) -> int:
    """The status of a WebSocket upgrade on n1's peer endpoint made with `context`,
    presenting n2's identity (public: any caller can read it, so it proves nothing)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.urls[0] + "/v1/identity", ssl=context) as answer:
            known = await answer.json()
        headers = {"X-PaxosKV-Peer": "n2", "X-PaxosKV-Cluster": known["cluster_id"],
                   "X-PaxosKV-Member": known["members"]["n2"]}
        try:
            async with http.ws_connect(cluster.urls[0] + "/v1/peer", ssl=context,
                                       headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def _context(cluster: SecureCluster, pki: Path | None, cert: str | None) -> ssl.SSLContext:
    return tls_context(cluster.ca, *((str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
                                     if pki is not None and cert else ()))


async def test_the_peer_endpoint_takes_only_certificates_of_the_ca(
        cluster: SecureCluster) -> None:
    # A member's certificate: the peer connection is taken.
    assert await _peer_connect(cluster, _context(cluster, cluster.pki, "node")) == 101
    # No client certificate: the handshake passes (clients need none), the endpoint
    # refuses, though the identity headers are right.
    assert await _peer_connect(cluster, _context(cluster, None, None)) == 403
    assert "must present a certificate signed by the cluster's CA" in (
        cluster.root / "n1.log").read_text()
    # A certificate of the CA that does not name the member (an application's): refused.
    assert await _peer_connect(cluster, _context(cluster, cluster.pki, "app")) == 403
    assert "does not name 127.0.0.1" in (cluster.root / "n1.log").read_text()
    # Expired, or from another CA: the server refuses the certificate in the handshake
    # (TLS 1.2 here: under 1.3 the client would learn it only at its first read), where
    # the same connection without a client certificate completes.
    host, port = cluster.urls[0].removeprefix("https://").split(":")
    for pki, cert in ((None, None), (cluster.pki, "expired"), (cluster.other_pki, "node")):
        context = _context(cluster, pki, cert)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        if pki is None:
            _, writer = await asyncio.open_connection(host, int(port), ssl=context)
            writer.close()
            continue
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection(host, int(port), ssl=context)


def test_tokens_and_certificates_are_reloaded(cluster: SecureCluster) -> None:
    late = "late-token-0123456789abcdef0"
    tokens = cluster.root / "tokens.toml"
    tokens.write_text(tokens_file(f'\n[[token]]\nname = "late"\ntoken = "{late}"\n'
                                  'read = ["*"]\n'))
    with cluster.client(late, bucket="orders", no_quorum="fail") as kv:
        def takes_it() -> bool:
            try:
                kv.get("o1")
                return True
            except PaxosKVError:
                return False
        wait_until(takes_it, 10, "the new token was not taken")
        # A broken file keeps the tokens loaded before, however it is broken.
        def warnings() -> int:
            return (cluster.root / "n1.log").read_text().count("could not be loaded")

        for broken in ("[[token]\nname = ", "token = [1]\n", "token = [['name']]\n", ""):
            seen = warnings()
            tokens.write_text(broken)
            wait_until(lambda seen=seen: warnings() > seen,  # type: ignore[misc]
                       10, f"no warning for a broken tokens file: {broken!r}")
            assert kv.get("o1").found
        # Removed: refused again.
        tokens.write_text(tokens_file())
        wait_until(lambda: not takes_it(), 10, "the removed token still works")

    # A rotated certificate is served to new connections without a restart.
    def served() -> bytes:
        pem = ssl.get_server_certificate(("127.0.0.1", int(cluster.urls[2].rsplit(":", 1)[1])))
        return ssl.PEM_cert_to_DER_cert(pem)

    before = served()
    # Written in place, key first: a node may catch the pair halfway, and keeps the
    # old one until the files match again.
    issue_node_certificate(cluster.authority)
    expected = ssl.PEM_cert_to_DER_cert((cluster.pki / "node.crt").read_text())
    assert expected != before
    wait_until(lambda: served() == expected, 10, "the rotated certificate is not served")
    # The links keep working, and new ones are made with the new certificate.
    with cluster.client(ALL, bucket="orders") as kv:
        assert kv.put("after-rotation", 1).created


def test_parse_tokens_names_the_file_token_and_field() -> None:
    grants = parse_tokens(tokens_file(), "t.toml")
    assert grants[digest(READER)] == Grant("reader", ("orders",), ())
    writer = grants[digest(WRITER)]
    assert writer.may("write", "orders-eu") and writer.may("read", "orders")
    assert writer.may("read", "config") and not writer.may("write", "config")
    assert not writer.may("read", "locks") and not writer.may("*", None)
    assert grants[digest(ALL)].may("*", None) and writer.may("any", None)
    for text, message in (
            ("[[token]]\nname = 'x'\n", "t.toml: token 1 (x): give exactly one of 'token'"),
            ("[[token]]\nname = 'x'\ntoken = 'short'\n", "16 characters or more"),
            ("[[token]]\nname = 'x'\nsha256 = 'abc'\n", "64 lowercase hex digits"),
            (f"[[token]]\nname = 'x'\ntoken = '{ALL}'\nread = ['a/b']\n", "'read' must be"),
            (f"[[token]]\nname = 'x'\ntoken = '{ALL}'\nwrit = []\n", "unknown field 'writ'"),
            (f"[[token]]\nname = 'x'\ntoken = '{ALL}'\n[[token]]\nname = 'y'\n"
             f"token = '{ALL}'\n", "token 2 (y): the same secret as 'x'"),
            ("[[tokens]]\n", "unknown table 'tokens'"),
            ("[[token]\n", "t.toml: not TOML"),
            ("[[token]]\ntoken = 'x'\n", "token 1: 'name' must be")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_tokens(text, "t.toml")


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a[:a.index("--tls-key")] + a[a.index("--tls-key") + 2:],
     "--tls-key missing: TLS needs --tls-cert, --tls-key and --tls-ca together"),
    (lambda a: [x.replace("node.key", "app.key") for x in a],
     "are not a certificate and its key"),
    (lambda a: [x.replace("ca.crt", "nope.crt") for x in a], "nope.crt: no such file"),
    (lambda a: [x.replace("https://", "http://") for x in a],
     "--peers: n1 must have https:// URLs"),
    (lambda a: [x.replace("tokens.toml", "broken.toml") for x in a], "broken.toml: not TOML"),
])
def test_bad_security_settings_exit_with_one_line(
        tmp_path: Path, change: object, message: str) -> None:
    make_pki(tmp_path / "pki", "test CA")
    (tmp_path / "tokens.toml").write_text(tokens_file())
    (tmp_path / "broken.toml").write_text("[[token]\n")
    args = node_command("n1", "n1=https://127.0.0.1:1", free_ports(1)[0], tmp_path,
                        tmp_path / "pki")
    done = subprocess.run(change(args), capture_output=True, text=True, timeout=30)  # type: ignore[operator]
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "n1").exists() or not any((tmp_path / "n1").iterdir())


def test_the_cli_takes_a_token_and_a_ca_from_options_environment_or_file(
        cluster: SecureCluster, tmp_path: Path) -> None:
    def paxoskv(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PAXOSKV_")}
        return subprocess.run([sys.executable, "-m", "paxoskv", *args],
                              capture_output=True, text=True, timeout=30,
                              env={**clean, "HOME": str(tmp_path), **env})

    endpoints = ",".join(cluster.urls)
    put = paxoskv("put", "cli", "1", "--bucket", "orders", "--endpoints", endpoints,
                  "--cacert", cluster.ca, "--auth-token", WRITER)
    assert put.returncode == 0, put.stderr
    # From the environment, the options before the command.
    got = paxoskv("--endpoints", endpoints, "-o", "value", "get", "cli", "--bucket", "orders",
                  PAXOSKV_AUTH_TOKEN=READER, PAXOSKV_CACERT=cluster.ca)
    assert (got.returncode, got.stdout.strip()) == (0, "1"), got.stderr
    # From a configuration file.
    config = tmp_path / "config.toml"
    config.write_text(f'endpoints = {cluster.urls!r}\ncacert = "{cluster.ca}"\n'
                      f'auth_token = "{READER}"\nbucket = "orders"\n')
    got = paxoskv("get", "cli", "-o", "value", PAXOSKV_CONFIG=str(config))
    assert (got.returncode, got.stdout.strip()) == (0, "1"), got.stderr
    # Denied: exit 4 and one line naming why; nothing written.
    denied = paxoskv("put", "cli2", "1", PAXOSKV_CONFIG=str(config))
    assert denied.returncode == 4
    assert denied.stderr.strip() == ("paxoskv: error: forbidden (--bucket): token 'reader' may not "
                                     "write bucket 'orders'"), denied.stderr
    assert paxoskv("get", "cli2", PAXOSKV_CONFIG=str(config)).returncode == 1
    anonymous = paxoskv("get", "cli", "--endpoints", endpoints, "--cacert", cluster.ca)
    assert anonymous.returncode == 4 and "unauthorized" in anonymous.stderr
    # An unknown CA: the endpoints are unreachable (exit 3), saying why.
    unknown = paxoskv("get", "cli", "--endpoints", endpoints, "--auth-token", READER)
    assert unknown.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in unknown.stderr
    # A member on a plain URL would carry the cluster's traffic in the clear: refused.
    plain = paxoskv("members", "add", "n9", "http://127.0.0.1:9", "--endpoints", endpoints,
                    "--cacert", cluster.ca, PAXOSKV_ADMIN_TOKEN=ADMIN)
    assert plain.returncode == 2 and "url must be https://" in plain.stderr, plain.stderr
    # The admin commands take the CA too (and the admin token, not the data token).
    members = paxoskv("members", "list", "--endpoints", endpoints, "--cacert", cluster.ca,
                      "-o", "json", PAXOSKV_ADMIN_TOKEN=ADMIN, PAXOSKV_AUTH_TOKEN=ALL)
    assert members.returncode == 0, members.stderr
    assert sorted(m["name"] for m in json.loads(members.stdout)["members"]) == [
        "n1", "n2", "n3"]
    # A missing file is a usage error naming it.
    missing = paxoskv("get", "cli", "--endpoints", endpoints, "--cacert", "/nope/ca.pem")
    assert (missing.returncode, missing.stderr.strip()) == (
        2, "paxoskv: error: /nope/ca.pem: no such file")


def test_the_sidecar_holds_the_ca_and_the_token_for_its_application(
        cluster: SecureCluster) -> None:
    port = free_ports(1)[0]
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "paxoskv", "sidecar", "--endpoints", ",".join(cluster.urls),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "POD_NAME": "app-1", "POD_NAMESPACE": "apps",
             "PAXOSKV_CACERT": cluster.ca, "PAXOSKV_AUTH_TOKEN": WRITER})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as local:
            def ready() -> bool:
                try:
                    return local.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    return False
            wait_until(ready, 20, "the sidecar never opened its session")
            # Plain HTTP on localhost, no token: the sidecar adds its own, whatever is sent.
            put = local.post("/v1/put", headers={"Authorization": "Bearer forged"}, json={
                "bucket": "orders", "key": "via-sidecar", "value": 1,
                "bindings": {"pid": "self"}})
            assert put.status_code == 200 and put.json()["created"], put.text
            # ...within its token's scopes.
            refused = local.post("/v1/put", json={"bucket": "locks", "key": "x", "value": 1})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "forbidden"
        with cluster.client(ALL, bucket="orders") as kv:
            assert kv.get("via-sidecar").bindings["pid"] == put.json()["bindings"]["pid"]
    finally:
        sidecar.terminate()
        assert sidecar.wait(timeout=10) == 0
    with cluster.client(ALL, bucket="orders") as kv:  # its session closed on SIGTERM
        wait_until(lambda: not kv.get("via-sidecar").found, 10, "the pod's key outlived it")


def test_listings_across_buckets_need_every_bucket_and_swaps_a_write(
        cluster: SecureCluster) -> None:
    with cluster.client(WRITER, bucket="orders") as kv:
        for listing in (kv.list_buckets, kv.list_sessions, kv.list_nodes):
            with pytest.raises(PaxosKVError, match="may not read every bucket") as raised:
                listing()
            assert raised.value.status == 403
        kv.put("swapped", 1)
        assert "swapped" in [e.key for e in kv.list_keys().entries]  # its own bucket's
        assert kv.swap("swapped", 1, 2).swapped
    with cluster.client(READER, bucket="orders") as kv:
        with pytest.raises(PaxosKVError, match="may not write bucket 'orders'"):
            kv.swap("swapped", 2, 3)
        assert kv.get("swapped").value == 2
    with cluster.client(ALL) as kv:
        assert "orders" in [b.name for b in kv.list_buckets().entries]


def test_the_document_describes_the_token_of_every_data_route(cluster: SecureCluster) -> None:
    with cluster.http() as http:
        document = http.get(cluster.urls[0] + "/v1/openapi.json").json()
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    for route in SCOPES:
        operation = document["paths"][route]["post"]
        assert {"token": []} in operation["security"], route
        assert {"401", "403"} <= set(operation["responses"]), route
    # The admin routes take the admin token, never a data token.
    assert document["paths"]["/v1/admin/nodes"]["post"]["security"] == [{"admin": []}]


def test_tls_cannot_be_turned_on_for_a_cluster_made_without(tmp_path: Path) -> None:
    make_pki(tmp_path / "pki", "test CA")
    (tmp_path / "tokens.toml").write_text(tokens_file())
    port = free_ports(1)[0]
    # Made as the operator makes a cluster: a joining node told to bootstrap alone,
    # which records the configuration with its URL.
    url = f"http://127.0.0.1:{port}"
    plain = [sys.executable, "-m", "paxoskv", "serve", "--name", "n1", "--peers",
             f"n1={url}", "--data-dir", str(tmp_path / "n1"), "--join",
             "--admin-token", ADMIN, "--log-level", "warning"]
    node = subprocess.Popen(plain, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(url + "/v1/identity"), 20, "the joining node")
        pending = httpx.get(url + "/v1/identity").json()["member_id"]
        assert httpx.post(url + "/v1/admin/bootstrap", json={"member_id": pending},
                          headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 202
        wait_until(lambda: _answers(url + "/readyz"), 20, "the plain node")
    finally:
        node.terminate()
        assert node.wait(timeout=10) == 0
    secure = node_command("n1", f"n1=https://127.0.0.1:{port}", port, tmp_path,
                          tmp_path / "pki")
    done = subprocess.run(secure, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "paxoskv: error: the cluster's members n1 are not at https:// URLs in its "
        "configuration, and this node serves TLS: TLS is fixed when a cluster is made"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
