"""Tenants and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, tenants_pb2

from ..context import RequestContext
from ..errors import (
    Conflict,
    InvalidValue,
    LimitReached,
    NotFound,
    TenantInactive,
    Unauthenticated,
)
from ..storage import events
from ..storage.db import Reader
from ..storage.models import TenantRow, TokenRow, detached, table, utcnow
from ..storage.prepared import Prepared
from .convert import check_id, new_id, ts

E = changes_pb2
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: At most this many live tokens per tenant, so rotation has no gap (Banyan's guide).
MAX_LIVE_TOKENS = 2
TOKEN_PREFIX = "scim_"  # noqa: S105 - a public marker that makes leaked tokens greppable
#: last_used is written at most this often per token, so auth stays a read.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def to_proto(row: TenantRow) -> tenants_pb2.Tenant:
    return tenants_pb2.Tenant(
        id=row.id,
        name=row.name,
        display_name=row.display_name or row.name,
        active=row.active,
        created=ts(row.created),
        last_modified=ts(row.last_modified),
        revision=row.revision,
    )


def token_proto(row: TokenRow, tenant_id: str) -> tenants_pb2.Token:
    return tenants_pb2.Token(
        id=row.id,
        tenant_id=tenant_id,
        description=row.description,
        # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
        scope=row.scope,  # type: ignore[arg-type]
        created=ts(row.created),
        last_used=ts(row.last_used),
        expires=ts(row.expires),
        revoked=ts(row.revoked),
        prefix=row.prefix,
    )


_TENANT_TABLE = TenantRow.__table__
_TOKEN_TABLE = TokenRow.__table__
#: Built once: reads run these on every call, and building a statement costs more
#: than running it.
_BY_ID = Prepared(select(_TENANT_TABLE).where(_TENANT_TABLE.c.id == bindparam("id")))
_BY_SECRET = Prepared(
    select(
        *(c.label(f"k_{c.key}") for c in _TOKEN_TABLE.c),
        *(c.label(f"t_{c.key}") for c in _TENANT_TABLE.c),
    )
    .join_from(_TOKEN_TABLE, _TENANT_TABLE, _TENANT_TABLE.c.pk == _TOKEN_TABLE.c.tenant_pk)
    .where(_TOKEN_TABLE.c.secret_hash == bindparam("h"))
)
_TENANT_KEYS = tuple(c.key for c in _TENANT_TABLE.c)
_TOKEN_KEYS = tuple(c.key for c in _TOKEN_TABLE.c)


def snapshot_by_id(session: Reader, tenant_id: str) -> TenantRow:
    """The tenant as a detached row, for read-only calls: one Core query, none of
    the ORM's loading work. Never change it (it is not part of the session)."""
    row = _BY_ID.first(session, {"id": check_id(tenant_id, "tenant")})
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}", field="tenant_id")
    return detached(TenantRow, row._asdict())


def by_id(session: Session, tenant_id: str, *, lock: bool = False) -> TenantRow:
    stmt = select(TenantRow).where(TenantRow.id == check_id(tenant_id, "tenant"))
    if lock:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}", field="tenant_id")
    return row


def resolve(session: Session, ref: tenants_pb2.TenantRef, *, lock: bool = False) -> TenantRow:
    which = ref.WhichOneof("ref")
    if which == "id":
        return by_id(session, ref.id, lock=lock)
    if which == "name":
        stmt = select(TenantRow).where(TenantRow.name == ref.name.strip().lower())
        if lock:
            stmt = stmt.with_for_update()
        row = session.execute(stmt).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no tenant named {ref.name!r}", field="tenant")
        return row
    raise InvalidValue("name the tenant by id or name", field="tenant")


