"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 21:49:17.423598
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "tenants",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("compacted_through", sa.BigInteger(), nullable=False),
        sa.Column(
            "settings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_tenants")),
        sa.UniqueConstraint("id", name=op.f("uq_tenants_id")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "events",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_events_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_events")),
        sa.UniqueConstraint("tenant_pk", "revision", name="uq_events_tenant_revision"),
    )
    op.create_table(
        "groups",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("display_name", sa.String(length=512), nullable=False),
        sa.Column("display_name_key", sa.String(length=512), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=True),
        sa.Column("member_count", sa.BigInteger(), nullable=False),
        sa.Column(
            "doc",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_groups_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_groups")),
        sa.UniqueConstraint("id", name=op.f("uq_groups_id")),
    )
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_groups_tenant_display_name", ["tenant_pk", "display_name_key"], unique=False
        )
        batch_op.create_index(
            "ix_groups_tenant_external_id", ["tenant_pk", "external_id"], unique=False
        )

    op.create_table(
        "operations",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("scim_type", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_operations_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_operations")),
        sa.UniqueConstraint("id", name=op.f("uq_operations_id")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index("ix_operations_tenant_time", ["tenant_pk", "time"], unique=False)

    op.create_table(
        "roles",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_roles_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_roles")),
        sa.UniqueConstraint("tenant_pk", "name", name="uq_roles_tenant_name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("scope", sa.SmallInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_tokens_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_tokens_secret_hash")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_tenant_pk"), ["tenant_pk"], unique=False)

    op.create_table(
        "users",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "tenant_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(length=512), nullable=False),
        sa.Column("user_name_key", sa.String(length=512), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=True),
        sa.Column("display_name", sa.String(length=512), nullable=True),
        sa.Column("display_name_key", sa.String(length=512), nullable=True),
        sa.Column("given_name", sa.String(length=256), nullable=True),
        sa.Column("family_name", sa.String(length=256), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "doc",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f("fk_users_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_users")),
        sa.UniqueConstraint("id", name=op.f("uq_users_id")),
        sa.UniqueConstraint("tenant_pk", "user_name_key", name="uq_users_tenant_user_name"),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            "ix_users_tenant_display_name", ["tenant_pk", "display_name_key"], unique=False
        )
        batch_op.create_index(
            "ix_users_tenant_external_id", ["tenant_pk", "external_id"], unique=False
        )

    op.create_table(
        "group_members",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("group_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=False),
        sa.Column("member_type", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["groups.pk"],
            name=op.f("fk_group_members_group_pk_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_group_members")),
        sa.UniqueConstraint("group_pk", "member_id", name="uq_group_members_group_member"),
    )
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.create_index("ix_group_members_member", ["member_id"], unique=False)

    op.create_table(
        "role_assignments",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_pk", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("role_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_pk"],
            ["roles.pk"],
            name=op.f("fk_role_assignments_role_pk_roles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.pk"],
            name=op.f("fk_role_assignments_user_pk_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_role_assignments")),
        sa.UniqueConstraint("user_pk", "role_pk", "source", name="uq_role_assignments_user_role"),
    )
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.create_index("ix_role_assignments_role", ["role_pk"], unique=False)

    op.create_table(
        "user_values",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_pk", sa.BigInteger(), nullable=False),
        sa.Column("attr", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("value_key", sa.String(length=512), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.Column("display", sa.String(length=512), nullable=True),
        sa.Column(
            "extra",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.pk"], name=op.f("fk_user_values_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_user_values")),
    )
    with op.batch_alter_table("user_values", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_values_lookup", ["tenant_pk", "attr", "value_key"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_user_values_user_pk"), ["user_pk"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("user_values", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_values_user_pk"))
        batch_op.drop_index("ix_user_values_lookup")

    op.drop_table("user_values")
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_role_assignments_role")

    op.drop_table("role_assignments")
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.drop_index("ix_group_members_member")

    op.drop_table("group_members")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_tenant_external_id")
        batch_op.drop_index("ix_users_tenant_display_name")

    op.drop_table("users")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_tenant_pk"))

    op.drop_table("tokens")
    op.drop_table("roles")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index("ix_operations_tenant_time")

    op.drop_table("operations")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_index("ix_groups_tenant_external_id")
        batch_op.drop_index("ix_groups_tenant_display_name")

    op.drop_table("groups")
    op.drop_table("events")
    op.drop_table("tenants")
