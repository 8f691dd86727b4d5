"""Admin console sign-in: one-time links (admin_links) and sessions (admin_sessions);
operations.actor, who acted in the history when no token did (an admin).

Both keep only the SHA-256 of their secret. Sessions live in the core, not in the
console, so the console is stateless across replicas and a sign-out is immediate.

Revision ID: 0006
Revises: 0005 (the PRECIS userName keys)
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _common(name: str) -> list[Any]:
    return [
        sa.Column("pk", _PK, autoincrement=True, nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant_pk", _PK, nullable=True),
        sa.Column("operator", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_pk"],
            ["tenants.pk"],
            name=op.f(f"fk_{name}_tenant_pk_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("secret_hash", name=op.f(f"uq_{name}_secret_hash")),
    ]


def upgrade() -> None:
    op.create_table(
        "admin_links",
        *_common("admin_links"),
        sa.Column("used", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "admin_sessions",
        *_common("admin_sessions"),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("id", name=op.f("uq_admin_sessions_id")),
    )
    for name in ("admin_links", "admin_sessions"):
        with op.batch_alter_table(name) as batch:
            batch.create_index(batch.f(f"ix_{name}_tenant_pk"), ["tenant_pk"], unique=False)
    with op.batch_alter_table("operations") as batch:
        batch.add_column(
            sa.Column("actor", sa.String(length=256), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("actor")
    op.drop_table("admin_sessions")
    op.drop_table("admin_links")
