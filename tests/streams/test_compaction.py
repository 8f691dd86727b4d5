"""Retention: compaction, OUT_OF_RANGE naming the oldest revision kept, and a
consumer that recovers by listing, then watching from the list's revision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from identity_service.changes import compaction
from identity_service.settings import Settings
from identity_service.storage.db import Database
from identity_service.storage.models import utcnow
from scim_identity_client import AsyncIdentityClient, IdentityClient, OutOfRange
from scim_identity_client.types import ChangeEvent, EventType, Tenant, User

from ..support import ServiceThread
from .conftest import Collector, new_user, wait_until

E = EventType


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    d = Database(Settings(database_url=database_url))
    yield d
    d.close()


def _compact_now(db: Database, tenant: Tenant) -> dict[str, int]:
    """Compacts every event of `tenant` written so far."""
    return compaction.compact(
        db, older_than=utcnow() + timedelta(seconds=1), tenant_ids=[tenant.id]
    )


class Mirror:
    """A consumer's copy of the users of a tenant: {id: (version, user_name, active)}."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[int, str, bool]] = {}
        self.cursor = 0

    def put(self, user: User) -> None:
        old = self.users.get(user.meta.id)
        if old is None or old[0] <= user.meta.version:
            self.users[user.meta.id] = (user.meta.version, user.user_name, user.active)

    def apply(self, ev: ChangeEvent) -> None:
        if ev.WhichOneof("resource") == "user":
            if ev.type == E.EVENT_TYPE_USER_DELETED:
                self.users.pop(ev.user.meta.id, None)
            else:
                self.put(ev.user)
        self.cursor = ev.revision

    def relist(self, client: IdentityClient, tenant_id: str) -> None:
        self.users.clear()
        cursor, since = "", None
        while True:
            page = client.list_users(tenant_id, cursor=cursor, count=3)  # several pages
            since = page.revision if since is None else min(since, page.revision)
            for u in page.users:
                self.put(u)
            cursor = page.next_cursor
            if not cursor:
                break
        self.cursor = since or 0


def _server_state(client: IdentityClient, tenant_id: str) -> dict[str, tuple[int, str, bool]]:
    page = client.list_users(tenant_id, count=1000)
    return {u.meta.id: (u.meta.version, u.user_name, u.active) for u in page.users}


def test_compaction_out_of_range_then_list_then_watch(
    client: IdentityClient, tenant: Tenant, db: Database
) -> None:
    mirror = Mirror()
    users = [client.create_user(tenant.id, new_user(i)) for i in range(6)]
    w = client.watch(tenant.id, since=0)
    for _ in range(4):
        mirror.apply(next(w))
    w.close()
    assert mirror.cursor == 4

    # While the consumer is away: changes, then compaction of all of them.
    client.delete_user(tenant.id, users[0].meta.id)
    users[1].active = False
    client.replace_user(tenant.id, users[1])
    client.create_user(tenant.id, new_user("new"))
    removed = _compact_now(db, tenant)
    head = client.get_revision(tenant.id).revision
    assert removed == {tenant.id: head}
    assert _compact_now(db, tenant) == {}  # idempotent

    # A resume from the stale cursor fails, naming the oldest revision kept.
    with pytest.raises(OutOfRange) as info:
        next(client.watch(tenant.id, since=mirror.cursor))
    assert info.value.detail.oldest_revision == head + 1
    assert f"oldest revision kept is {head + 1}" in str(info.value)
    # Resuming exactly at the compaction point is fine (nothing after it is missing).
    w_ok = client.watch(tenant.id, since=head, heartbeat_seconds=1)
    client.create_user(tenant.id, new_user("after"))
    assert next(w_ok).revision == head + 1
    w_ok.close()

    # List-then-watch: list (several pages), watch from the list's revision while
    # more changes happen; the copy converges to the server's state.
    mirror.relist(client, tenant.id)
    col = Collector(client.watch(tenant.id, since=mirror.cursor))
    try:
        client.delete_user(tenant.id, users[2].meta.id)
        users[3].display_name = "renamed"
        client.replace_user(tenant.id, users[3])
        final = client.get_revision(tenant.id).revision
        col.wait_revision(final)
        for ev in col.events:
            mirror.apply(ev)
    finally:
        col.close()
    assert mirror.users == _server_state(client, tenant.id)
    assert len(mirror.users) == 6  # 6 + "new" + "after" - 2 deleted


def test_live_subscriber_is_not_disturbed_by_compaction(
    client: IdentityClient, tenant: Tenant, db: Database
) -> None:
    col = Collector(client.watch(tenant.id, since=0))
    try:
        for i in range(3):
            client.create_user(tenant.id, new_user(i))
        col.wait_revision(4)
        _compact_now(db, tenant)
        for i in range(3, 6):
            client.create_user(tenant.id, new_user(i))
        col.wait_revision(7)
        assert col.revisions == list(range(1, 8))
    finally:
        col.close()
    assert client.get_revision(tenant.id).oldest_revision > 0


def test_compaction_keeps_recent_events_and_works_in_batches(
    client: IdentityClient, tenant: Tenant, db: Database
) -> None:
    for i in range(7):
        client.create_user(tenant.id, new_user(i))
    cut = utcnow()
    client.create_user(tenant.id, new_user("recent"))
    removed = compaction.compact(db, older_than=cut, tenant_ids=[tenant.id], batch=3)
    assert removed == {tenant.id: 8}
    w = client.watch(tenant.id, since=8)
    assert next(w).revision == 9
    w.close()
    with pytest.raises(OutOfRange):
        next(client.watch(tenant.id, since=7))
    assert compaction.run_retention(db, 0) == {}  # 0 keeps events forever


def test_server_applies_the_retention_window(tmp_path: Path) -> None:
    # Its own database: this server compacts every tenant's old events.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'retention.db'}",
        listen="127.0.0.1:0",
        event_retention_seconds=1,
        compaction_interval_seconds=1,
    )
    service = ServiceThread(settings)
    target = service.start()
    try:
        with IdentityClient(target) as c:
            tenant = c.create_tenant("retention")
            c.create_user(tenant.id, new_user())

            def compacted() -> bool:
                return c.get_revision(tenant.id).oldest_revision >= 2

            wait_until(compacted, 10, "the server to compact events older than 1s")
            with pytest.raises(OutOfRange):
                next(c.watch(tenant.id, since=0))
    finally:
        service.stop()


def test_async_client_raises_out_of_range_with_the_oldest_revision(
    client: IdentityClient, tenant: Tenant, db: Database, identity_target: str
) -> None:
    client.create_user(tenant.id, new_user())
    _compact_now(db, tenant)

    async def main() -> int:
        async with AsyncIdentityClient(identity_target) as ac:
            with pytest.raises(OutOfRange) as info:
                async for _ in ac.watch(tenant.id, since=0):
                    pass
            return info.value.detail.oldest_revision

    assert asyncio.run(main()) == 3
