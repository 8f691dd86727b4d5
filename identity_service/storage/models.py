"""SQLAlchemy 2.0 models. The same schema runs on SQLite and PostgreSQL.

Rows are keyed by an integer surrogate (`pk`, creation order, used for joins
and keyset paging); the public id is a UUID string. Case-insensitive unique or
looked-up attributes keep a lower-cased shadow column (`*_key`) computed in
Python, so equality is a plain index lookup on both databases.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so autoincrement works.
BigPk = BigInteger().with_variant(Integer(), "sqlite")
Doc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


M = TypeVar("M")


def utcnow() -> datetime:
    return datetime.now(UTC)


def detached(cls: type[M], values: Mapping[str, Any]) -> M:
    """An instance of mapped class `cls` that only holds `values`: outside any
    session and without the ORM's per-attribute bookkeeping (building one the
    normal way costs more than the query that read it). For reading only: never
    change, add or merge it."""
    obj = cls.__new__(cls)
    obj.__dict__.update(values)
    return obj


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TenantRow(Base):
    __tablename__ = "tenants"
    # Every write bumps `revision`: room on the page keeps those updates HOT (0003).
    __table_args__ = {"postgresql_with": {"fillfactor": 50}}

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Number of the last event written (the tenant's revision counter).
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Events with revision <= compacted_through were compacted away.
    compacted_through: Mapped[int] = mapped_column(BigInteger, default=0)
    #: How many users and groups the tenant has, kept by events.emit from the
    #: created/deleted events of each write (0004): an unfiltered list's total
    #: without a COUNT over every row.
    user_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    group_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Per-tenant policy and settings (issue-specific keys), as JSON.
    settings: Mapped[dict[str, Any]] = mapped_column(Doc, default=dict)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime)


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"), index=True)
    #: sha256 of the secret, hex. The secret itself is never stored.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(256), default="")
    scope: Mapped[int] = mapped_column(SmallInteger, default=1)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class _AdminSignIn:
    """What a sign-in link and a session share: a hashed secret, whom it signs in,
    for how long."""

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    #: sha256 of the secret, hex. The secret itself is never stored.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The tenant whose admin it signs in; None for an operator.
    tenant_pk: Mapped[int | None] = mapped_column(
        ForeignKey("tenants.pk", ondelete="CASCADE"), nullable=True, index=True
    )
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    subject: Mapped[str] = mapped_column(String(256), default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminLinkRow(_AdminSignIn, Base):
    """A one-time sign-in link to the admin console (admin.proto)."""

    __tablename__ = "admin_links"

    #: When it was redeemed: a link signs in once.
    used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AdminSessionRow(_AdminSignIn, Base):
    """An admin console session, made from a link; the console keeps only its secret
    (in a cookie), so any replica of the console serves any session."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(36), unique=True)
    #: When it was signed out of.
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (
        # RFC 7643 §4.1.1: userName is unique per tenant, case-insensitively.
        UniqueConstraint("tenant_pk", "user_name_key", name="uq_users_tenant_user_name"),
        Index("ix_users_tenant_external_id", "tenant_pk", "external_id"),
        Index("ix_users_tenant_display_name", "tenant_pk", "display_name_key"),
        # Paging: the keys of a deep page come from this index alone (0004).
        Index("ix_users_tenant_pk", "tenant_pk", "pk"),
    )

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime)
    user_name: Mapped[str] = mapped_column(String(512))
    user_name_key: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    display_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    display_name_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    given_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    family_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: "scim" (an IdP), "jit" (first sign-in, not yet adopted) or "local" (admin API).
    managed_by: Mapped[str] = mapped_column(String(8), default="scim", server_default="scim")
    #: Every writable attribute as the contract's JSON form (filters read it).
    doc: Mapped[dict[str, Any]] = mapped_column(Doc)
    #: The same, as a serialized identity.v1.User (reads decode it: no JSON parsing).
    body: Mapped[bytes] = mapped_column(LargeBinary)


