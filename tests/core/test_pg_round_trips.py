"""PostgreSQL reads in at most two round trips (issue #16): the IdPs' lookups and
reads by id check the bearer in one statement and read the user with its groups
and roles in another, each its own snapshot, with no BEGIN or COMMIT around them.
Counted on the wire: the service talks to PostgreSQL through a relay that counts
each time the client speaks again after the server answered. Also what only
PostgreSQL's row locks can do: a write that waited for another writer's lock, on the
user's row or on the tenant's (the revisions)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import make_url

from identity_service.settings import Settings
from identity_service.storage import db as db_module
from scim_identity_api.v1 import groups_pb2, users_pb2
from scim_identity_client import CallContext, IdentityClient

from ..support import PG_ADMIN_URL, ServiceThread, TcpRelay, eventually, throwaway_pg_database
from .test_events import read_events
from .test_filters import cmp
from .test_patch_property import _op

T = TypeVar("T")


class RoundTrips(TcpRelay):
    """A relay to PostgreSQL that counts round trips, per connection: a client's
    message that follows an answer from the server starts a new one, however it is
    split into segments."""

    def __init__(self, host: str, port: int) -> None:
        self.counts: dict[int, int] = {}
        self._lock = threading.Lock()
        super().__init__((host, port))

    def seen(self, side: str, state: dict[str, str], data: bytes) -> None:
        with self._lock:
            # Who spoke last on this connection: the server, until the client's first word.
            if side == "client" and state.get("last", "server") == "server":
                key = id(state)
                self.counts[key] = self.counts.get(key, 0) + 1
            state["last"] = side

    def during(self, call: Callable[[], T]) -> tuple[T, int]:
        """`call()`'s answer and the most round trips one connection made meanwhile (a
        quick read holds one connection; the service's health check, on another, may
        land in the same moment)."""
        with self._lock:
            before = dict(self.counts)
        answer = call()
        with self._lock:
            after = dict(self.counts)
        return answer, max((n - before.get(k, 0) for k, n in after.items()), default=0)


@dataclass
class Relayed:
    client: IdentityClient
    relay: RoundTrips
    #: The database's own URL (not the relay's).
    url: str


@pytest.fixture
def relayed() -> Iterator[Relayed]:
    """A real identity service (in-process) on a PostgreSQL database of its own,
    reached through a RoundTrips relay."""
    with throwaway_pg_database("identity_rt") as url:
        u = make_url(url)
        relay = RoundTrips(u.host or "127.0.0.1", u.port or 5432)
        service = ServiceThread(
            Settings(
                database_url=u.set(port=relay.port).render_as_string(hide_password=False),
                listen="127.0.0.1:0",
                db_pool_size=2,
                event_retention_seconds=0,
                history_retention_seconds=0,
            )
        )
        target = service.start()
        try:
            with IdentityClient(target) as client:
                client.wait_ready()
                yield Relayed(client, relay, url)
        finally:
            service.stop()
            relay.close()


def test_a_lookup_and_a_read_by_id_are_two_round_trips_each(
    relayed: Relayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, relay = relayed.client, relayed.relay
    # A connection idle for a second is pinged before use (test_pg_connections tests
    # it): on a loaded machine the write before each read may take that long.
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 3600.0)
    tenant = client.create_tenant("rt")
    secret = client.issue_token(tenant.id, description="idp").secret
    user = client.create_user(
        tenant.id,
        users_pb2.User(
            user_name="ada",
            emails=[users_pb2.MultiValue(value="ada@example.com", type="work", primary=True)],
        ),
    )
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="eng"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(tenant.id, "admin")
    client.assign_role(tenant.id, user.meta.id, "admin")
    ctx = CallContext(bearer=secret, tenant=tenant.name)

    def lookup() -> users_pb2.ListUsersResponse:
        return client.list_users("", filter=cmp("userName", "eq", "ada"), ctx=ctx)

    def by_id() -> users_pb2.User:
        return client.get_user("", user.meta.id, ctx=ctx)

    # Warm: connections open, and the token's first use noted (a write off the call,
    # up to a second later; then not again for a while).
    lookup(), by_id()
    eventually(
        lambda: all(t.HasField("last_used") for t in client.list_tokens(tenant.id)),
        what="the token's use noted",
    )
    # psycopg prepares a statement on its fifth run (one round trip, once): past that.
    for _ in range(6):
        lookup(), by_id()
    for call in (lookup, by_id):
        for i in range(5):
            # Each read sees the write before it (no snapshot outlives its read).
            changed = client.get_user(tenant.id, user.meta.id)
            changed.display_name = f"Ada {call.__name__} {i}"
            client.replace_user(tenant.id, changed)
            answer, trips = relay.during(call)
            found = answer.users[0] if isinstance(answer, users_pb2.ListUsersResponse) else answer
            # The answer is whole and current: the user with its group and role.
            assert found.display_name == changed.display_name
            assert [g.id for g in found.groups] == [group.meta.id]
            assert [r.role for r in found.role_assignments] == ["admin"]
            assert trips <= 2, (call.__name__, trips)


def test_a_write_that_waited_for_the_row_lock_answers_the_groups_and_roles_after_it(
    relayed: Relayed,
) -> None:
    """Under READ COMMITTED a `SELECT ... FOR UPDATE` that waited for another writer
    returns that writer's row, but a subquery of the same statement still reads the
    snapshot from before the wait. Another transaction holds the user's row lock and
    changes its groups and roles (as a PUT with role rules does); a PATCH waits for
    it. Its answer, and its event's copy, must have the groups and roles after."""
    client, url = relayed.client, relayed.url
    tenant = client.create_tenant("waits")
    user = client.create_user(tenant.id, users_pb2.User(user_name="ada", title="a"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="eng"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(tenant.id, "admin")
    with psycopg.connect(url) as holder:
        upk, tpk = holder.execute(
            "SELECT pk, tenant_pk FROM users WHERE id = %s FOR UPDATE", (user.meta.id,)
        ).fetchone()
        (rpk,) = holder.execute(
            "SELECT pk FROM roles WHERE tenant_pk = %s AND name = 'admin'", (tpk,)
        ).fetchone()
        holder.execute(
            "INSERT INTO role_assignments (tenant_pk, user_pk, role_pk, source, created)"
            " VALUES (%s, %s, %s, 1, now())",
            (tpk, upk, rpk),
        )
        holder.execute("DELETE FROM group_members WHERE member_id = %s", (user.meta.id,))
        holder.execute("UPDATE users SET version = version + 1 WHERE pk = %s", (upk,))
        answered = _patch_waiting_for(holder, client, tenant.id, user.meta.id, url)
    assert [g.id for g in answered.groups] == []
    assert [r.role for r in answered.role_assignments] == ["admin"]
    assert answered == client.get_user(tenant.id, user.meta.id)
    last = [e for e in read_events(url, tenant.id) if e.resource_id == user.meta.id]
    assert last[-1].user == answered


def test_a_writes_event_has_the_changes_committed_before_its_revision(
    relayed: Relayed,
) -> None:
    """Another writer adds the user to a group and takes the tenant's next revision
    (as a group PATCH does: its event), then commits while a PATCH of the user waits
    for the tenant's row lock to take its own. The PATCH's event comes after that
    writer's, so its copy of the user, and its answer, have the group."""
    client, url = relayed.client, relayed.url
    tenant = client.create_tenant("after")
    user = client.create_user(tenant.id, users_pb2.User(user_name="ada", title="a"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="eng"))
    with psycopg.connect(url) as holder:
        # The tenant's row lock, as a writer's revision bump takes it.
        holder.execute("UPDATE tenants SET revision = revision WHERE id = %s", (tenant.id,))
        (gpk,) = holder.execute("SELECT pk FROM groups WHERE id = %s", (group.meta.id,)).fetchone()
        holder.execute(
            "INSERT INTO group_members (group_pk, member_id, member_type) VALUES (%s, %s, %s)",
            (gpk, user.meta.id, groups_pb2.MEMBER_TYPE_USER),
        )
        answered = _patch_waiting_for(holder, client, tenant.id, user.meta.id, url)
    assert [g.id for g in answered.groups] == [group.meta.id]
    assert answered == client.get_user(tenant.id, user.meta.id)
    last = [e for e in read_events(url, tenant.id) if e.resource_id == user.meta.id]
    assert last[-1].user == answered


def _patch_waiting_for(
    holder: psycopg.Connection[Any], client: IdentityClient, tenant_id: str, user_id: str, url: str
) -> users_pb2.User:
    """A PATCH of the user, made while `holder`'s transaction holds a lock it needs:
    `holder` commits once the PATCH is seen waiting for a lock (not merely not
    started yet). The PATCH's answer."""
    answers: list[users_pb2.User] = []
    patching = threading.Thread(
        target=lambda: answers.append(
            client.patch_user(tenant_id, user_id, [_op("replace", "title", "b")])
        )
    )
    patching.start()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as watcher:
        eventually(
            lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock'",
                (make_url(url).database,),
            ).fetchone()[0],
            what="the PATCH waiting for a lock",
        )
    holder.commit()
    patching.join(30)
    (answered,) = answers
    return answered
