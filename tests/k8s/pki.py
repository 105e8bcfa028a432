"""The local Kubernetes test cluster's certificates and kubeconfigs (tests/k8s/cluster.py):
a CA of its own, the API server's serving certificate, kubelet's client certificate, the
service-account key pair, and kubeconfigs with a static token each."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .layout import write_atomic


class Pki:
    """A CA and the certificates and keys the cluster needs, as PEM files in one directory
    (ECDSA P-256: quick to make, and every component takes it)."""

    def __init__(self, directory: Path, ca_name: str = "paxoskv-k8s-ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        ca = (self.builder(self.ca_name, self.ca_name, self.ca_key.public_key(), ca=True)
              .sign(self.ca_key, hashes.SHA256()))
        self.write("ca", self.ca_key, ca)

    def builder(self, subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
                *, ca: bool, expired: bool = False) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        if expired:  # valid for a day that ended an hour ago
            now -= datetime.timedelta(days=366)
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(issuer).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                    crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                               critical=False))

    def issue(self, name: str, cn: str, orgs: Sequence[str] = (), *, server: bool = False,
              client: bool = False, dns: Sequence[str] = (), ips: Sequence[str] = (),
              expired: bool = False) -> None:
        """A certificate for serving (`server`) or for clients (the default), or for
        both (`server` and `client`); `expired`: one whose validity has passed."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                             *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs)])
        usages = [*([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
                  *([ExtendedKeyUsageOID.CLIENT_AUTH] if client or not server else [])]
        builder = (self.builder(subject, self.ca_name, key.public_key(), ca=False,
                                expired=expired)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.ca_key.public_key()), critical=False)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if dns or ips:
            names: list[x509.GeneralName] = [
                *(x509.DNSName(d) for d in dns),
                *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        self.write(name, key, builder.sign(self.ca_key, hashes.SHA256()))

    def service_account_keys(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self.write("sa", key)
        (self.directory / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def write(self, name: str, key: ec.EllipticCurvePrivateKey,
              cert: x509.Certificate | None = None) -> None:
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        write_atomic(self.directory / f"{name}.key", pem.decode(), 0o600)
        if cert is not None:
            (self.directory / f"{name}.crt").write_bytes(
                cert.public_bytes(serialization.Encoding.PEM))


def kubeconfig(server: str, ca: Path, user: str, token: str) -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "paxoskv-k8s",
        "clusters": [{"name": "paxoskv-k8s", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "paxoskv-k8s",
                      "context": {"cluster": "paxoskv-k8s", "user": user}}],
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML: kubectl reads it as is
