"""users.managed_by: who manages a user (scim, jit or local), for JIT adoption and
the source-of-truth policy. Existing users were all created through SCIM.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("managed_by", sa.String(length=8), nullable=False, server_default="scim")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("managed_by")
