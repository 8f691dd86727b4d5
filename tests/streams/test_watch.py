"""Watch over a real in-process server, on SQLite and PostgreSQL: replay, tail,
ordering under concurrent writers, filters, heartbeats, validation, resume,
slow subscribers and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from identity_service.edge.server import IdentityService
from scim_identity_api.v1 import changes_pb2, changes_pb2_grpc
from scim_identity_client import (
    AsyncIdentityClient,
    CallContext,
    FileCheckpoint,
    IdentityClient,
    InvalidArgument,
    MemoryCheckpoint,
    NotFound,
    SqliteCheckpoint,
    event_name,
    event_type,
)
from scim_identity_client.types import EventType, Group, Member, Name, Tenant

from .conftest import FAST_RECONNECT, SMALL_POOL, Collector, new_user, wait_until

E = EventType
Factory = Callable[..., tuple[IdentityService, str]]


def test_replays_then_tails_in_revision_order(client: IdentityClient, tenant: Tenant) -> None:
    for i in range(5):
        client.create_user(tenant.id, new_user(i))
    col = Collector(client.watch(tenant.id, since=0))
    try:
        col.wait_revision(6)  # tenant.created + 5 users
        for i in range(5, 10):
            client.create_user(tenant.id, new_user(i))
        col.wait_revision(11)
        assert col.revisions == list(range(1, 12))
        assert event_name(col.events[0].type) == "tenant.created"
        assert all(e.tenant_id == tenant.id for e in col.events)
    finally:
        col.close()


def test_event_carries_resource_change_actor_and_request(
    client: IdentityClient, tenant: Tenant
) -> None:
    ctx = CallContext(request_id="req-42", actor_kind="token", actor_id="tok-1")
    user = client.create_user(tenant.id, new_user("a"), ctx=ctx)
    user.name.CopyFrom(Name(given_name="Ada"))
    user.active = False
    client.replace_user(tenant.id, user, ctx=ctx)
    w = client.watch(tenant.id, since=1, resource_types=["User"])
    try:
        created, updated = next(w), next(w)
    finally:
        w.close()
    assert created.type == E.EVENT_TYPE_USER_CREATED
    assert created.user.meta.id == user.meta.id == created.resource_id
    assert created.resource_type == "User"
    assert (created.actor.kind, created.actor.id) == ("token", "tok-1")
    assert created.request_id == "req-42"
    assert created.time.seconds > 0
    assert updated.type in (E.EVENT_TYPE_USER_DEACTIVATED, E.EVENT_TYPE_USER_UPDATED)
    assert updated.user.name.given_name == "Ada" and not updated.user.active
    assert "active" in updated.changed_attributes
    assert "name.givenName" in updated.changed_attributes
    assert updated.revision == created.revision + 1


def test_filters_by_resource_type_and_event_type(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, new_user())
    g = client.create_group(tenant.id, Group(display_name="eng"))
    client.update_group(tenant.id, g.meta.id, add_members=[Member(value=u.meta.id)])
    client.delete_user(tenant.id, u.meta.id)
    final = client.get_revision(tenant.id).revision

    groups = client.watch(tenant.id, since=0, resource_types=["group"])
    deletes = client.watch(tenant.id, since=0, event_types=["user.deleted"])
    try:
        g_events = [next(groups) for _ in range(2)]
        d_event = next(deletes)
    finally:
        groups.close()
        deletes.close()
    assert [e.resource_type for e in g_events] == ["Group", "Group"]
    assert g_events[0].type == E.EVENT_TYPE_GROUP_CREATED
    assert g_events[1].type == E.EVENT_TYPE_GROUP_MEMBER_ADDED
    assert [m.value for m in g_events[1].membership.members] == [u.meta.id]
    assert d_event.type == E.EVENT_TYPE_USER_DELETED and d_event.user.meta.id == u.meta.id
    assert d_event.revision <= final


def test_heartbeats_carry_the_current_revision(
    client: IdentityClient, tenant: Tenant, identity_target: str
) -> None:
    for i in range(3):
        client.create_user(tenant.id, new_user(i))
    current = client.get_revision(tenant.id).revision
    with grpc.insecure_channel(identity_target) as ch:
        stub = changes_pb2_grpc.ChangeServiceStub(ch)
        call = stub.Watch(
            changes_pb2.WatchRequest(
                tenant_id=tenant.id, from_revision=0, resource_types=["Role"], heartbeat_seconds=1
            ),
            timeout=10,
        )
        first = next(call)
        assert first.WhichOneof("item") == "heartbeat"
        assert first.heartbeat.revision == current
        client.create_user(tenant.id, new_user("late"))
        # A later idle heartbeat sees the new (filtered-out) event: the one after
        # the commit, however long the commit took (earlier ones say `current`).
        while (second := next(call)).heartbeat.revision == current:
            assert second.WhichOneof("item") == "heartbeat"
        assert second.WhichOneof("item") == "heartbeat"
        assert second.heartbeat.revision == current + 1
        call.cancel()

    # The client's cursor follows heartbeats, so a filtered subscriber checkpoints too.
    cp = MemoryCheckpoint()
    w = client.watch(
        tenant.id, since=0, resource_types=["Role"], heartbeat_seconds=1, checkpoint=cp
    )
    col = Collector(w)
    try:
        wait_until(lambda: w.cursor == current + 1, 5, "cursor advanced by a heartbeat")
        wait_until(lambda: cp.load() == current + 1, 5, "checkpoint saved from a heartbeat")
        assert col.events == []
    finally:
        col.close()


@pytest.mark.parametrize(
    ("request_fields", "error", "message"),
    [
        ({"from_revision": -1}, InvalidArgument, "from_revision must be 0 or more, got -1"),
        ({"from_revision": 999}, InvalidArgument, "ahead of the tenant's current revision 1"),
        ({"resource_types": ["Usr"]}, InvalidArgument, "unknown resource type 'Usr'"),
        ({"event_types": [99]}, InvalidArgument, "unknown event type 99"),
        ({"heartbeat_seconds": -5}, InvalidArgument, "heartbeat_seconds must be between 1"),
        ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, NotFound, "no tenant"),
        ({"tenant_id": "not-a-uuid"}, NotFound, "no tenant"),
    ],
)
def test_invalid_requests_fail_precisely(
    client: IdentityClient,
    tenant: Tenant,
    request_fields: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    request_fields = dict(request_fields)
    tenant_id = request_fields.pop("tenant_id", tenant.id)
    since = request_fields.pop("from_revision", 0)
    w = client.watch(
        tenant_id,
        since=since,
        resource_types=request_fields.get("resource_types", ()),
        event_types=request_fields.get("event_types", ()),
        heartbeat_seconds=request_fields.get("heartbeat_seconds", 5),
    )
    with pytest.raises(error, match=message):
        next(w)
    assert w.reconnects == 0  # a refusal is final: never retried as an outage
    w.close()


def test_resume_from_cursor_has_no_gap_and_no_repeat(
    client: IdentityClient, tenant: Tenant
) -> None:
    for i in range(6):
        client.create_user(tenant.id, new_user(i))
    w = client.watch(tenant.id, since=0)
    seen = [next(w).revision for _ in range(4)]
    w.close()
    for i in range(6, 9):
        client.create_user(tenant.id, new_user(i))
    w2 = client.watch(tenant.id, since=w.cursor)
    seen += [next(w2).revision for _ in range(6)]
    w2.close()
    assert seen == list(range(1, 11))


def test_concurrent_writers_give_a_gapless_ordered_stream(
    client: IdentityClient, tenant: Tenant
) -> None:
    col = Collector(client.watch(tenant.id, since=0))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(12):
                u = client.create_user(tenant.id, new_user(f"{n}-{i}"))
                if i % 3 == 0:
                    u.display_name = "renamed"
                    client.replace_user(tenant.id, u)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = client.get_revision(tenant.id).revision
    assert final == 1 + 6 * (12 + 4)
    try:
        col.wait_revision(final, timeout=20)
        assert col.revisions == list(range(1, final + 1))
    finally:
        col.close()


def test_subscribers_of_a_tenant_share_one_reader(
    service_factory: Factory, tenant: Tenant, client: IdentityClient
) -> None:
    service, target = service_factory()
    with IdentityClient(target) as c:
        cols = [Collector(c.watch(tenant.id, since=0)) for _ in range(12)]
        try:
            for i in range(5):
                c.create_user(tenant.id, new_user(i))
            final = c.get_revision(tenant.id).revision
            for col in cols:
                col.wait_revision(final)
                assert col.revisions == list(range(1, final + 1))
            assert list(service.streams._feeds) == [tenant.id]
            assert len(service.streams._feeds[tenant.id].watchers) == 12
        finally:
            for col in cols:
                col.close()
        # The last subscriber leaving stops the tenant's reader.
        wait_until(lambda: not service.streams._feeds, 5, "feed dropped")


def test_a_commit_wakes_its_tenants_feed_and_the_poll_is_only_a_safety_net(
    service_factory: Factory, tenant: Tenant
) -> None:
    # With the poll an hour apart, only a commit's own wake-up (or, on PostgreSQL,
    # its NOTIFY) can deliver: each write's event must reach the live stream.
    service, target = service_factory(watch_poll_interval_ms=3_600_000, db_pool_size=SMALL_POOL)
    with IdentityClient(target) as c:
        col = Collector(c.watch(tenant.id, since=c.get_revision(tenant.id).revision))
        try:
            wait_until(lambda: tenant.id in service.streams._feeds, 10, "the tenant's feed")
            for i in range(3):
                c.create_user(tenant.id, new_user(i))
                col.wait_revision(c.get_revision(tenant.id).revision, timeout=30)
        finally:
            col.close()


def test_slow_subscriber_is_disconnected_without_slowing_others(
    service_factory: Factory, tenant: Tenant
) -> None:
    _service, target = service_factory(watch_queue_events=16)
    # A client that buffers almost nothing, so the server's queue is what fills.
    tight = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    with IdentityClient(target) as c, grpc.insecure_channel(target, options=tight) as ch:
        stub = changes_pb2_grpc.ChangeServiceStub(ch)
        slow = stub.Watch(
            changes_pb2.WatchRequest(tenant_id=tenant.id, from_revision=1, heartbeat_seconds=1)
        )
        assert next(slow).WhichOneof("item") == "heartbeat"  # attached and tailing
        fast = Collector(c.watch(tenant.id, since=1))
        try:
            for i in range(150):
                u = new_user(i)
                u.display_name = "x" * 500
                c.create_user(tenant.id, u)
            fast.wait_revision(151)
            assert fast.revisions == list(range(2, 152))
        finally:
            fast.close()
        got = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in slow:
                got += 1
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"from_revision={1 + got}" in info.value.details()
        assert "too far behind" in info.value.details()


def test_client_resumes_after_too_far_behind(service_factory: Factory, tenant: Tenant) -> None:
    _service, target = service_factory(watch_queue_events=4)
    tight = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    with IdentityClient(target, options=tight) as c:
        w = c.watch(tenant.id, since=0)
        assert next(w).revision == 1
        # Stop reading while 120 events arrive; then read everything.
        for i in range(120):
            u = new_user(i)
            u.display_name = "y" * 500
            c.create_user(tenant.id, u)
        revisions = [1] + [next(w).revision for _ in range(120)]
        w.close()
    assert revisions == list(range(1, 122))
    assert w.reconnects >= 1


def test_shutdown_ends_streams_and_client_moves_to_another_replica(
    service_factory: Factory, tenant: Tenant, client: IdentityClient
) -> None:
    first, target_a = service_factory()
    _second, target_b = service_factory()
    # pick_first over two addresses: the channel fails over to B when A goes away.
    both = "ipv4:" + ",".join([target_a, target_b])
    with IdentityClient(both, options=FAST_RECONNECT) as c:
        col = Collector(c.watch(tenant.id, since=0))
        try:
            client.create_user(tenant.id, new_user(1))
            col.wait_revision(2)
            loop = first.streams._loop
            assert loop is not None
            asyncio.run_coroutine_threadsafe(first.stop(0), loop).result(20)
            for i in range(3):
                client.create_user(tenant.id, new_user(i))
            col.wait_revision(5)
            assert col.revisions == [1, 2, 3, 4, 5]
            assert col.iterator.reconnects >= 1
        finally:
            col.close()


def test_checkpoint_stores(tmp_path: Path) -> None:
    f = FileCheckpoint(tmp_path / "sub" / "cp")
    assert f.load() is None
    f.save(7)
    f.save(12)
    assert f.load() == 12
    assert FileCheckpoint(tmp_path / "sub" / "cp").load() == 12
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["cp"]  # no temp files left
    f.clear()
    assert f.load() is None

    s = SqliteCheckpoint(tmp_path / "c.db", "a")
    assert s.load() is None
    s.save(3)
    s.save(5)
    SqliteCheckpoint(tmp_path / "c.db", "b").save(9)
    assert SqliteCheckpoint(tmp_path / "c.db", "a").load() == 5
    s.clear()
    assert s.load() is None
    with pytest.raises(ValueError, match="plain table name"):
        SqliteCheckpoint(tmp_path / "c.db", table="x; drop")


def test_checkpoint_resumes_a_restarted_consumer(
    client: IdentityClient, tenant: Tenant, tmp_path: Path
) -> None:
    for i in range(4):
        client.create_user(tenant.id, new_user(i))
    cp = FileCheckpoint(tmp_path / "consumer.rev")
    # An empty checkpoint starts now by default: replay from the start explicitly.
    w = client.watch(tenant.id, since=0, checkpoint=cp)
    assert [next(w).revision for _ in range(3)] == [1, 2, 3]
    # Event 3 was returned but the consumer "crashed" before asking for more:
    # only 2 is known handled, so 3 comes again (at least once).
    w.close()
    assert cp.load() == 2
    w2 = client.watch(tenant.id, checkpoint=cp)
    assert [next(w2).revision for _ in range(3)] == [3, 4, 5]
    w2.close()
    assert cp.load() == 4


def test_event_type_names() -> None:
    assert event_type("group.member_added") == E.EVENT_TYPE_GROUP_MEMBER_ADDED
    assert event_type("EVENT_TYPE_USER_CREATED") == E.EVENT_TYPE_USER_CREATED
    assert event_name(E.EVENT_TYPE_GROUP_MEMBER_REMOVED) == "group.member_removed"
    with pytest.raises(ValueError, match="unknown event type"):
        event_type("user.exploded")


def test_async_client_lists_then_watches(identity_target: str, client: IdentityClient) -> None:
    t = client.create_tenant(f"a-{new_user().user_name[:10].replace('@', '')}")
    for i in range(3):
        client.create_user(t.id, new_user(i))

    async def main() -> list[int]:
        async with AsyncIdentityClient(identity_target) as ac:
            page = await ac.list_users(t.id, cursor="")
            assert len(page.users) == 3
            assert (await ac.get_revision(t.id)).revision == page.revision == 4
            groups = await ac.list_groups(t.id)
            assert groups.revision == 4
            seen: list[int] = []
            async with ac.watch(t.id, since=page.revision) as w:
                await asyncio.to_thread(client.create_user, t.id, new_user("live"))
                async for ev in w:
                    seen.append(ev.revision)
                    break
            with pytest.raises(NotFound):
                await ac.get_revision("00000000-0000-0000-0000-000000000000")
            return seen

    assert asyncio.run(main()) == [5]


def test_stream_metrics_count_open_streams_and_lag(
    identity_service: object, client: IdentityClient, tenant: Tenant
) -> None:
    """identity_watch_streams_active and identity_watch_lag_revisions follow the streams."""
    svc = identity_service.service
    registry = svc.metrics.registry
    before = registry.get_sample_value("identity_watch_streams_active")
    w = client.watch(tenant.id, since=0, heartbeat_seconds=1)
    first = next(w)  # the stream is open once an event arrives
    assert first.revision == 1
    deadline = time.monotonic() + 10
    while registry.get_sample_value("identity_watch_streams_active") < before + 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # This subscriber has everything up to the tenant's head (revision 1), and no
    # other stream of this service is behind: the largest lag is exactly 0.
    wait_until(
        lambda: registry.get_sample_value("identity_watch_lag_revisions") == 0,
        10,
        "the lag gauge to show a caught-up subscriber",
    )
    w.close()
    deadline = time.monotonic() + 10
    while registry.get_sample_value("identity_watch_streams_active") > before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
