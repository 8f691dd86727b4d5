"""Stream replicas (IDENTITY_ROLE=streams) over the shared database, on SQLite and
PostgreSQL: they refuse every write with FAILED_PRECONDITION naming the role, serve
Watch, GetRevision and reads, and follow what a writer commits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from identity_service.edge.auth import STREAM_REPLICA_METHODS
from identity_service.edge.server import IdentityService
from scim_identity_client import FailedPrecondition, IdentityClient
from scim_identity_client.types import Group, Tenant

from .conftest import SMALL_POOL, Collector, new_user

Factory = Callable[..., tuple[IdentityService, str]]


def test_stream_replica_refuses_writes_and_serves_reads(
    service_factory: Factory, client: IdentityClient, tenant: Tenant
) -> None:
    user = client.create_user(tenant.id, new_user("w"))
    before = client.get_revision(tenant.id).revision
    _replica, target = service_factory(role="streams", db_pool_size=SMALL_POOL)
    with IdentityClient(target) as r:
        writes: list[Callable[[], object]] = [
            lambda: r.create_user(tenant.id, new_user("r")),
            lambda: r.delete_user(tenant.id, user.meta.id),
            lambda: r.create_group(tenant.id, Group(display_name="refused")),
            lambda: r.create_tenant("refused-tenant"),
            lambda: r.issue_token(tenant.id),
        ]
        for write in writes:
            with pytest.raises(FailedPrecondition) as info:
                write()
            assert "IDENTITY_ROLE=streams" in str(info.value)
        # Nothing was written through it.
        assert client.get_revision(tenant.id).revision == before
        assert client.get_user(tenant.id, user.meta.id).meta.id == user.meta.id
        # Reads and the change stream are served.
        assert r.get_revision(tenant.id).revision == before
        assert r.get_user(tenant.id, user.meta.id).user_name == user.user_name
        assert user.meta.id in [u.meta.id for u in r.list_users(tenant.id).users]
        with r.watch(tenant.id, since=0) as w:
            assert [next(w).revision for _ in range(before)] == list(range(1, before + 1))


def test_stream_replica_methods_are_reads_only() -> None:
    names = {m.rsplit("/", 1)[-1] for m in STREAM_REPLICA_METHODS}
    assert "Watch" in names and "GetRevision" in names
    writes = ("Create", "Replace", "Update", "Delete", "Issue", "Revoke", "Rotate", "Set")
    assert not [n for n in names if n.startswith(writes)]
    assert not names & {"AuthenticateToken", "JitProvision", "RecordOperation", "AssignRole"}


def test_stream_replica_follows_the_writer(
    service_factory: Factory, client: IdentityClient, tenant: Tenant
) -> None:
    """Writes on the writer reach a subscriber of the replica (a separate Database,
    so no in-process wake-up: LISTEN/NOTIFY on PostgreSQL, the poll on SQLite)."""
    _replica, target = service_factory(role="streams", db_pool_size=SMALL_POOL)
    start = client.get_revision(tenant.id).revision
    with IdentityClient(target) as r:
        col = Collector(r.watch(tenant.id, since=start))
        try:
            for i in range(20):
                client.create_user(tenant.id, new_user(i))
            final = client.get_revision(tenant.id).revision
            col.wait_revision(final, timeout=30)
        finally:
            col.close()
    assert col.revisions == list(range(start + 1, final + 1))
