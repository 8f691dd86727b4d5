"""Index paging: deep pages (keys from the paging index, then the rows) list exactly
what a plain OFFSET would, and an exact total reused while the tenant is unchanged
is recounted after any write. On SQLite and PostgreSQL."""

from __future__ import annotations

from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant, User


def test_deep_pages_and_totals_follow_every_write(client: IdentityClient, tenant: Tenant) -> None:
    names = [f"u{i:03d}" for i in range(23)]
    for n in names:
        client.create_user(tenant.id, User(user_name=n))
    seen: list[str] = []
    start = 1
    while True:
        page = client.list_users(tenant.id, start_index=start, count=5)
        assert page.total_results == 23  # counted once, then reused: same answer
        seen += [u.user_name for u in page.users]
        if not page.users:
            break
        start += 5
    assert seen == names  # creation (pk) order, nothing skipped or repeated

    client.create_user(tenant.id, User(user_name="late"))
    assert client.list_users(tenant.id, start_index=21, count=5).total_results == 24
    users = client.list_users(tenant.id, start_index=20, count=2).users
    client.delete_user(tenant.id, users[0].meta.id)
    page = client.list_users(tenant.id, start_index=6, count=5)
    assert page.total_results == 23
    assert [u.user_name for u in page.users] == names[5:10]


def test_the_tenant_counts_follow_every_create_and_delete(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    """tenants.user_count / group_count (the unfiltered totals) equal COUNT(*) after
    creates, deletes, JIT sign-ins, group deletes and a purging connector reset."""
    from sqlalchemy import create_engine, text

    from identity_service.storage.db import normalise_url
    from scim_identity_client.types import Group

    def stored() -> tuple[int, int, int, int]:
        engine = create_engine(normalise_url(database_url))
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT t.user_count, t.group_count, "
                    "(SELECT COUNT(*) FROM users u WHERE u.tenant_pk = t.pk), "
                    "(SELECT COUNT(*) FROM groups g WHERE g.tenant_pk = t.pk) "
                    "FROM tenants t WHERE t.id = :id"
                ),
                {"id": tenant.id},
            ).one()
        engine.dispose()
        return tuple(row)

    ids = [client.create_user(tenant.id, User(user_name=f"c{i}")).meta.id for i in range(5)]
    gids = [client.create_group(tenant.id, Group(display_name=f"g{i}")).meta.id for i in range(3)]
    client.delete_user(tenant.id, ids[0])
    client.delete_group(tenant.id, gids[0])
    client.jit_provision(tenant.id, user_name="jit@example.com")
    assert stored() == (5, 2, 5, 2)
    page = client.list_users(tenant.id, count=2)
    assert page.total_results == 5 and len(page.users) == 2
    assert client.list_groups(tenant.id, count=1).total_results == 2
    client.reset_connector(tenant.id, purge=True)
    assert stored() == (0, 0, 0, 0)


def test_a_sequential_start_index_walk_resumes_where_the_last_page_ended(
    client: IdentityClient, tenant: Tenant
) -> None:
    """A walk by startIndex (what IdPs do) continues after the previous page's last
    row while nothing changed, and falls back to the offset after a write: sorted
    and unsorted, both orders, the pages are exactly the OFFSET pages."""
    from scim_identity_client.types import Sort

    names = [f"w{(i * 7) % 17:02d}-{i}" for i in range(17)]
    for n in names:
        client.create_user(tenant.id, User(user_name=n, display_name=n[::-1]))

    def walk(sort: Sort | None, write_at: int | None = None) -> list[str]:
        seen: list[str] = []
        start = 1
        while True:
            if write_at is not None and start == write_at:
                extra = client.create_user(tenant.id, User(user_name="zz-extra"))
                client.delete_user(tenant.id, extra.meta.id)
            page = client.list_users(tenant.id, start_index=start, count=4, sort=sort)
            seen += [u.user_name for u in page.users]
            if len(page.users) < 4:
                return seen
            start += 4

    by_pk = walk(None)
    assert by_pk == names
    assert walk(None) == names  # again: every page resumed from memory
    assert walk(None, write_at=9) == names  # a write in between: offsets again
    asc = Sort(path={"attribute": "displayName"})
    desc = Sort(path={"attribute": "displayName"}, descending=True)
    assert walk(asc) == sorted(names, key=lambda n: n[::-1])
    assert walk(desc) == sorted(names, key=lambda n: n[::-1], reverse=True)
    assert walk(desc, write_at=5) == walk(desc)


def test_every_page_from_either_end_is_the_offset_page(
    client: IdentityClient, tenant: Tenant
) -> None:
    """Deep pages in the second half of an unsorted list are counted from its end
    when the total is known (the tenant's count, or a COUNT at this revision): at
    every start, in any order, every page is exactly the slice an OFFSET gives."""
    import random

    from .test_filters import cmp

    names = [f"e{i:02d}" for i in range(23)]
    for i, n in enumerate(names):
        client.create_user(tenant.id, User(user_name=n, title="odd" if i % 2 else "even"))
    odd = names[1::2]
    starts = list(range(1, 27))
    random.Random(7).shuffle(starts)  # jumps, not a walk (a walk resumes instead)
    for count in (1, 4, 7):
        for start in starts:
            page = client.list_users(tenant.id, start_index=start, count=count)
            assert [u.user_name for u in page.users] == names[start - 1 : start - 1 + count]
            assert page.total_results == 23 and page.start_index == start
            filtered = client.list_users(
                tenant.id, filter=cmp("title", "eq", "odd"), start_index=start, count=count
            )
            assert [u.user_name for u in filtered.users] == odd[start - 1 : start - 1 + count]
            assert filtered.total_results == len(odd)
