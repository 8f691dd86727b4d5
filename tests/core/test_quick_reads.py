"""Quick reads: the IdPs' lookups and reads by id, which run on the event loop in a
plain read transaction without a Session (`Database.read_quick`: on SQLite blocking,
on PostgreSQL awaiting psycopg's asyncio connection). They answer what any read
answers, on both databases, and need no Session unless the read goes beyond
prepared statements; then they run again in one. Also: new ids are time-ordered
UUIDv7s."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from identity_service.domain.convert import new_id
from identity_service.storage.db import Database
from scim_identity_api.v1 import groups_pb2, users_pb2
from scim_identity_client import (
    Authenticated,
    CallContext,
    IdentityClient,
    NotFound,
    Unauthenticated,
)
from scim_identity_client.types import Tenant

from .test_bearer_calls import _by_name, _user
from .test_filters import cmp


def _fallbacks(db: object) -> int:
    assert isinstance(db, Database)
    return db.quick_fallbacks


def test_quick_reads_answer_what_reads_answer_without_a_session(
    client: IdentityClient, tenant: Tenant, token: str, identity_service_db: object
) -> None:
    user = client.create_user(tenant.id, _user("quinn"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="ops"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(tenant.id, "auditor")
    client.assign_role(tenant.id, user.meta.id, "auditor")
    before = _fallbacks(identity_service_db)
    bearer = CallContext(bearer=token, tenant=tenant.name)

    got = client.get_user(tenant.id, user.meta.id)
    assert [g.display_name for g in got.groups] == ["ops"]
    assert [r.role for r in got.role_assignments] == ["auditor"]
    for f in (_by_name("QUINN"), cmp("externalId", "eq", "ext-quinn")):
        page = client.list_users("", filter=f, ctx=bearer)
        assert page.total_results == 1 and page.users[0] == got
    assert client.list_users("", filter=_by_name("nobody"), ctx=bearer).total_results == 0
    no_members = client.get_group(tenant.id, group.meta.id, include_members=False)
    assert no_members.display_name == "ops" and not no_members.members
    found = client.list_groups(tenant.id, filter=cmp("displayName", "eq", "ops"))
    assert [g.meta.id for g in found.groups] == [group.meta.id]
    assert client.get_revision(tenant.id).revision >= 5

    assert _fallbacks(identity_service_db) == before  # none of these needed a Session


def test_a_quick_read_that_needs_more_runs_again_in_a_session(
    client: IdentityClient, tenant: Tenant, token: str, identity_service_db: object
) -> None:
    user = client.create_user(tenant.id, _user("rory"))
    before = _fallbacks(identity_service_db)
    # count=1 and one match: whether a second one exists takes a COUNT, which is
    # not a prepared statement.
    page = client.list_users(
        "", filter=_by_name("rory"), count=1, ctx=CallContext(bearer=token, tenant=tenant.name)
    )
    assert page.total_results == 1 and [u.meta.id for u in page.users] == [user.meta.id]
    assert _fallbacks(identity_service_db) == before + 1


def test_a_rerun_read_checks_the_token_again_and_reports_only_what_it_checked(
    client: IdentityClient,
    tenant: Tenant,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the quick try and its re-run in a Session the token is revoked: the
    call is refused, and names no token as authenticated (nor attributes the
    refusal to it)."""
    db = identity_service_db
    assert isinstance(db, Database)
    issued = client.issue_token(tenant.id, description="revoked mid-call")
    for name in ("bob", "bob2"):  # count=1 and two matches: the page needs a COUNT
        client.create_user(tenant.id, users_pb2.User(user_name=name, external_id="same"))
    real_read = db.read

    @contextlib.contextmanager
    def revoked_first() -> Iterator[Any]:
        client.revoke_token(tenant.id, issued.token.id)
        monkeypatch.setattr(db, "read", real_read)
        with real_read() as s:
            yield s

    monkeypatch.setattr(db, "read", revoked_first)
    seen: list[Authenticated] = []
    ctx = CallContext(bearer=issued.secret, tenant=tenant.name, on_authenticated=seen.append)
    with pytest.raises(Unauthenticated):
        client.list_users("", filter=cmp("externalId", "eq", "same"), count=1, ctx=ctx)
    assert db.read is real_read  # the quick try authenticated it, the re-run refused
    assert seen == []


def test_quick_read_errors_leave_no_transaction_open(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    user = client.create_user(tenant.id, _user("sasha"))
    for _ in range(3):
        with pytest.raises(NotFound):
            client.get_user(tenant.id, str(uuid.uuid4()))
        with pytest.raises(Unauthenticated):
            client.list_users("", filter=_by_name("sasha"), ctx=CallContext(bearer=token + "x"))
    # Reads go on answering, and see later writes (no snapshot was left open).
    client.replace_user(tenant.id, _renamed(client.get_user(tenant.id, user.meta.id), "sam"))
    assert client.get_user(tenant.id, user.meta.id).user_name == "sam"
    page = client.list_users("", filter=_by_name("sam"), ctx=CallContext(bearer=token))
    assert [u.meta.id for u in page.users] == [user.meta.id]


def _renamed(user: users_pb2.User, name: str) -> users_pb2.User:
    out = users_pb2.User()
    out.CopyFrom(user)
    out.user_name = name
    return out


def test_new_ids_are_time_ordered_uuid7() -> None:
    first = new_id()
    time.sleep(0.002)
    later = [new_id() for _ in range(100)]
    assert all(uuid.UUID(i).version == 7 for i in [first, *later])
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in later)
    assert first < min(later)
    assert len(set(later)) == 100
    assert abs(int(first[:8] + first[9:13], 16) - time.time() * 1000) < 5000
