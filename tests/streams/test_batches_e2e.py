"""Batched streams against real `identity-service` processes: kill -9 of the core
while a subscriber is in the middle of a batch, and a stuck subscriber's memory."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from scim_identity_api.v1 import changes_pb2, changes_pb2_grpc
from scim_identity_client import IdentityClient, MemoryCheckpoint
from scim_identity_client.watch import RESUMABLE

from ..support import free_port, start_identity_process
from .conftest import FAST_RECONNECT, SMALL_POOL, Collector, big_user, new_user, wait_until
from .test_e2e import Writer, _database, _start_on

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_kill_9_mid_batch_resumes_with_no_gap_and_no_repeat(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, target = _database(db, tmp_path, request), f"127.0.0.1:{free_port()}"
    proc = _start_on(url, target, tmp_path / "run1.log")
    try:
        with (
            IdentityClient(target, options=FAST_RECONNECT, timeout=5) as wc,
            IdentityClient(target, options=FAST_RECONNECT) as sc,
        ):
            tenant = wc.create_tenant(f"b-{uuid.uuid4().hex[:10]}")
            for i in range(60):
                wc.create_user(tenant.id, new_user(i))
            cp = MemoryCheckpoint()
            w = sc.watch(tenant.id, since=0, checkpoint=cp, heartbeat_seconds=1)
            got = [next(w).revision for _ in range(20)]
            # The 61 events came as one batch: the subscriber is in the middle of it.
            assert len(w._core.buffer) == 41
            writer = Writer(wc, tenant.id, "k")
            wait_until(lambda: len(writer.acked) >= 5, 20, "writes before the kill")
            proc.kill()  # SIGKILL while writes are in flight
            killed_at = len(writer.acked)
            proc = _start_on(url, target, tmp_path / "run2.log")
            wait_until(lambda: len(writer.acked) >= killed_at + 30, 30, "writes after restart")
            writer.finish()
            final = wc.get_revision(tenant.id).revision
            col = Collector(w)
            try:
                col.wait_revision(final, timeout=30)
            finally:
                col.close()
            assert col.error is None
            revisions = got + col.revisions
            assert revisions == list(range(1, final + 1))
            assert w.reconnects >= 1
            # Acknowledged writes were all delivered.
            names = {e.user.user_name for e in col.events if e.WhichOneof("resource") == "user"}
            assert set(writer.acked) <= names
            # The last event is handled once the collector asks for more (or a heartbeat).
            assert final - 1 <= (cp.load() or 0) <= final
    finally:
        proc.stop()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_stuck_subscriber_memory_is_bounded_then_cut_with_a_resumable_status(
    database_url: str, tmp_path: Path
) -> None:
    """A subscriber that stops reading while 100 users of 300 KB change: the core's
    RSS grows by less than the queue's byte bound (the default, 16 MiB) plus 50 MB,
    and the stream is cut with a status the client resumes after."""
    bound = 16 * 1024 * 1024
    proc, target = start_identity_process(
        database_url, tmp_path, IDENTITY_DB_POOL_SIZE=str(SMALL_POOL)
    )
    tight = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    try:
        with IdentityClient(target) as c, grpc.insecure_channel(target, options=tight) as ch:
            tenant = c.create_tenant(f"s-{uuid.uuid4().hex[:10]}")
            # Warm the write path with users of the same size (allocator, caches).
            for i in range(5):
                c.create_user(tenant.id, big_user(f"warm{i}", 300_000))
            start = c.get_revision(tenant.id).revision
            stuck = changes_pb2_grpc.ChangeServiceStub(ch).Watch(
                changes_pb2.WatchRequest(
                    tenant_id=tenant.id,
                    from_revision=start,
                    heartbeat_seconds=1,
                    max_batch_events=1000,
                ),
                timeout=120,
            )
            assert next(stuck).WhichOneof("item") == "heartbeat"  # attached, then stuck
            before = _rss_bytes(proc.popen.pid)
            peak = before
            for i in range(100):
                c.create_user(tenant.id, big_user(i, 300_000))
                peak = max(peak, _rss_bytes(proc.popen.pid))
            growth = peak - before
            print(f"core RSS growth with a stuck subscriber: {growth / 2**20:.1f} MiB")
            assert growth < bound + 50 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB"
            got: list[int] = []
            with pytest.raises(grpc.RpcError) as info:
                for resp in stuck:
                    got.extend(e.revision for e in resp.events)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.code() in RESUMABLE
            assert "too far behind" in info.value.details()
            assert "from_revision=" in info.value.details()
            assert len(got) < 100
            # Resumed from what it got, it receives the rest: nothing was lost.
            with c.watch(tenant.id, since=start + len(got)) as w:
                rest = [next(w).revision for _ in range(100 - len(got))]
            assert got + rest == list(range(start + 1, start + 101))
    finally:
        proc.stop()
