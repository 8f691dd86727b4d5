"""Quick reads: the IdPs' lookups and reads by id, which run on the event loop in a
plain read transaction without a Session (`Database.read_quick`: on SQLite blocking,
on PostgreSQL awaiting psycopg's asyncio connection). They answer what any read
answers, on both databases; the servicer picks them before they start, and they
run prepared statements only (their type says so), so none ever needs a Session
or runs twice. Also: new ids are time-ordered UUIDv7s."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from identity_service.domain.convert import new_id
from identity_service.storage.db import Database
from scim_identity_api.v1 import common_pb2, groups_pb2, users_pb2
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


def _quick(db: object) -> int:
    assert isinstance(db, Database)
    return db.quick_reads


def test_quick_reads_answer_what_reads_answer_without_a_session(
    client: IdentityClient,
    tenant: Tenant,
    token: str,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = identity_service_db
    assert isinstance(db, Database)
    user = client.create_user(tenant.id, _user("quinn"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="ops"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(tenant.id, "auditor")
    client.assign_role(tenant.id, user.meta.id, "auditor")
    sessions: list[int] = []
    real_read = db.read

    @contextlib.contextmanager
    def counted() -> Iterator[Any]:
        sessions.append(1)
        with real_read() as s:
            yield s

    monkeypatch.setattr(db, "read", counted)
    before = _quick(db)
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

    assert _quick(db) == before + 7  # each call one quick read
    assert sessions == []  # and none needed a Session

    # Past the lookup (a sort; members): a read Session, no quick read.
    by_name = common_pb2.Sort(path=common_pb2.AttributePath(attribute="userName"))
    client.list_users(tenant.id, filter=_by_name("quinn"), sort=by_name)
    client.get_group(tenant.id, group.meta.id, include_members=True)
    assert _quick(db) == before + 7 and len(sessions) == 2


def test_a_full_lookup_page_counts_its_total_in_the_same_quick_read(
    client: IdentityClient,
    tenant: Tenant,
    token: str,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """count=1 and two matches: the total takes a COUNT, a prepared statement of its
    own, so the lookup stays one quick read; the page is the first match by id
    order, as the unsorted index walk gives it."""
    db = identity_service_db
    assert isinstance(db, Database)
    made = [
        client.create_user(tenant.id, users_pb2.User(user_name=name, external_id="twice"))
        for name in ("rory", "rory2")
    ]
    monkeypatch.setattr(db, "read", _no_session)
    before = _quick(db)
    ctx = CallContext(bearer=token, tenant=tenant.name)
    page = client.list_users("", filter=cmp("externalId", "eq", "twice"), count=1, ctx=ctx)
    assert page.total_results == 2 and [u.meta.id for u in page.users] == [made[0].meta.id]
    page = client.list_users("", filter=cmp("externalId", "eq", "twice"), count=0, ctx=ctx)
    assert page.total_results == 2 and not page.users
    page = client.list_users("", filter=cmp("externalId", "eq", "twice"), count=2, ctx=ctx)
    assert page.total_results == 2 and [u.meta.id for u in page.users] == [u.meta.id for u in made]
    assert _quick(db) == before + 3


def test_a_quick_read_refuses_a_revoked_token_and_authenticates_none(
    client: IdentityClient,
    tenant: Tenant,
    identity_service_db: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token revoked before the lookup is refused by the quick read itself (no
    Session, no second try); the refusal names the dead token of the tenant the call
    named only as refused (so the gateway records the 401), never as authenticated."""
    db = identity_service_db
    assert isinstance(db, Database)
    issued = client.issue_token(tenant.id, description="revoked before the call")
    for name in ("bob", "bob2"):
        client.create_user(tenant.id, users_pb2.User(user_name=name, external_id="same"))
    client.revoke_token(tenant.id, issued.token.id)
    monkeypatch.setattr(db, "read", _no_session)
    before = _quick(db)
    seen: list[Authenticated] = []
    ctx = CallContext(bearer=issued.secret, tenant=tenant.name, on_authenticated=seen.append)
    with pytest.raises(Unauthenticated):
        client.list_users("", filter=cmp("externalId", "eq", "same"), count=1, ctx=ctx)
    assert [(s.token_id, s.refused) for s in seen] == [(issued.token.id, True)]
    assert _quick(db) == before + 1


def _no_session() -> Any:
    raise AssertionError("a quick read asked for a Session")


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
