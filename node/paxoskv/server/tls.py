"""TLS for the client API and the peer links, from certificate files reloaded when
they change (cert-manager and the like rotate them in place).

One certificate per node serves both ends: the node's HTTPS server (client API and
peer endpoint on one port) and its client side when it connects to its peers, so it
needs both usages (serverAuth and clientAuth) and the names its peers and clients
reach it by. Peers are mutual: the server asks every client for a certificate and
verifies one if given (CERT_OPTIONAL: application clients need none), and the peer
endpoint serves only a connection whose certificate the peers' CA verified
(`peer_verified`). So give the CA to peers alone: any holder of a certificate it
signed may speak as a member.

Contexts are reloaded in place: a handshake after a reload uses the new files;
connections already open keep theirs. A CA file's new certificates are added, the
old ones stay trusted until the node restarts (OpenSSL cannot forget a CA).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("paxoskv.tls")


class FilesWatch:
    """Calls `load` again when any of `paths` changes (size, time or inode), as
    `check()` finds; a load that fails keeps what was loaded before and is
    retried when the files change again (a rotation may be caught halfway)."""

    def __init__(self, paths: list[Path], load: Callable[[], None], what: str) -> None:
        self._paths = paths
        self._load = load
        self._what = what
        self._stamp = self._stamped()
        load()

    def _stamped(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths:
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def check(self) -> bool:
        """Reload if the files changed; whether a reload took effect."""
        stamp = self._stamped()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._load()
        except Exception as exc:  # whatever a file holds, the node keeps serving
            log.warning("%s changed but could not be loaded, keeping the previous one: %s",
                        self._what, exc, extra={"error": str(exc)})
            return False
        log.info("%s reloaded", self._what, extra={"url": ",".join(map(str, self._paths))})
        return True


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # this node's certificate chain (PEM)
    key: Path  # its private key (PEM)
    ca: Path  # the CA that signs the members' certificates (PEM)


def _snapshot(files: TlsFiles, into: Path) -> TlsFiles:
    """Copies of the files, read once: what is checked is what gets loaded, even if a
    rotation rewrites them meanwhile."""
    copies = []
    for name, path in (("cert", files.cert), ("key", files.key), ("ca", files.ca)):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror}") from None
        copy = into / name
        copy.write_bytes(data)
        copies.append(copy)
    return TlsFiles(*copies)


def _check_pair(files: TlsFiles, named: TlsFiles) -> None:
    """Load the files into a throwaway context first, so that a bad file never
    reaches the live ones half-loaded; a clear error names the (`named`) file."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise ValueError(f"{named.cert} and {named.key} are not a certificate and its key "
                         f"({exc.reason or exc})") from None
    try:
        probe.load_verify_locations(cafile=files.ca)
    except ssl.SSLError as exc:
        raise ValueError(f"{named.ca}: not a PEM CA certificate ({exc.reason or exc})"
                         ) from None


class NodeTls:
    """The node's two TLS contexts, kept current with its files."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server.verify_mode = ssl.CERT_OPTIONAL  # peers present one; clients need not
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies names and chains
        self.client.minimum_version = ssl.TLSVersion.TLSv1_2
        self.watch = FilesWatch([files.cert, files.key, files.ca], self._load,
                                "the TLS certificate")

    def _load(self) -> None:
        with tempfile.TemporaryDirectory(prefix="paxoskv-tls-") as private:
            os.chmod(private, 0o700)
            files = _snapshot(self.files, Path(private))
            _check_pair(files, self.files)
            for context in (self.server, self.client):
                context.load_cert_chain(files.cert, files.key)
                context.load_verify_locations(cafile=files.ca)


def peer_problem(transport: Any, host: str | None) -> str | None:
    """Why a connection to the peer endpoint is not a member's (None: it is): its
    client must present a certificate that the CA verified (the server's
    CERT_OPTIONAL refuses the handshake of one it does not) and that names `host`,
    the host of the member's URL, as the member's own certificate does. So a
    certificate the CA gave to something else (an application's client certificate)
    does not make its holder a member."""
    cert = None if transport is None else transport.get_extra_info("peercert")
    if not cert:
        return ("a peer must present a certificate signed by the cluster's CA (this node "
                "serves TLS with --tls-ca)")
    if host is None or not names_host(cert, host):
        return (f"the peer's certificate does not name {host}, its member URL's host: "
                "it is not a member's certificate")
    return None


def names_host(cert: dict[str, Any], host: str) -> bool:
    """Whether a verified certificate (ssl's dict form) names `host`: an IP address
    among its IP names, or a DNS name, with a wildcard for the leftmost label only."""
    sans = cert.get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return any(kind == "IP Address" and _same_ip(value, ip) for kind, value in sans)
    host = host.lower().rstrip(".")
    for kind, value in sans:
        if kind != "DNS":
            continue
        name = value.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _same_ip(value: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(value.strip()) == ip
    except ValueError:
        return False

