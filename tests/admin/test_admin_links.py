"""Admin console sign-in in the core (CreateAdminLink, RedeemAdminLink, sessions),
over a real gRPC server on SQLite and PostgreSQL, and `identityctl admin-link`.
Time is the servicer's clock, moved by the tests (never slept)."""

from __future__ import annotations

import hashlib
import io
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from scim_identity_client import IdentityClient, InvalidArgument, NotFound, Unauthenticated
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import Tenant

from ..support import ServiceThread


def test_a_link_signs_in_its_tenants_admin_once(
    client: IdentityClient, tenant: Tenant, clock: list[datetime]
) -> None:
    link = client.create_admin_link(tenant.name, subject="ada@acme.com")
    assert link.secret.startswith("adm_") and len(link.secret) > 40
    assert link.principal.tenant_id == tenant.id and not link.principal.operator
    assert link.expires.ToDatetime() == (clock[0] + timedelta(minutes=15)).replace(tzinfo=None)
    session = client.redeem_admin_link(link.secret)
    assert session.secret.startswith("ses_") and session.subject == "ada@acme.com"
    assert session.principal.tenant_id == tenant.id
    assert session.principal.tenant_name == tenant.name
    # Replayed: refused, like an unknown one.
    with pytest.raises(Unauthenticated) as exc:
        client.redeem_admin_link(link.secret)
    assert "used already or expired" in exc.value.message
    with pytest.raises(Unauthenticated):
        client.redeem_admin_link("adm_" + "x" * 43)
    # The session is what the console checks on every request.
    seen = client.get_admin_session(session.secret)
    assert seen.id == session.id and seen.secret == "" and seen.principal == session.principal


def test_a_link_expires_after_15_minutes(
    client: IdentityClient, tenant: Tenant, clock: list[datetime]
) -> None:
    fresh = client.create_admin_link(tenant.id)
    stale = client.create_admin_link(tenant.id)
    clock[0] += timedelta(minutes=14, seconds=59)
    client.redeem_admin_link(fresh.secret)
    clock[0] += timedelta(seconds=1)
    with pytest.raises(Unauthenticated):
        client.redeem_admin_link(stale.secret)


def test_sessions_expire_and_end(
    client: IdentityClient, tenant: Tenant, clock: list[datetime], identity_service: ServiceThread
) -> None:
    assert identity_service.service is not None
    hours = identity_service.service.settings.admin_session_seconds / 3600
    first = client.redeem_admin_link(client.create_admin_link(tenant.id).secret)
    second = client.redeem_admin_link(client.create_admin_link(tenant.id).secret)
    with client.clone() as c:
        import asyncio

        from scim_identity_client import AsyncIdentityClient

        async def end() -> None:
            async with AsyncIdentityClient(c.target) as ac:
                await ac.end_admin_session(first.secret)
                await ac.end_admin_session(first.secret)  # again: fine

        asyncio.run(end())
    with pytest.raises(Unauthenticated):
        client.get_admin_session(first.secret)
    clock[0] += timedelta(hours=hours) - timedelta(seconds=1)
    client.get_admin_session(second.secret)
    clock[0] += timedelta(seconds=1)
    with pytest.raises(Unauthenticated) as exc:
        client.get_admin_session(second.secret)
    assert "sign in again" in exc.value.message


def test_operator_links_and_bad_requests(client: IdentityClient, tenant: Tenant) -> None:
    op = client.redeem_admin_link(client.create_admin_link(operator=True).secret)
    assert op.principal.operator and op.principal.tenant_id == ""
    with pytest.raises(InvalidArgument):
        client.create_admin_link()  # neither
    with pytest.raises(InvalidArgument):
        client.create_admin_link(tenant.id, operator=True)  # both
    with pytest.raises(NotFound):
        client.create_admin_link("no-such-tenant")
    with pytest.raises(InvalidArgument):
        client.create_admin_link(tenant.id, subject="x" * 300)


def test_secrets_are_stored_hashed(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    link = client.create_admin_link(tenant.id)
    session = client.redeem_admin_link(link.secret)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = {
                *conn.execute(sa.text("SELECT secret_hash FROM admin_links")).scalars(),
                *conn.execute(sa.text("SELECT secret_hash FROM admin_sessions")).scalars(),
            }
            rows = conn.execute(sa.text("SELECT * FROM admin_links")).all()
    finally:
        engine.dispose()
    for secret in (link.secret, session.secret):
        assert hashlib.sha256(secret.encode()).hexdigest() in stored
        assert not any(secret in str(row) for row in rows)


def test_deleting_nothing_leaves_sessions_of_other_tenants(
    client: IdentityClient, tenant: Tenant
) -> None:
    other = client.create_tenant(f"{tenant.name}-o")
    mine = client.redeem_admin_link(client.create_admin_link(tenant.id).secret)
    theirs = client.redeem_admin_link(client.create_admin_link(other.id).secret)
    assert client.get_admin_session(mine.secret).principal.tenant_id == tenant.id
    assert client.get_admin_session(theirs.secret).principal.tenant_id == other.id


def _ctl(target: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = identityctl(["--target", target, *args])
    return code, out.getvalue(), err.getvalue()


def test_identityctl_admin_link(
    identity_target: str, client: IdentityClient, tenant: Tenant
) -> None:
    code, out, err = _ctl(identity_target, "admin-link", tenant.name)
    assert code == 0, err
    url = out.strip().splitlines()[-1]
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8081", "/signin")
    secret = parse_qs(parts.query)["token"][0]
    assert client.redeem_admin_link(secret).principal.tenant_name == tenant.name
    assert f"tenant {tenant.name}" in err and "valid once" in err
    code, out, err = _ctl(
        identity_target, "admin-link", "--operator", "--admin-url", "https://admin.example.com/"
    )
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("https://admin.example.com/signin?token=adm_")
    for args in ((), (tenant.name, "--operator")):
        code, out, err = _ctl(identity_target, "admin-link", *args)
        assert code == 1 and "--operator" in err and out == ""