class UserValueRow(Base):
    """One element of a multi-valued user attribute (emails, phoneNumbers, ...)."""

    __tablename__ = "user_values"
    __table_args__ = (Index("ix_user_values_lookup", "tenant_pk", "attr", "value_key"),)

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    tenant_pk: Mapped[int] = mapped_column(BigInteger)
    #: Attribute name as in the schema, e.g. "emails".
    attr: Mapped[str] = mapped_column(String(32))
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    value_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    display: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: Other sub-attributes (addresses), as JSON.
    extra: Mapped[dict[str, Any] | None] = mapped_column(Doc, nullable=True)


class GroupRow(Base):
    __tablename__ = "groups"
    __table_args__ = (
        Index("ix_groups_tenant_display_name", "tenant_pk", "display_name_key"),
        Index("ix_groups_tenant_external_id", "tenant_pk", "external_id"),
        Index("ix_groups_tenant_pk", "tenant_pk", "pk"),
    )

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime)
    display_name: Mapped[str] = mapped_column(String(512))
    display_name_key: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    member_count: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Extension attributes, as JSON.
    doc: Mapped[dict[str, Any]] = mapped_column(Doc)


class MemberRow(Base):
    """Membership is rows: adding or removing k members touches k rows."""

    __tablename__ = "group_members"
    __table_args__ = (
        UniqueConstraint("group_pk", "member_id", name="uq_group_members_group_member"),
        Index("ix_group_members_member", "member_id"),
        # ListMembers pages through a group in pk (insertion) order from here (0004).
        Index("ix_group_members_group_pk_pk", "group_pk", "pk"),
    )

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    group_pk: Mapped[int] = mapped_column(ForeignKey("groups.pk", ondelete="CASCADE"))
    member_id: Mapped[str] = mapped_column(String(36))
    #: identity.v1.MemberType (1 user, 2 group).
    member_type: Mapped[int] = mapped_column(SmallInteger)


class RoleRow(Base):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("tenant_pk", "name", name="uq_roles_tenant_name"),)

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(String(1024), default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class AssignmentRow(Base):
    __tablename__ = "role_assignments"
    __table_args__ = (
        UniqueConstraint("user_pk", "role_pk", "source", name="uq_role_assignments_user_role"),
        Index("ix_role_assignments_role", "role_pk"),
    )

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    tenant_pk: Mapped[int] = mapped_column(BigInteger)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    role_pk: Mapped[int] = mapped_column(ForeignKey("roles.pk", ondelete="CASCADE"))
    #: identity.v1.RoleSource (1 scim, 2 local).
    source: Mapped[int] = mapped_column(SmallInteger)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class EventRow(Base):
    """The transactional outbox: written in the same transaction as the change."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("tenant_pk", "revision", name="uq_events_tenant_revision"),)

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(BigInteger)
    #: identity.v1.EventType.
    type: Mapped[int] = mapped_column(SmallInteger)
    resource_type: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The serialized identity.v1.ChangeEvent, sent as is by Watch.
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class OperationRow(Base):
    """The operations history: one row per SCIM operation."""

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_tenant_time", "tenant_pk", "time"),
        # An admin looking a request up by its id (the console's History); 0007.
        Index("ix_operations_tenant_request", "tenant_pk", "request_id"),
    )

    pk: Mapped[int] = mapped_column(BigPk, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    token_id: Mapped[str] = mapped_column(String(36), default="")
    method: Mapped[str] = mapped_column(String(16))
    kind: Mapped[int] = mapped_column(SmallInteger)
    resource_type: Mapped[str] = mapped_column(String(32), default="")
    resource_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[int] = mapped_column(Integer)
    scim_type: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    request_id: Mapped[str] = mapped_column(String(64), default="")
    #: Who acted when no token did (an admin in the console); 0006.
    actor: Mapped[str] = mapped_column(String(256), default="", server_default="")


def table(model: type[Base]) -> Table:
    """A model's table, for plain Core DML: `insert(table(UserRow))` skips the ORM's
    bulk-persistence layer (noticeably slower per statement), fine where no
    objects of the model live in the session."""
    return cast(Table, model.__table__)


# `detached` instances read through the mapped attributes: configure them now,
# not on the first ORM query.
configure_mappers()
