"""Equality on userName, externalId, emails.value and displayName is an index
lookup on both databases: checked on the real query plans of the SQL the core's
own filter compiler produces, over a tenant with a few thousand rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text

from identity_service.storage.db import normalise_url
from identity_service.storage.filters import GROUPS, USERS, compile_filter
from identity_service.storage.models import GroupRow, MemberRow, TenantRow, UserRow, UserValueRow
from scim_identity_client import IdentityClient

from .test_filters import cmp

N = 3000


@pytest.fixture(scope="module")
def seeded(database_url: str, client: IdentityClient) -> Iterator[tuple[Engine, int]]:
    tenant = client.create_tenant(f"idx-{uuid.uuid4().hex[:8]}")
    engine = create_engine(normalise_url(database_url))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        tpk = conn.execute(select(TenantRow.pk).where(TenantRow.id == tenant.id)).scalar_one()
        users = [
            {
                "id": str(uuid.uuid4()),
                "tenant_pk": tpk,
                "version": 1,
                "created": now,
                "last_modified": now,
                "user_name": f"User{i}@x",
                "user_name_key": f"user{i}@x",
                "external_id": f"ext{i}",
                "display_name": f"User {i}",
                "display_name_key": f"user {i}",
                "active": True,
                "doc": {},
                "body": b"",
            }
            for i in range(N)
        ]
        conn.execute(insert(UserRow), users)
        pks = conn.execute(select(UserRow.pk, UserRow.id).where(UserRow.tenant_pk == tpk)).all()
        conn.execute(
            insert(UserValueRow),
            [
                {
                    "user_pk": pk,
                    "tenant_pk": tpk,
                    "attr": "emails",
                    "value": f"u{pk}@x",
                    "value_key": f"u{pk}@x",
                    "primary": True,
                }
                for pk, _ in pks
            ],
        )
        groups = [
            {
                "id": str(uuid.uuid4()),
                "tenant_pk": tpk,
                "version": 1,
                "created": now,
                "last_modified": now,
                "display_name": f"G{i}",
                "display_name_key": f"g{i}",
                "member_count": 0,
                "doc": {},
            }
            for i in range(N // 10)
        ]
        conn.execute(insert(GroupRow), groups)
        gpk = conn.execute(select(GroupRow.pk).where(GroupRow.tenant_pk == tpk)).scalars().all()
        conn.execute(
            insert(MemberRow),
            [
                {"group_pk": gpk[i % len(gpk)], "member_id": uid, "member_type": 1}
                for i, (_, uid) in enumerate(pks)
            ],
        )
        conn.execute(text("ANALYZE"))
    yield engine, tpk
    engine.dispose()


def plan(engine: Engine, stmt: object, *, can_avoid_scans: bool = False) -> str:
    """The query plan; `can_avoid_scans` (PostgreSQL): with sequential scans and sorts
    priced out, so the plan shows whether an index *can* serve the statement, whatever
    the planner would choose for the rows other tests happen to have left in the shared
    table (a few hundred rows make a scan and a sort the cheaper plan)."""
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
    with engine.begin() as conn:
        if can_avoid_scans and engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            conn.execute(text("SET LOCAL enable_sort = off"))
        rows = conn.execute(text(f"{prefix} {compiled}")).fetchall()
    return "\n".join(str(r[-1]) for r in rows)


@pytest.mark.parametrize(
    ("catalog", "model", "f", "index"),
    [
        # SQLite names a UNIQUE constraint's index itself: match its searched columns.
        (
            USERS,
            UserRow,
            cmp("userName", "eq", "USER7@x"),
            ("uq_users_tenant_user_name", "(tenant_pk=? AND user_name_key=?)"),
        ),
        (USERS, UserRow, cmp("externalId", "eq", "ext7"), ("ix_users_tenant_external_id",)),
        (USERS, UserRow, cmp("emails.value", "eq", "u7@x"), ("ix_user_values_lookup",)),
        (USERS, UserRow, cmp("displayName", "eq", "User 7"), ("ix_users_tenant_display_name",)),
        (GROUPS, GroupRow, cmp("displayName", "eq", "g7"), ("ix_groups_tenant_display_name",)),
        (GROUPS, GroupRow, cmp("members.value", "eq", "x"), ("ix_group_members_member",)),
    ],
    ids=[
        "userName",
        "externalId",
        "emails.value",
        "user.displayName",
        "group.displayName",
        "members.value",
    ],
)
def test_equality_uses_an_index(
    seeded: tuple[Engine, int], catalog: object, model: object, f: object, index: tuple[str, ...]
) -> None:
    engine, tpk = seeded
    stmt = select(model.pk).where(model.tenant_pk == tpk, compile_filter(catalog, f, tpk))
    p = plan(engine, stmt)
    assert any(i in p for i in index), p
    if engine.dialect.name == "sqlite":
        assert "SCAN " not in p, p
    else:
        assert "Seq Scan" not in p, p


@pytest.mark.parametrize("model", [UserRow, GroupRow], ids=["users", "groups"])
def test_a_deep_page_finds_its_keys_in_the_paging_index(
    seeded: tuple[Engine, int], model: object
) -> None:
    """The statement listing.page_of runs for startIndex > 1: the page's keys come from
    (tenant_pk, pk) alone, so a deep OFFSET never reads the rows it skips."""
    engine, tpk = seeded
    m: Any = model
    keys = select(m.pk).where(m.tenant_pk == tpk).order_by(m.tenant_pk, m.pk).offset(250).limit(50)
    p = plan(engine, keys, can_avoid_scans=True)
    if engine.dialect.name == "sqlite":
        assert f"COVERING INDEX ix_{m.__tablename__}_tenant_pk" in p, p
    else:
        # PostgreSQL walks an index in that order (the paging index or, while the
        # tenant's rows are a run of the primary key, that): never a sort or a scan.
        assert "Index" in p and "Seq Scan" not in p and "Sort" not in p, p


def test_a_member_page_reads_the_group_in_index_order(seeded: tuple[Engine, int]) -> None:
    """ListMembers' page statement walks (group_pk, pk): no read-and-sort of the
    group's remaining members for every page."""
    from identity_service.domain.groups import _members_query

    engine, tpk = seeded
    with engine.connect() as conn:
        gpk = conn.execute(select(GroupRow.pk).where(GroupRow.tenant_pk == tpk)).scalars().first()
    stmt = _members_query(gpk).where(MemberRow.pk > 5).limit(101)
    p = plan(engine, stmt)
    if engine.dialect.name == "sqlite":
        assert "ix_group_members_group_pk_pk" in p and "TEMP B-TREE" not in p, p
    else:
        # PostgreSQL picks by its statistics: for these ten-member groups it reads
        # the group's members by an index and sorts ten rows. Never the whole table.
        assert "Seq Scan on group_members" not in p, p
