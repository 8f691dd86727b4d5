"""Index paging: deep pages (keys from the paging index, then the rows) list exactly
what a plain OFFSET would, and an exact total reused while the tenant is unchanged
is recounted after any write. On SQLite and PostgreSQL."""

from __future__ import annotations

from identity_client import IdentityClient
from identity_client.types import Tenant, User


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
