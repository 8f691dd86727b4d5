"""The core with TLS, mTLS and service credentials on: only a client with a
trusted certificate and a credential whose role allows the RPC gets through.
A real server (in-process, port 0) and real TLS with certificates made here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from identity_service.edge.auth import Credential, parse_credentials
from identity_service.settings import Settings
from scim_identity_api.v1 import changes_pb2, changes_pb2_grpc, tenants_pb2, tenants_pb2_grpc
from scim_identity_client import (
    AsyncIdentityClient,
    CallContext,
    IdentityClient,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from scim_identity_client.types import User

from ..support import ServiceThread
from .helpers import (
    ADMIN_SECRET,
    GATEWAY_SECRET,
    SUBSCRIBER_SECRET,
    Pki,
    make_pki,
    secure_client,
    wait_serving_tls,
    write_credentials,
)

pytestmark = pytest.mark.xdist_group("security-core")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, module_database_url: str
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("secured")
    creds = write_credentials(tmp / "credentials.json", ["sec-a"])
    service = ServiceThread(
        Settings(
            database_url=module_database_url,  # SQLite and PostgreSQL
            listen="127.0.0.1:0",
            db_pool_size=2,  # PostgreSQL connections are shared by every suite here
            tls_cert_file=str(pki.server_cert),
            tls_key_file=str(pki.server_key),
            tls_client_ca_file=str(pki.ca),
            credentials_file=str(creds),
        )
    )
    target = service.start()
    yield target
    service.stop()


@pytest.fixture(scope="module")
def tenants(secured: str, pki: Pki) -> dict[str, tenants_pb2.Tenant]:
    with secure_client(secured, pki, ADMIN_SECRET) as admin:
        return {name: admin.create_tenant(name) for name in ("sec-a", "sec-b")}


def _raw(channel: grpc.Channel, token: str | None) -> dict[str, Any]:
    """Admin and Watch calls through raw stubs: each answers or raises grpc.RpcError."""
    md = (("authorization", f"Bearer {token}"),) if token else ()
    t = tenants_pb2_grpc.TenantServiceStub(channel)
    c = changes_pb2_grpc.ChangeServiceStub(channel)
    return {
        "CreateTenant": lambda: t.CreateTenant(
            tenants_pb2.CreateTenantRequest(name="intruder"), metadata=md, timeout=5
        ),
        "ListTenants": lambda: t.ListTenants(
            tenants_pb2.ListTenantsRequest(), metadata=md, timeout=5
        ),
        "IssueToken": lambda: t.IssueToken(
            tenants_pb2.IssueTokenRequest(tenant=tenants_pb2.TenantRef(name="sec-a")),
            metadata=md,
            timeout=5,
        ),
        "Watch": lambda: next(
            iter(
                c.Watch(
                    changes_pb2.WatchRequest(tenant_id="00000000-0000-0000-0000-000000000000"),
                    metadata=md,
                    timeout=5,
                )
            )
        ),
    }


def _codes(channel: grpc.Channel, token: str | None) -> dict[str, grpc.StatusCode]:
    out = {}
    for name, call in _raw(channel, token).items():
        with pytest.raises(grpc.RpcError) as exc:
            call()
        out[name] = exc.value.code()
    return out


def test_plaintext_client_cannot_call_admin_or_watch(secured: str) -> None:
    with grpc.insecure_channel(secured) as ch:
        codes = _codes(ch, ADMIN_SECRET)
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


def test_tls_client_without_a_client_certificate_is_refused(secured: str, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    with grpc.secure_channel(secured, creds) as ch:
        codes = _codes(ch, ADMIN_SECRET)
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


def test_client_certificate_from_another_ca_is_refused(secured: str, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.rogue_key.read_bytes(), pki.rogue_cert.read_bytes()
    )
    with grpc.secure_channel(secured, creds) as ch:
        codes = _codes(ch, ADMIN_SECRET)
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


@pytest.mark.parametrize("token", [None, "wrong-secret", GATEWAY_SECRET + "x"])
def test_trusted_certificate_without_a_valid_credential_is_unauthenticated(
    secured: str, pki: Pki, token: str | None
) -> None:
    with secure_client(secured, pki, None) as c:
        codes = _codes(c.channel, token)
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes


def test_right_secret_under_another_scheme_is_no_credential(secured: str, pki: Pki) -> None:
    with secure_client(secured, pki, None) as c, pytest.raises(grpc.RpcError) as exc:
        tenants_pb2_grpc.TenantServiceStub(c.channel).ListTenants(
            tenants_pb2.ListTenantsRequest(),
            metadata=(("authorization", f"Basic {ADMIN_SECRET}"),),
            timeout=5,
        )
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_credential_but_tls(secured: str, pki: Pki) -> None:
    wait_serving_tls(secured, pki, timeout=5)


def test_admin_credential_may_do_everything(
    secured: str, pki: Pki, tenants: dict[str, tenants_pb2.Tenant]
) -> None:
    with secure_client(secured, pki, ADMIN_SECRET) as admin:
        assert {"sec-a", "sec-b"} <= {t.name for t in admin.list_tenants()}
        issued = admin.issue_token("sec-b")
        admin.revoke_token("sec-b", issued.token.id)
        first = next(iter(admin.watch(tenants["sec-b"].id, since=0)))
        assert first.revision == 1


def test_gateway_credential_cannot_call_admin_rpcs(
    secured: str, pki: Pki, tenants: dict[str, tenants_pb2.Tenant]
) -> None:
    with secure_client(secured, pki, GATEWAY_SECRET) as gw:
        codes = _codes(gw.channel, GATEWAY_SECRET)
        assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}, codes
        for call in (
            lambda: gw.update_tenant("sec-a", active=False),
            lambda: gw.revoke_token("sec-a", "00000000-0000-0000-0000-000000000000"),
            lambda: gw.rotate_token("sec-a"),
            lambda: gw.reset_connector("sec-a"),
            lambda: gw.set_policy(tenants["sec-a"].id, gw.get_policy(tenants["sec-a"].id)),
            lambda: gw.get_revision(tenants["sec-a"].id),
        ):
            with pytest.raises(PermissionDenied):
                call()
        # What the gateway needs works.
        tid = tenants["sec-a"].id
        user = gw.create_user(tid, User(user_name="gw@example.com"))
        assert gw.get_user(tid, user.meta.id).user_name == "gw@example.com"
        with pytest.raises(Unauthenticated):
            gw.authenticate("scim_not-a-real-token", tenant="sec-a")
        # Nor may it claim to be an administrator (who may do more, and is audited as such).
        with pytest.raises(PermissionDenied) as exc:
            gw.create_user(
                tid,
                User(user_name="spoof@example.com"),
                ctx=CallContext(actor_kind="admin", actor_id="root"),
            )
        assert "act as an admin" in str(exc.value)


def test_subscriber_limited_to_tenant_a_cannot_touch_b(
    secured: str, pki: Pki, tenants: dict[str, tenants_pb2.Tenant]
) -> None:
    a, b = tenants["sec-a"], tenants["sec-b"]
    with secure_client(secured, pki, SUBSCRIBER_SECRET) as sub:
        # Its own tenant, by name and by id: reads and Watch work.
        assert sub.get_tenant("sec-a").id == a.id
        assert sub.get_tenant(a.id).name == "sec-a"
        assert sub.get_revision(a.id).revision >= 1
        assert next(iter(sub.watch(a.id, since=0))).type == changes_pb2.EVENT_TYPE_TENANT_CREATED
        # Another tenant, by name or id, and calls naming no tenant: refused.
        for call in (
            lambda: sub.get_tenant("sec-b"),
            lambda: sub.get_tenant(b.id),
            lambda: sub.get_revision(b.id),
            lambda: sub.list_users(b.id),
            lambda: list(sub.list_tenants()),
            lambda: sub.get_tenant("no-such-tenant"),
        ):
            with pytest.raises(PermissionDenied):
                call()
        stream = changes_pb2_grpc.ChangeServiceStub(sub.channel).Watch(
            changes_pb2.WatchRequest(tenant_id=b.id),
            metadata=(("authorization", f"Bearer {SUBSCRIBER_SECRET}"),),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as exc:
            next(iter(stream))
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Its role is read-only even in its own tenant.
        with pytest.raises(PermissionDenied):
            sub.create_user(a.id, User(user_name="sub@example.com"))


def test_async_client_sends_the_credential_on_calls_and_watch(
    secured: str, pki: Pki, tenants: dict[str, tenants_pb2.Tenant]
) -> None:
    a, b = tenants["sec-a"], tenants["sec-b"]

    async def run() -> None:
        async with AsyncIdentityClient(
            secured,
            token=SUBSCRIBER_SECRET,
            tls_ca_file=str(pki.ca),
            tls_cert_file=str(pki.client_cert),
            tls_key_file=str(pki.client_key),
        ) as sub:
            assert (await sub.get_tenant("sec-a")).id == a.id
            stream = sub.watch(a.id, since=0)
            assert (await stream.__anext__()).revision == 1
            await stream.aclose()
            with pytest.raises(PermissionDenied):
                await sub.get_revision(b.id)

    asyncio.run(run())


def test_watch_iterator_stops_on_permission_denied(
    secured: str, pki: Pki, tenants: dict[str, tenants_pb2.Tenant]
) -> None:
    with secure_client(secured, pki, SUBSCRIBER_SECRET) as sub:
        # A refusal is final: the iterator raises it at once and never reconnects
        # (were PERMISSION_DENIED resumable it would retry, then raise Unavailable).
        w = sub.watch(tenants["sec-b"].id, since=0, give_up_after=3)
        with pytest.raises(PermissionDenied):
            next(iter(w))
        assert w.reconnects == 0


def test_plaintext_default_needs_nothing(client: IdentityClient) -> None:
    """Without TLS or credentials settings (make run), the core answers as before."""
    assert client.create_tenant(f"plain-{id(client) % 100000}").active


def test_credentials_file_is_validated() -> None:
    good = [{"name": "x", "secret_sha256": "a" * 64, "role": "gateway"}]
    assert parse_credentials(good) == (Credential("x", "a" * 64, "gateway"),)
    for bad in (
        [],
        {"name": "x"},
        [{"name": "x", "secret_sha256": "zz", "role": "gateway"}],
        [{"name": "x", "secret_sha256": "a" * 64, "role": "root"}],
        [{"name": "", "secret_sha256": "a" * 64, "role": "admin"}],
        [{"name": "x", "secret_sha256": "a" * 64, "role": "subscriber", "tenants": "acme"}],
    ):
        with pytest.raises(SystemExit):
            parse_credentials(bad)


def test_settings_refuse_half_a_tls_configuration(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        Settings.from_env({"IDENTITY_TLS_CERT_FILE": "x.crt"})
    with pytest.raises(SystemExit):
        Settings.from_env({"IDENTITY_TLS_CLIENT_CA_FILE": "ca.crt"})
    s = Settings.from_env({"IDENTITY_HISTORY_RETENTION_SECONDS": "60"})
    assert s.history_retention_seconds == 60 and not s.tls_cert_file and not s.credentials_file


def test_tls_without_client_certificates(tmp_path: Path, pki: Pki, fresh_database_url: str) -> None:
    """Server TLS alone (no IDENTITY_TLS_CLIENT_CA_FILE): any client that trusts
    the server's CA connects without a certificate of its own; the service
    credentials still decide what it may do; plaintext and untrusting clients
    do not get through."""
    creds = write_credentials(tmp_path / "credentials.json", [])
    service = ServiceThread(
        Settings(
            database_url=fresh_database_url,
            listen="127.0.0.1:0",
            db_pool_size=2,  # PostgreSQL connections are shared by every suite here
            tls_cert_file=str(pki.server_cert),
            tls_key_file=str(pki.server_key),
            credentials_file=str(creds),
            event_retention_seconds=0,
            history_retention_seconds=0,
        )
    )
    target = service.start()
    try:
        with IdentityClient(target, token=ADMIN_SECRET, tls_ca_file=str(pki.ca), timeout=5) as c:
            tenant = c.create_tenant("tls-only")
            assert c.get_tenant(tenant.id).name == "tls-only"
        # A client certificate nobody asked for is fine too.
        with secure_client(target, pki, ADMIN_SECRET) as c:
            assert c.get_tenant("tls-only").id == tenant.id
        # TLS does not replace the credential.
        with (
            IdentityClient(target, tls_ca_file=str(pki.ca), timeout=5) as c,
            pytest.raises(Unauthenticated),
        ):
            c.get_tenant("tls-only")
        # Plaintext, or a server certificate the client does not trust: no connection.
        for kwargs in ({}, {"tls_ca_file": str(pki.rogue_cert)}):
            with (
                IdentityClient(target, token=ADMIN_SECRET, timeout=2, **kwargs) as c,
                pytest.raises(Unavailable),
            ):
                c.get_tenant("tls-only")
    finally:
        service.stop()