def create(
    session: Session, name: str, display_name: str, ctx: RequestContext, *, active: bool = True
) -> tenants_pb2.Tenant:
    if "\x00" in display_name:
        raise InvalidValue("display_name must not contain NUL", field="display_name")
    name = name.strip().lower()
    if not NAME_RE.match(name):
        raise InvalidValue(
            f"tenant name {name[:80]!r} must be 1-63 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit",
            field="name",
        )
    if session.execute(select(TenantRow.pk).where(TenantRow.name == name)).first():
        raise Conflict(f"a tenant named {name!r} already exists", field="name")
    now = utcnow()
    row = TenantRow(
        id=new_id(),
        name=name,
        display_name=display_name.strip()[:256],
        active=active,
        revision=0,
        compacted_through=0,
        settings={},
        created=now,
        last_modified=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a tenant named {name!r} already exists", field="name") from None
    events.emit(
        session,
        row,
        ctx,
        [events.event(E.EVENT_TYPE_TENANT_CREATED, "Tenant", row.id, tenant=to_proto(row))],
    )
    return to_proto(row)


def list_page(session: Session, page_size: int, page_token: str) -> tenants_pb2.ListTenantsResponse:
    size = min(max(page_size or 100, 1), 1000)
    stmt = select(TenantRow).order_by(TenantRow.name).limit(size + 1)
    if page_token:
        stmt = stmt.where(TenantRow.name > page_token)
    rows = list(session.execute(stmt).scalars())
    more = len(rows) > size
    rows = rows[:size]
    return tenants_pb2.ListTenantsResponse(
        tenants=[to_proto(r) for r in rows],
        next_page_token=rows[-1].name if more else "",
    )


def update(
    session: Session, req: tenants_pb2.UpdateTenantRequest, ctx: RequestContext
) -> tenants_pb2.Tenant:
    row = resolve(session, req.tenant, lock=True)
    changed: list[str] = []
    if req.HasField("active") and req.active != row.active:
        row.active = req.active
        changed.append("active")
    if "\x00" in req.display_name:
        raise InvalidValue("display_name must not contain NUL", field="display_name")
    if req.HasField("display_name") and req.display_name.strip() != row.display_name:
        row.display_name = req.display_name.strip()[:256]
        changed.append("displayName")
    if changed:
        row.last_modified = utcnow()
        session.flush()
        events.emit(
            session,
            row,
            ctx,
            [
                events.event(
                    E.EVENT_TYPE_TENANT_UPDATED,
                    "Tenant",
                    row.id,
                    tenant=to_proto(row),
                    changed_attributes=changed,
                )
            ],
        )
    return to_proto(row)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _live(now: datetime) -> object:
    return (TokenRow.revoked.is_(None)) & or_(TokenRow.expires.is_(None), TokenRow.expires > now)


def _live_count(session: Session, tenant: TenantRow, now: datetime) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(TokenRow)
            # (the ignore below) _live is typed object: a SQL condition
            .where(TokenRow.tenant_pk == tenant.pk, _live(now))  # type: ignore[arg-type]
        ).scalar_one()
    )


