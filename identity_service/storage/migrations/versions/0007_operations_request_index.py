"""operations (tenant_pk, request_id): the history found by a request id.

The admin console's History looks an operation up by the request id an IdP's log
or an error page shows (ListOperationsRequest.request_id). Without this index
that lookup read every history record the tenant has kept; with it, the few rows
of that id.

Revision ID: 0007
Revises: 0006 (admin sign-in, operations.actor)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_operations_tenant_request", "operations", ["tenant_pk", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_operations_tenant_request", table_name="operations")
