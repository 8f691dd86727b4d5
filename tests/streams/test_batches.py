"""Batched delivery (WatchResponse.events) over a real in-process server, on SQLite
and PostgreSQL: batch-aware and batch-unaware subscribers see the same events,
pages of the log are crossed while replaying and while tailing, checkpoints
never skip the unhandled part of a batch, and the byte bound of a subscriber's
queue cuts a stuck stream off at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from identity_service.edge.server import IdentityService
from scim_identity_api.v1 import changes_pb2, changes_pb2_grpc
from scim_identity_client import IdentityClient, MemoryCheckpoint
from scim_identity_client.types import Group, Tenant
from scim_identity_client.watch import RESUMABLE

from .conftest import SMALL_POOL, Collector, big_user, new_user, wait_until

Factory = Callable[..., tuple[IdentityService, str]]


def _messages(
    stub: changes_pb2_grpc.ChangeServiceStub, request: changes_pb2.WatchRequest, until: int
) -> Iterator[changes_pb2.WatchResponse]:
    """The messages of one stream up to the one that reaches revision `until`."""
    call = stub.Watch(request, timeout=60)
    try:
        for resp in call:
            yield resp
            evs = [resp.event] if resp.WhichOneof("item") == "event" else list(resp.events)
            if evs and evs[-1].revision >= until:
                return
    finally:
        call.cancel()


def _write_mixed(client: IdentityClient, tenant: Tenant, n: int) -> None:
    """Users, a group and its memberships: several resource and event types."""
    users = [client.create_user(tenant.id, new_user(i)) for i in range(n)]
    g = client.create_group(tenant.id, Group(display_name=f"g-{users[0].meta.id[:6]}"))
    client.update_group(tenant.id, g.meta.id, add_members=[u.meta.id for u in users[:3]])
    client.update_group(tenant.id, g.meta.id, display_name=f"g2-{users[0].meta.id[:6]}")


@pytest.mark.parametrize("resource_types", [[], ["Group"]])
def test_batch_aware_and_unaware_subscribers_get_the_same_events_in_order(
    service_factory: Factory, tenant: Tenant, resource_types: list[str]
) -> None:
    # Pages of 3 events, batches of at most 4: replay crosses pages and batches.
    _svc, target = service_factory(watch_page_size=3, watch_batch_events=4, db_pool_size=SMALL_POOL)
    with IdentityClient(target) as c, grpc.insecure_channel(target) as ch:
        stub = changes_pb2_grpc.ChangeServiceStub(ch)
        _write_mixed(c, tenant, 12)
        final = c.get_revision(tenant.id).revision

        def request(batch: int) -> changes_pb2.WatchRequest:
            return changes_pb2.WatchRequest(
                tenant_id=tenant.id,
                from_revision=0,
                resource_types=resource_types,
                max_batch_events=batch,
            )

        # The last write changed the group: both streams end with it.
        unaware = list(_messages(stub, request(0), final))
        aware = list(_messages(stub, request(1000), final))

    # A batch-unaware subscriber gets exactly what it got before batches: one event
    # per message, in `event`, never `events`.
    assert all(m.WhichOneof("item") == "event" and not m.events for m in unaware)
    # A batch-aware one gets batches (capped by the server at 4), never `event`.
    assert all(m.WhichOneof("item") is None and 1 <= len(m.events) <= 4 for m in aware)
    assert max(len(m.events) for m in aware) > 1
    one_by_one = [m.event.SerializeToString() for m in unaware]
    batched = [e.SerializeToString() for m in aware for e in m.events]
    assert batched == one_by_one
    revisions = [e.revision for m in aware for e in m.events]
    assert revisions == sorted(set(revisions))
    if not resource_types:
        assert revisions == list(range(1, final + 1))
    else:
        assert revisions and all(e.resource_type == "Group" for m in aware for e in m.events)


def test_replay_and_tail_cross_pages_with_batches(service_factory: Factory, tenant: Tenant) -> None:
    # Pages of 2 and a long feed window: each read of the tail spans several pages.
    _svc, target = service_factory(
        db_pool_size=SMALL_POOL, watch_page_size=2, watch_batch_events=3, watch_batch_window_ms=300
    )
    with IdentityClient(target) as c:
        for i in range(9):
            c.create_user(tenant.id, new_user(i))
        aware = Collector(c.watch(tenant.id, since=0))
        unaware = Collector(c.watch(tenant.id, since=0, max_batch_events=0))
        try:
            aware.wait_revision(10)
            unaware.wait_revision(10)
            # Concurrent writers: commits pile up while the feed waits its window.
            threads = [
                threading.Thread(
                    target=lambda k=k: [
                        c.create_user(tenant.id, new_user(f"{k}-{j}")) for j in range(6)
                    ]
                )
                for k in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            final = c.get_revision(tenant.id).revision
            assert final == 34
            aware.wait_revision(final)
            unaware.wait_revision(final)
        finally:
            aware.close()
            unaware.close()
    assert aware.revisions == list(range(1, final + 1))
    assert [e.SerializeToString() for e in aware.events] == [
        e.SerializeToString() for e in unaware.events
    ]


def test_checkpoint_never_points_past_the_handled_part_of_a_batch(
    client: IdentityClient, tenant: Tenant
) -> None:
    for i in range(10):
        client.create_user(tenant.id, new_user(i))
    cp = MemoryCheckpoint()
    w = client.watch(tenant.id, since=0, checkpoint=cp)
    assert [next(w).revision for _ in range(4)] == [1, 2, 3, 4]
    # All 11 events came in one message; 4 were handed out, 3 are known handled.
    assert len(w._core.buffer) == 7
    assert w.cursor == 4
    assert cp.load() == 3
    w.close()
    w2 = client.watch(tenant.id, checkpoint=cp)
    assert [next(w2).revision for _ in range(8)] == list(range(4, 12))
    w2.close()


def test_byte_bound_cuts_a_stuck_subscriber_off_at_once(
    service_factory: Factory, tenant: Tenant
) -> None:
    bound = 64 * 1024
    service, target = service_factory(
        watch_queue_bytes=bound, watch_queue_events=1_000_000, db_pool_size=SMALL_POOL
    )
    registry = service.metrics.registry
    # A client that buffers almost nothing and stops reading: HTTP/2 flow control
    # parks the server's send, and the feed's queue for it fills.
    tight = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    with IdentityClient(target) as c, grpc.insecure_channel(target, options=tight) as ch:
        start = c.get_revision(tenant.id).revision
        stuck = changes_pb2_grpc.ChangeServiceStub(ch).Watch(
            changes_pb2.WatchRequest(
                tenant_id=tenant.id, from_revision=start, heartbeat_seconds=1, max_batch_events=1
            )
        )
        assert next(stuck).WhichOneof("item") == "heartbeat"  # attached and tailing
        assert registry.get_sample_value("identity_watch_streams_active") == 1
        (watcher,) = service.streams._watchers
        n = 40
        for i in range(n):
            c.create_user(tenant.id, big_user(i, 4000))
        # Cut off with the stream still unread: it leaves the gauge without a read.
        wait_until(lambda: service.streams.active_streams() == 0, 30, "the stream cut off")
        # And ended by the server, although its send is parked on flow control.
        wait_until(watcher.context.done, 30, "the call to end")
        assert registry.get_sample_value("identity_watch_streams_active") == 0
        # Its queue held at most the bound (+ one delivery) before it was freed.
        assert 4000 * n > bound
        got: list[int] = []
        with pytest.raises(grpc.RpcError) as info:
            for resp in stuck:
                got.extend(e.revision for e in resp.events)
        err = info.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.code() in RESUMABLE
        assert "bytes of events waiting" in err.details()
        # It resumes from what it received, with no gap and no repeat.
        assert got == list(range(start + 1, start + 1 + len(got)))
        with c.watch(tenant.id, since=start + len(got)) as w:
            rest = [next(w).revision for _ in range(n - len(got))]
        assert got + rest == list(range(start + 1, start + n + 1))
