"""Calls that carry a tenant's API token (`CallContext(bearer=...)`), the way the
gateway makes one core call per SCIM request: the core checks the token in the
call's own transaction, refuses what its tenant or scope does not allow, reports
who it authenticated (also on errors), and attributes changes to the token.
Also: the prepared hot-path statements answer exactly what SQLAlchemy does, and
RecordOperations writes batches. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from identity_service.changes import streams
from identity_service.domain import groups, tenants, users
from identity_service.storage.db import Database
from identity_service.storage.filters import USERS, equality
from identity_service.storage.listing import _lookup_statements
from identity_service.storage.models import UserRow, UserValueRow, table
from scim_identity_api.v1 import (
    common_pb2,
    groups_pb2,
    history_pb2,
    policy_pb2,
    tenants_pb2,
    users_pb2,
)
from scim_identity_client import (
    Authenticated,
    CallContext,
    FailedPrecondition,
    IdentityClient,
    PermissionDenied,
    Unauthenticated,
)
from scim_identity_client.types import ErrorReason, Tenant

from .test_events import read_events
from .test_filters import cmp, not_, or_, vf


def _user(name: str) -> users_pb2.User:
    return users_pb2.User(
        user_name=name,
        external_id=f"ext-{name}",
        emails=[users_pb2.MultiValue(value=f"{name}@example.com", type="work", primary=True)],
    )


def _by_name(name: str) -> common_pb2.Filter:
    return cmp("userName", "eq", name)


class Seen:
    def __init__(self) -> None:
        self.who: list[Authenticated] = []

    def ctx(self, secret: str, tenant: str = "") -> CallContext:
        return CallContext(
            request_id="r-1", bearer=secret, tenant=tenant, on_authenticated=self.who.append
        )


def test_a_bearer_call_needs_no_tenant_id_and_says_who(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    client.create_user(tenant.id, _user("ada"))
    seen = Seen()
    page = client.list_users("", filter=_by_name("ADA"), ctx=seen.ctx(token, tenant.name))
    assert [u.user_name for u in page.users] == ["ada"]
    assert page.users[0].tenant_id == tenant.id
    (who,) = seen.who
    assert who.tenant_id == tenant.id
    assert who.scope == tenants_pb2.TOKEN_SCOPE_FULL
    assert who.token_id in {t.id for t in client.list_tokens(tenant.id)}


def test_the_change_is_attributed_to_the_token(
    client: IdentityClient, tenant: Tenant, token: str, database_url: str
) -> None:
    seen = Seen()
    # A claimed actor is ignored: the token decides.
    ctx = CallContext(
        request_id="r-2",
        actor_kind="admin",
        actor_id="mallory",
        bearer=token,
        on_authenticated=seen.who.append,
    )
    created = client.create_user("", _user("bob"), ctx=ctx)
    mine = [e for e in read_events(database_url, tenant.id) if e.resource_id == created.meta.id]
    assert mine and all(e.actor.kind == "token" for e in mine)
    assert {e.actor.id for e in mine} == {seen.who[0].token_id}


def test_wrong_or_unknown_tokens_are_refused_alike(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    other = client.create_tenant(f"other-{uuid.uuid4().hex[:10]}")
    other_token = client.issue_token(other.id).secret
    for secret, tenant_ref, tenant_id in (
        ("scim_" + "x" * 40, tenant.name, ""),  # unknown
        (other_token, tenant.name, ""),  # another tenant's, named by the path
        (other_token, "", tenant.id),  # another tenant's, named by the request
        (token, "no-such-tenant", ""),
    ):
        seen = Seen()
        with pytest.raises(Unauthenticated):
            client.list_users(tenant_id, ctx=seen.ctx(secret, tenant_ref))
        assert seen.who == []  # nothing authenticated, nothing reported


def test_scope_is_enforced_by_the_core(client: IdentityClient, tenant: Tenant) -> None:
    created = client.create_user(tenant.id, _user("carol"))
    read_only = client.issue_token(tenant.id, scope=tenants_pb2.TOKEN_SCOPE_READ_ONLY).secret
    seen = Seen()
    assert client.get_user("", created.meta.id, ctx=seen.ctx(read_only)).user_name == "carol"
    with pytest.raises(PermissionDenied) as refused:
        client.create_user("", _user("dave"), ctx=seen.ctx(read_only))
    assert refused.value.reason == ErrorReason.ERROR_REASON_TOKEN_SCOPE
    assert "read-only" in refused.value.message
    # Refused, but authenticated: the caller learns who (to record the refusal).
    assert len(seen.who) == 2
    assert client.list_users(tenant.id, filter=_by_name("dave")).total_results == 0

    client.revoke_token(tenant.id, seen.who[0].token_id)  # room for one more token
    users_only = client.issue_token(tenant.id, scope=tenants_pb2.TOKEN_SCOPE_USERS_ONLY).secret
    assert client.list_users("", ctx=Seen().ctx(users_only)).total_results == 1
    with pytest.raises(PermissionDenied) as refused:
        client.list_groups("", ctx=Seen().ctx(users_only))
    assert "users-only" in refused.value.message


def test_a_users_only_token_sees_users_without_their_groups(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    """The groups a user belongs to (ids and names) are Groups data, which a
    users-only token may not read by any route: not in User.groups, nor by filtering
    users on their groups. A full-scope token sees them."""
    client.set_policy(  # the tenant's own fields, one of them taken from the groups
        tenant.id,
        policy_pb2.TenantPolicy(
            user_mappings=[
                policy_pb2.AttributeMapping(
                    field="login", source=common_pb2.AttributePath(attribute="userName")
                ),
                policy_pb2.AttributeMapping(
                    field="teams",
                    source=common_pb2.AttributePath(attribute="groups"),
                    kind=policy_pb2.MAPPING_KIND_LIST_OF_REFERENCES,
                ),
            ]
        ),
    )
    user = client.create_user(tenant.id, _user("erin"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="admins"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    full = Seen().ctx(token)
    seen_fully = client.get_user("", user.meta.id, ctx=full)
    assert [g.id for g in seen_fully.groups] == [group.meta.id]
    assert dict(seen_fully.mapped) == {"login": "erin", "teams": [group.meta.id]}
    by_group = cmp("groups", "eq", group.meta.id)
    assert client.list_users("", filter=by_group, ctx=full).total_results == 1

    client.revoke_token(tenant.id, client.list_tokens(tenant.id)[0].id)  # room for one more
    users_only = Seen().ctx(
        client.issue_token(tenant.id, scope=tenants_pb2.TOKEN_SCOPE_USERS_ONLY).secret
    )
    got = client.get_user("", user.meta.id, ctx=users_only)
    assert got.user_name == "erin" and not got.groups and dict(got.mapped) == {"login": "erin"}
    for page in (
        client.list_users("", filter=_by_name("erin"), ctx=users_only),  # quick lookup
        client.list_users("", ctx=users_only),  # a list, in a Session
    ):
        assert [u.user_name for u in page.users] == ["erin"] and not page.users[0].groups
        assert dict(page.users[0].mapped) == {"login": "erin"}
    core = "urn:ietf:params:scim:schemas:core:2.0:User"
    renamed = users_pb2.User()
    renamed.CopyFrom(got)
    renamed.title = "Ops"
    assert not client.replace_user("", renamed, ctx=users_only).groups
    for f in (
        by_group,
        cmp("groups", "eq", group.meta.id, schema=core),
        cmp("GROUPS.display", "eq", "admins"),
        cmp(" groups .value", "eq", group.meta.id, schema=f" {core.upper()} "),  # as resolved
        vf("groups", cmp("value", "eq", group.meta.id)),
        or_(_by_name("erin"), not_(cmp("groups", "pr"))),
    ):
        with pytest.raises(PermissionDenied) as refused:
            client.list_users("", filter=f, ctx=users_only)
        assert refused.value.reason == ErrorReason.ERROR_REASON_TOKEN_SCOPE
        assert "users-only" in refused.value.message
    # Nothing changed for the membership, and an admin still sees it.
    assert [g.id for g in client.get_user(tenant.id, user.meta.id).groups] == [group.meta.id]


def test_an_inactive_connector_is_refused_after_authentication(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    client.update_tenant(tenant.id, active=False)
    seen = Seen()
    with pytest.raises(FailedPrecondition) as refused:
        client.list_users("", ctx=seen.ctx(token))
    assert refused.value.reason == ErrorReason.ERROR_REASON_TENANT_INACTIVE
    assert [w.tenant_id for w in seen.who] == [tenant.id]


def test_revocation_takes_effect_on_the_next_call(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    seen = Seen()
    client.list_users("", ctx=seen.ctx(token))
    client.revoke_token(tenant.id, seen.who[0].token_id)
    with pytest.raises(Unauthenticated):
        client.list_users("", ctx=seen.ctx(token))


def test_a_dead_token_of_the_tenant_is_named_in_its_refusal(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    """So that the gateway records the 401 in the tenant's history (issue #17: the
    admin sees their IdP still uses a revoked token); its client learns nothing."""
    seen = Seen()
    client.list_users("", ctx=seen.ctx(token))
    token_id = seen.who[0].token_id
    client.revoke_token(tenant.id, token_id)
    for ref in (tenant.name, tenant.id, ""):
        seen = Seen()
        with pytest.raises(Unauthenticated):
            client.list_users("", ctx=seen.ctx(token, ref))
        assert seen.who == [Authenticated(tenant.id, token_id, 0, refused=True)]
    with pytest.raises(Unauthenticated) as refused:
        client.authenticate(token, tenant=tenant.name)
    assert (refused.value.detail.tenant_id, refused.value.detail.token_id) == (tenant.id, token_id)
    # Named as another tenant's: the same refusal as an unknown token, naming nothing.
    other = client.create_tenant(f"other-{uuid.uuid4().hex[:10]}")
    seen = Seen()
    with pytest.raises(Unauthenticated) as refused:
        client.list_users("", ctx=seen.ctx(token, other.name))
    assert seen.who == [] and not refused.value.detail.tenant_id
    with pytest.raises(Unauthenticated) as refused:
        client.list_users(other.id, ctx=seen.ctx(token))
    assert seen.who == [] and not refused.value.detail.tenant_id
    with pytest.raises(Unauthenticated) as refused:
        client.authenticate(token, tenant=other.id)
    assert not refused.value.detail.tenant_id


def test_record_operations_batches(client: IdentityClient, tenant: Tenant) -> None:
    other = client.create_tenant(f"hist-{uuid.uuid4().hex[:10]}")

    def op(tenant_id: str, status: int, rid: str) -> history_pb2.Operation:
        o = history_pb2.Operation(
            tenant_id=tenant_id,
            method="get",
            kind=history_pb2.OPERATION_KIND_READ,
            resource_type="User",
            resource_id=rid,
            status=status,
            request_id=rid,
        )
        o.time.GetCurrentTime()
        return o

    nul = op(other.id, 404, "r5")
    nul.resource_id = "x\x00y"
    answer = client.record_operations(
        [
            op(tenant.id, 200, "r1"),
            op(other.id, 404, "r2"),
            op(str(uuid.uuid4()), 200, "r3"),  # no such tenant: dropped, not an error
            op(tenant.id, 99, "bad"),  # invalid: dropped, never the batch
            nul,  # invalid too (NUL)
            op(tenant.id, 201, "r4"),
        ]
    )
    assert (answer.recorded, answer.dropped) == (3, 3)
    mine = client.list_operations(tenant.id).operations
    assert sorted(o.request_id for o in mine) == ["r1", "r4"]
    assert all(o.method == "GET" and o.id for o in mine)
    assert [o.request_id for o in client.list_operations(other.id).operations] == ["r2"]


def test_prepared_statements_answer_what_sqlalchemy_answers(
    client: IdentityClient, tenant: Tenant, token: str, identity_service_db: object
) -> None:
    db = identity_service_db
    assert isinstance(db, Database)
    created = client.create_user(tenant.id, _user("erin"))
    group = client.create_group(tenant.id, groups_pb2.Group(display_name="eng"))
    client.update_group(tenant.id, group.meta.id, add_members=[created.meta.id])
    client.create_role(tenant.id, "admin")
    client.assign_role(tenant.id, created.meta.id, "admin")
    client.create_role(tenant.id, "Zed")
    client.assign_role(tenant.id, created.meta.id, "Zed")
    with db.read() as s:
        tpk = tenants.by_id(s, tenant.id).pk
        lookup = equality(USERS, _by_name("ERIN"))
        assert lookup is not None
        cases = [
            (tenants._BY_ID, {"id": tenant.id}),
            (tenants._BY_SECRET, {"h": tenants._hash(token)}),
            (users._BY_ID, {"t": tpk, "id": created.meta.id}),
            (groups._BY_ID, {"t": tpk, "id": group.meta.id}),
            (streams._COUNTERS, {"t": tpk}),
            (streams._EVENTS, {"t": tpk, "after": 1, "n": 3}),
            (users._BY_NAME_KEY, {"t": tpk, "key": "erin"}),
            (users._BY_ID_FOR_UPDATE, {"t": tpk, "id": created.meta.id}),
            (groups._BY_ID_FOR_UPDATE, {"t": tpk, "id": group.meta.id}),
            (users._NAME_TAKEN, {"t": tpk, "key": "erin", "pk": 0}),
            (
                _lookup_statements(db.memo, users._ONE_SELECT, UserRow, lookup)[0],
                {"t": tpk, "v": lookup.value, "n": 10},
            ),
            (
                _lookup_statements(db.memo, users._ROW_SELECT, UserRow, lookup)[1],
                {"t": tpk, "v": lookup.value},
            ),
            (users._ID_EXISTS, {"t": tpk, "id": group.meta.id}),
        ]
        for prepared, params in cases:
            fast = [tuple(r) for r in prepared.run(s, params)]
            slow = [tuple(r) for r in s.execute(prepared.stmt, params)]
            assert fast == slow and fast, prepared.stmt
    # And the snapshots equal the ORM rows.
    with db.read() as s:
        snap = tenants.snapshot_by_id(s, tenant.id)
        orm = tenants.by_id(s, tenant.id)
        for key in ("pk", "id", "name", "active", "revision", "settings", "created"):
            assert getattr(snap, key) == getattr(orm, key), key
        b = tenants.check_bearer(s, token)
        assert b.tenant.id == orm.id and b.tenant.revision == orm.revision
        assert b.token.id in {t.id for t in client.list_tokens(tenant.id)}


def test_prepared_writes_store_what_sqlalchemy_stores(
    client: IdentityClient, tenant: Tenant, identity_service_db: object
) -> None:
    """The write path's statements on the DBAPI cursor store the very values
    SQLAlchemy's own execute stores: datetimes, booleans, JSON documents, and a None
    in a JSON column (JSON `null`, not SQL NULL). Compared raw, in a transaction
    that is rolled back."""
    db = identity_service_db
    assert isinstance(db, Database)
    created = client.create_user(tenant.id, _user("vera"))

    class Undo(Exception):
        pass

    def raw(s: Any, pk: int) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in s.execute(
                text(
                    'SELECT attr, value, type, "primary", extra IS NULL, '
                    "CAST(extra AS TEXT) FROM user_values WHERE user_pk = :pk ORDER BY pk"
                ),
                {"pk": pk},
            )
        ]

    with contextlib.suppress(Undo), db.write() as s:
        upk = s.execute(select(UserRow.pk).where(UserRow.id == created.meta.id)).scalar_one()
        tpk = tenants.by_id(s, tenant.id).pk
        rows = [
            (upk, tpk, "emails", "a@example.org", "a@example.org", "work", True, None, None),
            (upk, tpk, "addresses", "1 Main St", "1 main st", "home", False, None, {"a": 1}),
        ]
        s.execute(users._DELETE_VALUES.stmt, {"user_pk": upk})
        users._INSERT_VALUES.run(s, rows)
        fast = raw(s, upk)
        s.execute(users._DELETE_VALUES.stmt, {"user_pk": upk})
        s.execute(
            insert(table(UserValueRow)),
            [dict(zip(users._VALUE_COLUMNS, r, strict=True)) for r in rows],
        )
        assert raw(s, upk) == fast and not fast[0][4]  # JSON null, as SQLAlchemy
        params = {
            "row_pk": upk,
            "version": 7,
            "last_modified": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            "managed_by": "scim",
            **users._columns(users.stored_form(_user("vera"))),
        }
        columns = text(
            "SELECT version, CAST(last_modified AS TEXT), active, CAST(doc AS TEXT), body "
            "FROM users WHERE pk = :pk"
        )
        users._UPDATE_USER.execute(s, params)
        fast_user = tuple(s.execute(columns, {"pk": upk}).one())
        s.execute(users._UPDATE_USER.stmt, params)
        assert tuple(s.execute(columns, {"pk": upk}).one()) == fast_user
        raise Undo
