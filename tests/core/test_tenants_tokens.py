"""Tenants and API tokens over a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import create_engine, text

from identity_service.storage.db import normalise_url
from scim_identity_client import (
    AlreadyExists,
    FailedPrecondition,
    IdentityClient,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from scim_identity_client.types import ErrorReason, Tenant

from ..support import eventually


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_create_get_by_id_and_name(client: IdentityClient) -> None:
    name = _name()
    t = client.create_tenant(name, display_name="Acme Corp")
    assert uuid.UUID(t.id)
    assert t.name == name and t.display_name == "Acme Corp" and t.active
    assert t.revision == 1  # tenant.created is the tenant's first event
    assert client.get_tenant(t.id) == client.get_tenant(name)


def test_duplicate_and_invalid_names(client: IdentityClient) -> None:
    name = _name()
    client.create_tenant(name)
    with pytest.raises(AlreadyExists) as exc:
        client.create_tenant(name.upper())  # names are case-folded
    assert exc.value.reason == ErrorReason.ERROR_REASON_UNIQUENESS
    for bad in ("", "has space", "-leading", "x" * 64, "ümlaut"):
        with pytest.raises(InvalidArgument) as bad_exc:
            client.create_tenant(bad)
        assert bad_exc.value.field == "name"


def test_unknown_tenant_is_not_found(client: IdentityClient) -> None:
    with pytest.raises(NotFound):
        client.get_tenant(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.get_tenant("no-such-tenant")


def test_list_pages_through_all(client: IdentityClient) -> None:
    names = {_name() for _ in range(3)}
    for n in names:
        client.create_tenant(n)
    listed = {t.name for t in client.list_tenants()}
    assert names <= listed


def test_token_secret_is_shown_once_and_only_hashed(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    issued = client.issue_token(tenant.id, description="okta")
    assert issued.secret.startswith("scim_") and len(issued.secret) > 40
    assert issued.token.prefix and issued.secret.startswith(issued.token.prefix)
    listed = client.list_tokens(tenant.id)
    assert [t.id for t in listed] == [issued.token.id]
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tokens")).fetchall()
        events = conn.execute(text("SELECT payload FROM events")).fetchall()
    engine.dispose()
    for row in rows:
        assert issued.secret not in repr(tuple(row))
    for (payload,) in events:
        assert issued.secret.encode() not in bytes(payload)


def test_at_most_two_live_tokens(client: IdentityClient, tenant: Tenant) -> None:
    first = client.issue_token(tenant.id)
    client.issue_token(tenant.id)
    with pytest.raises(FailedPrecondition) as exc:
        client.issue_token(tenant.id)
    assert exc.value.reason == ErrorReason.ERROR_REASON_TOO_MANY
    client.revoke_token(tenant.id, first.token.id)
    client.issue_token(tenant.id)  # a slot is free again


def test_authenticate_until_revoked(client: IdentityClient, tenant: Tenant) -> None:
    issued = client.issue_token(tenant.id)
    ok = client.authenticate(issued.secret, tenant=tenant.name)
    assert ok.tenant.id == tenant.id and ok.token.id == issued.token.id
    assert client.authenticate(issued.secret).tenant.id == tenant.id  # tenant from the token
    client.revoke_token(tenant.id, issued.token.id)
    with pytest.raises(Unauthenticated):
        client.authenticate(issued.secret)


def test_token_of_another_tenant_is_unauthenticated(client: IdentityClient) -> None:
    a, b = client.create_tenant(_name()), client.create_tenant(_name())
    secret = client.issue_token(a.id).secret
    with pytest.raises(Unauthenticated) as exc:
        client.authenticate(secret, tenant=b.id)
    assert "invalid bearer token" in str(exc.value)
    for garbage in ("", "Bearer x", "scim_" + "A" * 43, "x" * 10_000):
        with pytest.raises(Unauthenticated):
            client.authenticate(garbage)


def test_expired_token_and_past_expiry(client: IdentityClient, tenant: Tenant) -> None:
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(InvalidArgument):
        client.issue_token(tenant.id, expires=past)
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    issued = client.issue_token(tenant.id, expires=soon)
    assert issued.token.expires.seconds == soon.seconds
    client.authenticate(issued.secret)


def test_inactive_tenant_refuses_tokens(client: IdentityClient, tenant: Tenant) -> None:
    secret = client.issue_token(tenant.id).secret
    t = client.update_tenant(tenant.id, active=False)
    assert not t.active and t.revision > tenant.revision
    with pytest.raises(FailedPrecondition) as exc:
        client.authenticate(secret)
    assert exc.value.reason == ErrorReason.ERROR_REASON_TENANT_INACTIVE
    assert "deactivated" in str(exc.value)
    client.update_tenant(tenant.name, active=True)
    client.authenticate(secret)


def test_last_used_is_recorded(client: IdentityClient, tenant: Tenant) -> None:
    issued = client.issue_token(tenant.id)
    assert not issued.token.HasField("last_used")
    client.authenticate(issued.secret)
    # Written off the call, in the next batch (edge.token_uses): within a second.
    eventually(lambda: client.list_tokens(tenant.id)[0].HasField("last_used"), 10, "last_used")


def test_revoke_unknown_token(client: IdentityClient, tenant: Tenant) -> None:
    with pytest.raises(NotFound):
        client.revoke_token(tenant.id, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.revoke_token(tenant.id, "not-a-uuid")


def test_status_codes_are_precise(client: IdentityClient) -> None:
    with pytest.raises(NotFound) as exc:
        client.get_tenant(str(uuid.uuid4()))
    assert exc.value.code == grpc.StatusCode.NOT_FOUND
    assert exc.value.reason == ErrorReason.ERROR_REASON_NOT_FOUND


def test_a_token_stops_working_at_its_expiry_instant(
    client: IdentityClient,
    tenant: Tenant,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Expiry is inclusive: at the stored instant the token is refused, a
    microsecond before it still works (the core's clock, controlled here)."""
    from identity_service.domain import tenants as domain_tenants
    from identity_service.errors import Unauthenticated as CoreUnauthenticated

    expires = timestamp_pb2.Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    secret = client.issue_token(tenant.id, expires=expires).secret
    db: Any = identity_service_db
    with db.read() as s:
        at = domain_tenants.check_bearer(s, secret).token.expires
    assert at is not None
    monkeypatch.setattr(domain_tenants, "utcnow", lambda: at - timedelta(microseconds=1))
    with db.read() as s:
        assert domain_tenants.check_bearer(s, secret).tenant.id == tenant.id
    monkeypatch.setattr(domain_tenants, "utcnow", lambda: at)
    with db.read() as s, pytest.raises(CoreUnauthenticated, match="expired"):
        domain_tenants.check_bearer(s, secret)


def test_last_used_is_rewritten_once_its_resolution_has_passed(
    client: IdentityClient,
    tenant: Tenant,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Authentication asks for a `last_used` write only when the stored one is more
    than LAST_USED_RESOLUTION old (so that it stays a read); at exactly that age
    it is still fresh (the core's clock, controlled here)."""
    from identity_service.domain import tenants as domain_tenants

    secret = client.issue_token(tenant.id).secret
    db: Any = identity_service_db
    with db.read() as s:
        first = domain_tenants.check_bearer(s, secret)
    assert first.touch == first.token.id  # never used: write it
    with db.write() as s:
        domain_tenants.touch_tokens(s, {first.token.id: domain_tenants.utcnow()})
    with db.read() as s:
        used = domain_tenants.check_bearer(s, secret).token.last_used
    assert used is not None
    resolution = domain_tenants.LAST_USED_RESOLUTION
    for age, touch in (
        (resolution, None),
        (resolution + timedelta(microseconds=1), first.token.id),
    ):
        monkeypatch.setattr(domain_tenants, "utcnow", lambda age=age: used + age)
        with db.read() as s:
            assert domain_tenants.check_bearer(s, secret).touch == touch, age