def _new_token(
    session: Session,
    tenant: TenantRow,
    *,
    description: str,
    scope: int,
    expires: datetime | None,
    now: datetime,
) -> tuple[TokenRow, str]:
    """Inserts a token row; the caller holds the tenant row lock and checked the limit."""
    if expires is not None and expires <= now:
        raise InvalidValue("expires must be in the future", field="expires")
    if "\x00" in description:  # PostgreSQL text cannot hold it (an error, not a refusal)
        raise InvalidValue("a token's description must not contain NUL", field="description")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = TokenRow(
        id=new_id(),
        tenant_pk=tenant.pk,
        secret_hash=_hash(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        description=description.strip()[:256],
        scope=scope or tenants_pb2.TOKEN_SCOPE_FULL,
        created=now,
        expires=expires,
    )
    session.add(row)
    session.flush()
    return row, secret


def _limit_reached(tenant: TenantRow) -> LimitReached:
    return LimitReached(
        f"tenant {tenant.name!r} already has {MAX_LIVE_TOKENS} live tokens: "
        "revoke one (or rotate) before issuing another",
        field="tokens",
    )


def issue_token(
    session: Session, req: tenants_pb2.IssueTokenRequest, ctx: RequestContext
) -> tenants_pb2.IssueTokenResponse:
    # The tenant row lock serialises concurrent issues, so the limit holds under races.
    tenant = resolve(session, req.tenant, lock=True)
    now = utcnow()
    expires = req.expires.ToDatetime(tzinfo=UTC) if req.HasField("expires") else None
    if _live_count(session, tenant, now) >= MAX_LIVE_TOKENS:
        raise _limit_reached(tenant)
    row, secret = _new_token(
        session, tenant, description=req.description, scope=req.scope, expires=expires, now=now
    )
    token = token_proto(row, tenant.id)
    events.emit(
        session,
        tenant,
        ctx,
        [events.event(E.EVENT_TYPE_TOKEN_ISSUED, "Token", row.id, token=token)],
    )
    return tenants_pb2.IssueTokenResponse(token=token, secret=secret)


def rotate_token(
    session: Session, req: tenants_pb2.RotateTokenRequest, ctx: RequestContext
) -> tenants_pb2.RotateTokenResponse:
    """Revokes the old token and issues the new one in one transaction: at the
    two-token limit too, and with no moment where neither or both fail."""
    tenant = resolve(session, req.tenant, lock=True)
    now = utcnow()
    expires = req.expires.ToDatetime(tzinfo=UTC) if req.HasField("expires") else None
    evs: list[changes_pb2.ChangeEvent] = []
    old: TokenRow | None = None
    description, scope = req.description, int(req.scope)
    if req.revoke_token_id:
        old = _token_row(session, tenant, req.revoke_token_id)
        description = description or old.description
        scope = scope or old.scope
        if old.revoked is None:
            old.revoked = now
            session.flush()
            evs.append(
                events.event(
                    E.EVENT_TYPE_TOKEN_REVOKED, "Token", old.id, token=token_proto(old, tenant.id)
                )
            )
    if _live_count(session, tenant, now) >= MAX_LIVE_TOKENS:
        raise _limit_reached(tenant)
    row, secret = _new_token(
        session, tenant, description=description, scope=scope, expires=expires, now=now
    )
    token = token_proto(row, tenant.id)
    evs.append(events.event(E.EVENT_TYPE_TOKEN_ISSUED, "Token", row.id, token=token))
    events.emit(session, tenant, ctx, evs)
    out = tenants_pb2.RotateTokenResponse(token=token, secret=secret)
    if old is not None:
        out.revoked.CopyFrom(token_proto(old, tenant.id))
    return out


def list_tokens(
    session: Session, req: tenants_pb2.ListTokensRequest
) -> tenants_pb2.ListTokensResponse:
    tenant = resolve(session, req.tenant)
    stmt = select(TokenRow).where(TokenRow.tenant_pk == tenant.pk).order_by(TokenRow.created)
    if not req.include_inactive:
        # (the ignore below) _live is typed object: a SQL condition
        stmt = stmt.where(_live(utcnow()))  # type: ignore[arg-type]
    rows = session.execute(stmt).scalars()
    return tenants_pb2.ListTokensResponse(tokens=[token_proto(r, tenant.id) for r in rows])


def _token_row(session: Session, tenant: TenantRow, token_id: str) -> TokenRow:
    row = session.execute(
        select(TokenRow).where(
            TokenRow.tenant_pk == tenant.pk, TokenRow.id == check_id(token_id, "token")
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"tenant {tenant.name!r} has no token {token_id!r}", field="token_id")
    return row


def revoke_token(
    session: Session, req: tenants_pb2.RevokeTokenRequest, ctx: RequestContext
) -> tenants_pb2.Token:
    tenant = resolve(session, req.tenant, lock=True)
    row = _token_row(session, tenant, req.token_id)
    if row.revoked is None:
        row.revoked = utcnow()
        session.flush()
        token = token_proto(row, tenant.id)
        events.emit(
            session,
            tenant,
            ctx,
            [events.event(E.EVENT_TYPE_TOKEN_REVOKED, "Token", row.id, token=token)],
        )
    return token_proto(row, tenant.id)


@dataclass(frozen=True, slots=True)
class Bearer:
    """A checked API token and its tenant."""

    tenant: TenantRow
    token: TokenRow
    #: The token id when its last_used is stale (the caller touches it after).
    touch: str | None


def check_bearer(
    session: Reader,
    secret: str,
    tenant: str = "",
    *,
    allow_inactive: bool = False,
) -> Bearer:
    """Checks an API token's secret, and that it belongs to `tenant` (an id or a
    name) when one is given. Unknown, revoked, expired and other tenants' tokens
    get the same Unauthenticated; a deactivated connector gets TenantInactive
    (unless `allow_inactive`: then the caller raises `inactive(...)` itself).
    The rows are detached copies (see snapshot_by_id): read them, never change them."""
    secret = secret.strip()
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 256 or "\x00" in secret:
        raise Unauthenticated("invalid bearer token")
    hit = _BY_SECRET.first(session, {"h": _hash(secret)})
    if hit is None:
        raise Unauthenticated("invalid bearer token")
    values = hit._asdict()
    token = detached(TokenRow, {k: values[f"k_{k}"] for k in _TOKEN_KEYS})
    row = detached(TenantRow, {k: values[f"t_{k}"] for k in _TENANT_KEYS})
    now = utcnow()
    wanted = tenant.strip().lower()
    if wanted and wanted not in (row.id, row.name):
        # Same answer as an unknown token: never reveal that it is known elsewhere.
        raise Unauthenticated("invalid bearer token")
    if token.revoked is not None or (token.expires is not None and token.expires <= now):
        # The tenant's own token, dead: the caller (the gateway) may record the
        # refusal in the tenant's history; its client gets the plain 401.
        raise Unauthenticated(
            "this token was revoked" if token.revoked is not None else "this token has expired",
            tenant_id=row.id,
            token_id=token.id,
        )
    if not row.active and not allow_inactive:
        raise inactive(row, token)
    stale = token.last_used is None or now - token.last_used > LAST_USED_RESOLUTION
    return Bearer(row, token, token.id if stale else None)


def inactive(tenant: TenantRow, token: TokenRow) -> TenantInactive:
    return TenantInactive(
        f"the SCIM connector of tenant {tenant.name!r} is deactivated; "
        "an administrator must activate it",
        # The token is valid: its tenant may record the refusal in its history.
        tenant_id=tenant.id,
        token_id=token.id,
    )


def authenticate(
    session: Session, req: tenants_pb2.AuthenticateTokenRequest
) -> tuple[tenants_pb2.AuthenticateTokenResponse, str | None]:
    """Checks a secret. Returns the answer and, when last_used is stale, the
    token id to note as used (written later, off the call: edge.token_uses)."""
    which = req.tenant.WhichOneof("ref")
    ref = req.tenant.id if which == "id" else req.tenant.name if which == "name" else ""
    b = check_bearer(session, req.secret, ref)
    return (
        tenants_pb2.AuthenticateTokenResponse(
            tenant=to_proto(b.tenant), token=token_proto(b.token, b.tenant.id)
        ),
        b.touch,
    )


_tokens = table(TokenRow)
_TOUCH = (
    sql_update(_tokens)
    .where(
        _tokens.c.id == bindparam("token_id"),
        or_(_tokens.c.last_used.is_(None), _tokens.c.last_used < bindparam("used")),
    )
    .values(last_used=bindparam("used"))
)


def touch_tokens(session: Session, uses: Mapping[str, datetime]) -> None:
    """Records when tokens were last used ({token id: time}), in one statement; a
    time older than the one stored is kept out."""
    if uses:
        session.connection().execute(_TOUCH, [{"token_id": k, "used": v} for k, v in uses.items()])
