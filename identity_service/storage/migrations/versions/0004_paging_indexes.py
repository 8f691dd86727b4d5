"""Paging: (tenant_pk, pk) indexes, tenants' user and group counts, group_members (group_pk, pk).

Index paging (startIndex) and the unsorted list order by pk within a tenant. With
this index a deep page's keys are found in the index alone and only the page's
rows are read; before, OFFSET 999,000 read (and discarded) every earlier row,
bodies included — seconds per page at a million users.

tenants.user_count / group_count: kept by every write (from its created/deleted
events, in its transaction), so an unfiltered list's exact total is read, not
counted: a COUNT over a million users took ~100 ms on each first page.

ListMembers pages through a group in pk order. Without (group_pk, pk) both
databases fetched every remaining member of the group and sorted them for each
page: walking 100,000 members took 7.3 s on SQLite, 0.93 s with the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("user_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("group_count", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE tenants SET "
        "user_count = (SELECT COUNT(*) FROM users WHERE users.tenant_pk = tenants.pk), "
        "group_count = (SELECT COUNT(*) FROM groups WHERE groups.tenant_pk = tenants.pk)"
    )
    op.create_index("ix_users_tenant_pk", "users", ["tenant_pk", "pk"])
    op.create_index("ix_groups_tenant_pk", "groups", ["tenant_pk", "pk"])
    op.create_index("ix_group_members_group_pk_pk", "group_members", ["group_pk", "pk"])


def downgrade() -> None:
    op.drop_index("ix_group_members_group_pk_pk", table_name="group_members")
    op.drop_index("ix_groups_tenant_pk", table_name="groups")
    op.drop_index("ix_users_tenant_pk", table_name="users")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("group_count")
        batch.drop_column("user_count")
