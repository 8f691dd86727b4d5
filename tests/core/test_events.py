"""The event log: one event per change in the same transaction, gapless revisions
in commit order, also under concurrent writers."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, text

from identity_service.settings import Settings
from identity_service.storage.db import normalise_url
from scim_identity_client import AlreadyExists, IdentityClient
from scim_identity_client.types import ChangeEvent, EventType, Group, Member, Tenant, User

from ..support import ServiceThread, eventually


def read_events(database_url: str, tenant_id: str) -> list[ChangeEvent]:
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.payload FROM events e JOIN tenants t ON t.pk = e.tenant_pk "
                "WHERE t.id = :id ORDER BY e.revision"
            ),
            {"id": tenant_id},
        ).scalars()
        out = [ChangeEvent.FromString(bytes(p)) for p in rows]
    engine.dispose()
    return out


def test_every_write_emits_its_event(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    u = client.create_user(tenant.id, User(user_name="ada"))
    u.title = "Countess"
    client.replace_user(tenant.id, u)
    u.active = False
    u = client.replace_user(tenant.id, u)
    u.active = True
    u = client.replace_user(tenant.id, u)
    g = client.create_group(tenant.id, Group(display_name="eng", members=[Member(value=u.meta.id)]))
    client.update_group(tenant.id, g.meta.id, display_name="Engineering")
    client.delete_user(tenant.id, u.meta.id)
    evs = read_events(database_url, tenant.id)
    types = [EventType.Name(e.type) for e in evs]
    assert types == [
        "EVENT_TYPE_TENANT_CREATED",
        "EVENT_TYPE_USER_CREATED",
        "EVENT_TYPE_USER_UPDATED",
        "EVENT_TYPE_USER_DEACTIVATED",
        "EVENT_TYPE_USER_REACTIVATED",
        "EVENT_TYPE_GROUP_CREATED",
        "EVENT_TYPE_GROUP_MEMBER_ADDED",
        "EVENT_TYPE_GROUP_UPDATED",
        "EVENT_TYPE_GROUP_MEMBER_REMOVED",
        "EVENT_TYPE_USER_DELETED",
    ]
    assert [e.revision for e in evs] == list(range(1, len(evs) + 1))
    assert evs[2].changed_attributes == ["title"]
    assert evs[2].user.title == "Countess"
    assert evs[6].membership.members[0].value == u.meta.id
    assert evs[7].changed_attributes == ["displayName"]
    assert all(e.tenant_id == tenant.id and e.time.seconds for e in evs)
    assert client.get_revision(tenant.id).revision == len(evs)


def test_failed_write_emits_nothing(client: IdentityClient, tenant: Tenant) -> None:
    client.create_user(tenant.id, User(user_name="ada"))
    before = client.get_revision(tenant.id).revision
    with pytest.raises(AlreadyExists):
        client.create_user(tenant.id, User(user_name="ADA"))
    assert client.get_revision(tenant.id).revision == before


def test_actor_and_request_id_are_recorded(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    from scim_identity_client import CallContext

    ctx = CallContext(request_id="req-123", actor_kind="token", actor_id="tok-1")
    client.create_user(tenant.id, User(user_name="ada"), ctx=ctx)
    ev = read_events(database_url, tenant.id)[-1]
    assert ev.request_id == "req-123"
    assert (ev.actor.kind, ev.actor.id) == ("token", "tok-1")


def test_concurrent_writers_get_gapless_revisions(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    workers, per_worker = 6, 15

    def write(w: int) -> None:
        for i in range(per_worker):
            client.create_user(tenant.id, User(user_name=f"w{w}-{i}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    evs = read_events(database_url, tenant.id)
    assert [e.revision for e in evs] == list(range(1, 2 + workers * per_worker))
    # Each event's payload says the revision it was stored under.
    names = [e.user.user_name for e in evs[1:]]
    assert len(set(names)) == workers * per_worker
    assert client.get_revision(tenant.id).revision == len(evs)


def test_only_creations_and_deletions_move_the_totals(
    client: IdentityClient, tenant: Tenant
) -> None:
    """An unfiltered list's totalResults is the tenant's count, kept by the events
    of each write: updates, memberships, roles and group events leave the user
    count alone, and user events the group count."""
    a = client.create_user(tenant.id, User(user_name="a@example.com"))
    b = client.create_user(tenant.id, User(user_name="b@example.com"))
    a.title = "changed"
    client.replace_user(tenant.id, a)
    g = client.create_group(
        tenant.id, Group(display_name="team", members=[Member(value=a.meta.id)])
    )
    g.display_name = "team 2"
    client.replace_group(tenant.id, g)
    client.create_role(tenant.id, "auditor")
    client.assign_role(tenant.id, b.meta.id, "auditor")
    client.delete_user(tenant.id, b.meta.id)
    client.create_group(tenant.id, Group(display_name="other"))
    # count=0 asks for the total alone (RFC 7644 §3.4.2.4): the kept count, not a
    # short page's length.
    assert client.list_users(tenant.id, count=0).total_results == 1
    assert client.list_groups(tenant.id, count=0).total_results == 2


def test_a_commit_wakes_its_tenants_subscribers(database_url: str) -> None:
    """emit() tells the stream hub, on commit, which revision each tenant reached:
    with the safety-net poll an hour away, the event still reaches a subscriber
    that is waiting at the head of the log."""
    service = ServiceThread(
        Settings(
            database_url=database_url,
            listen="127.0.0.1:0",
            db_pool_size=2,  # PostgreSQL connections are shared by every suite here
            watch_poll_interval_ms=3_600_000,
            event_retention_seconds=0,
            history_retention_seconds=0,
        )
    )
    target = service.start()
    try:
        with IdentityClient(target) as c:
            tenant = c.create_tenant(f"wake-{uuid.uuid4().hex[:8]}")
            w = c.watch(tenant.id, since=c.get_revision(tenant.id).revision)
            got: list[ChangeEvent] = []
            reader = threading.Thread(target=lambda: got.append(next(w)), daemon=True)
            reader.start()
            hub = service.service.streams
            eventually(lambda: tenant.id in hub._feeds, 30, "the subscriber at the head")
            c.create_user(tenant.id, User(user_name="woken@example.com"))
            reader.join(30)
            w.close()
            assert [e.user.user_name for e in got] == ["woken@example.com"]
    finally:
        service.stop()
