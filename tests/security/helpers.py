"""Security test support: a throwaway PKI (generated per test session with the
`cryptography` package), service credentials, and the real processes started
with TLS, mTLS and credentials on. Built on tests/support.py, not changing it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from identity_service.edge.auth import hash_secret
from scim_identity_client import IdentityClient

from ..support import VENV_BIN, Proc, free_port, wait_serving

ADMIN_SECRET = "svc-admin-" + "a" * 40
GATEWAY_SECRET = "svc-gateway-" + "g" * 40
SUBSCRIBER_SECRET = "svc-subscriber-" + "s" * 40
ALL_SERVICE_SECRETS = (ADMIN_SECRET, GATEWAY_SECRET, SUBSCRIBER_SECRET)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate from another CA: well-formed, not trusted.
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    ca_key, ca = _ca("identity test CA")
    _write(directory / "ca", ca_key, ca)
    _write(directory / "server", *_leaf(ca_key, ca, "identity-service", server=True))
    _write(directory / "client", *_leaf(ca_key, ca, "scim-gateway", server=False))
    rogue_ca_key, rogue_ca = _ca("someone else's CA")
    _write(directory / "rogue", *_leaf(rogue_ca_key, rogue_ca, "intruder", server=False))
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        rogue_cert=directory / "rogue.crt",
        rogue_key=directory / "rogue.key",
    )


def write_credentials(path: Path, subscriber_tenants: list[str]) -> Path:
    path.write_text(
        json.dumps(
            [
                {"name": "ops", "secret_sha256": hash_secret(ADMIN_SECRET), "role": "admin"},
                {
                    "name": "gateway",
                    "secret_sha256": hash_secret(GATEWAY_SECRET),
                    "role": "gateway",
                },
                {
                    "name": "audit",
                    "secret_sha256": hash_secret(SUBSCRIBER_SECRET),
                    "role": "subscriber",
                    "tenants": subscriber_tenants,
                },
            ]
        )
    )
    return path


def secure_client(target: str, pki: Pki, token: str | None) -> IdentityClient:
    """A client with the trusted client certificate and, optionally, a credential."""
    return IdentityClient(
        target,
        token=token,
        tls_ca_file=str(pki.ca),
        tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key),
        timeout=5.0,
    )


def wait_serving_tls(target: str, pki: Pki, timeout: float = 30.0) -> None:
    """grpc.health.v1 over mTLS (health needs no service credential)."""
    creds = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    wait_serving(target, timeout, creds)


def start_secure_identity(
    database_url: str, tmp: Path, pki: Pki, credentials: Path, **env: str
) -> tuple[Proc, str]:
    """The real `identity-service` with mTLS and service credentials on."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {
            "IDENTITY_DATABASE_URL": database_url,
            "IDENTITY_LISTEN": target,
            "IDENTITY_TLS_CERT_FILE": str(pki.server_cert),
            "IDENTITY_TLS_KEY_FILE": str(pki.server_key),
            "IDENTITY_TLS_CLIENT_CA_FILE": str(pki.ca),
            "IDENTITY_CREDENTIALS_FILE": str(credentials),
            **env,
        },
        tmp / f"identity-{port}.log",
    )
    try:
        wait_serving_tls(target, pki)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"identity-service did not start:\n{proc.output()}") from None
    return proc, target
