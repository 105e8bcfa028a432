"""The certificates the operator makes for a cluster that brings none of its own.

A CA of the cluster's own, and one certificate for all its members: every pod serves
with it and presents it to its peers (mutual TLS), so it carries both usages and the
names members, clients and the pods themselves use (a wildcard over the peer Service's
pod names, the client Service's names, localhost). Made once, kept in `<name>-tls`
with cert-manager's key names; the CA's key is not kept, so no one can sign with it
later. Ten years: rotation is for a Secret the user brings (spec.tls.secretName).
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=3653)


def names(name: str, namespace: str) -> list[str]:
    """The DNS names the members' certificate must carry."""
    peers = f"{name}-peers.{namespace}.svc"
    return [f"*.{peers}.cluster.local", f"*.{peers}", f"{name}.{namespace}.svc.cluster.local",
            f"{name}.{namespace}.svc", f"{name}.{namespace}", name, "localhost"]


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePublicKey, ca: bool,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False), critical=True))


def cluster_certificates(name: str, namespace: str, now: datetime.datetime | None = None
                         ) -> dict[str, str]:
    """PEM files by the keys of a kubernetes.io/tls Secret: ca.crt, tls.crt, tls.key."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = f"paxoskv {namespace}/{name} CA"
    ca = _builder(ca_name, ca_name, ca_key.public_key(), True, now).sign(
        ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (_builder(name, ca_name, key.public_key(), False, now)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [*map(x509.DNSName, names(name, namespace)),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {"ca.crt": ca.public_bytes(pem).decode(),
            "tls.crt": leaf.public_bytes(pem).decode(),
            "tls.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}
