"""Sign-in to the admin console: one-time links and the sessions they become.

A link is made for a tenant's admin (that tenant only) or for an operator (every
tenant), lives 15 minutes and signs in once. Redeeming it makes a session, kept
here in the core (the console holds only the session's secret, in a cookie): any
console replica serves any session, and a sign-out or expiry holds everywhere at
once. Secrets are high-entropy, so only their SHA-256 is stored (as for tokens).
Unknown, used and expired secrets get the same answer.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import admin_pb2

from ..errors import InvalidValue, Unauthenticated
from ..storage.models import AdminLinkRow, AdminSessionRow, TenantRow
from . import tenants
from .convert import new_id, ts

#: How long a sign-in link may wait to be used (issue #17, the guides' "15 minutes").
LINK_LIFETIME = timedelta(minutes=15)
LINK_PREFIX = "adm_"
SESSION_PREFIX = "ses_"
_MAX_SECRET = 256


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _well_formed(secret: str, prefix: str) -> bool:
    return secret.startswith(prefix) and len(secret) <= _MAX_SECRET and "\x00" not in secret


def _principal(session: Session, tenant_pk: int | None, operator: bool) -> admin_pb2.AdminPrincipal:
    if operator or tenant_pk is None:
        return admin_pb2.AdminPrincipal(operator=True)
    tenant = session.get(TenantRow, tenant_pk)
    assert tenant is not None  # the foreign key cascades deletes
    return admin_pb2.AdminPrincipal(tenant_id=tenant.id, tenant_name=tenant.name)


def create_link(
    session: Session, req: admin_pb2.CreateAdminLinkRequest, now: datetime
) -> admin_pb2.AdminLink:
    has_tenant = req.HasField("tenant") and req.tenant.WhichOneof("ref") is not None
    if has_tenant == req.operator:
        raise InvalidValue("name a tenant, or ask for an operator link (not both)", field="tenant")
    if len(req.subject) > 256 or "\x00" in req.subject:
        raise InvalidValue("subject must be at most 256 characters", field="subject")
    tenant = tenants.resolve(session, req.tenant) if has_tenant else None
    secret = LINK_PREFIX + secrets.token_urlsafe(32)
    row = AdminLinkRow(
        secret_hash=_hash(secret),
        tenant_pk=tenant.pk if tenant is not None else None,
        operator=req.operator,
        subject=req.subject.strip(),
        created=now,
        expires=now + LINK_LIFETIME,
    )
    session.add(row)
    session.flush()
    return admin_pb2.AdminLink(
        secret=secret,
        expires=ts(row.expires),
        principal=_principal(session, row.tenant_pk, row.operator),
    )


def _session_proto(session: Session, row: AdminSessionRow) -> admin_pb2.AdminSession:
    return admin_pb2.AdminSession(
        id=row.id,
        principal=_principal(session, row.tenant_pk, row.operator),
        expires=ts(row.expires),
        subject=row.subject,
    )


def redeem(
    session: Session, secret: str, now: datetime, lifetime: timedelta
) -> admin_pb2.AdminSession:
    refused = Unauthenticated(
        "this sign-in link is unknown, used already or expired: ask for a new one"
    )
    if not _well_formed(secret, LINK_PREFIX):
        raise refused
    # Locked: of two redeems of one link racing, the second sees it used.
    link = session.execute(
        select(AdminLinkRow).where(AdminLinkRow.secret_hash == _hash(secret)).with_for_update()
    ).scalar_one_or_none()
    if link is None or link.used is not None or link.expires <= now:
        raise refused
    link.used = now
    session_secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    row = AdminSessionRow(
        id=new_id(),
        secret_hash=_hash(session_secret),
        tenant_pk=link.tenant_pk,
        operator=link.operator,
        subject=link.subject,
        created=now,
        expires=now + lifetime,
    )
    session.add(row)
    session.flush()
    out = _session_proto(session, row)
    out.secret = session_secret
    return out


def _live_session(session: Session, secret: str, now: datetime) -> AdminSessionRow:
    refused = Unauthenticated("the admin session is unknown, signed out or expired: sign in again")
    if not _well_formed(secret, SESSION_PREFIX):
        raise refused
    row = session.execute(
        select(AdminSessionRow).where(AdminSessionRow.secret_hash == _hash(secret))
    ).scalar_one_or_none()
    if row is None or row.ended is not None or row.expires <= now:
        raise refused
    return row


def get_session(session: Session, secret: str, now: datetime) -> admin_pb2.AdminSession:
    return _session_proto(session, _live_session(session, secret, now))


def end_session(session: Session, secret: str, now: datetime) -> None:
    try:
        row = _live_session(session, secret, now)
    except Unauthenticated:
        return  # signed out already, or never signed in: nothing to end
    row.ended = now
