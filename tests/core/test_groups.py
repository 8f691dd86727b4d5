"""Groups and row-based membership: O(k) changes, paged member lists, atomicity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from scim_identity_api.v1 import policy_pb2
from scim_identity_client import IdentityClient, InvalidArgument, NotFound, VersionMismatch
from scim_identity_client.types import (
    ErrorReason,
    EventType,
    Group,
    Member,
    MemberType,
    Tenant,
    User,
)


def users(client: IdentityClient, tenant: Tenant, n: int, prefix: str = "u") -> list[str]:
    return [client.create_user(tenant.id, User(user_name=f"{prefix}{i}")).meta.id for i in range(n)]


def test_create_with_members_and_get(client: IdentityClient, tenant: Tenant) -> None:
    ids = users(client, tenant, 3)
    g = client.create_group(
        tenant.id,
        Group(display_name="Engineering", external_id="x1", members=[Member(value=i) for i in ids]),
    )
    assert g.member_count == 3 and g.meta.version == 1
    got = client.get_group(tenant.id, g.meta.id)
    assert [m.value for m in got.members] == ids
    assert {m.type for m in got.members} == {MemberType.MEMBER_TYPE_USER}
    assert [m.display for m in got.members] == ["u0", "u1", "u2"]
    bare = client.get_group(tenant.id, g.meta.id, include_members=False)
    assert not bare.members and bare.member_count == 3
    u = client.get_user(tenant.id, ids[0])
    assert [(r.id, r.display_name) for r in u.groups] == [(g.meta.id, "Engineering")]
    # member_limit: a group of up to that many members comes whole, a larger one bare.
    for limit in (3, 4):
        whole = client.get_group(tenant.id, g.meta.id, member_limit=limit)
        assert [m.value for m in whole.members] == ids and whole == got
    over = client.get_group(tenant.id, g.meta.id, member_limit=2)
    assert not over.members and over.member_count == 3 and over.meta == got.meta
    assert client.get_group(tenant.id, g.meta.id, include_members=False, member_limit=9) == bare


def test_add_and_remove_members(client: IdentityClient, tenant: Tenant) -> None:
    ids = users(client, tenant, 4)
    g = client.create_group(tenant.id, Group(display_name="g"))
    g = client.update_group(tenant.id, g.meta.id, add_members=ids[:3])
    assert g.member_count == 3 and g.meta.version == 2
    g = client.update_group(tenant.id, g.meta.id, add_members=ids[2:], remove_members=[ids[0]])
    assert g.member_count == 3  # ids[2] was already there; ids[3] added; ids[0] gone
    assert [m.value for m in client.list_members(tenant.id, g.meta.id)] == ids[1:]
    same = client.update_group(tenant.id, g.meta.id, remove_members=[str(uuid.uuid4())])
    assert same.meta.version == g.meta.version  # nothing changed, no new version


def test_replace_members(client: IdentityClient, tenant: Tenant) -> None:
    ids = users(client, tenant, 4)
    g = client.create_group(
        tenant.id, Group(display_name="g", members=[Member(value=i) for i in ids[:2]])
    )
    g = client.update_group(tenant.id, g.meta.id, clear_members=True, add_members=ids[1:3])
    assert sorted(m.value for m in client.list_members(tenant.id, g.meta.id)) == sorted(ids[1:3])
    assert g.member_count == 2
    g.display_name = "renamed"
    g.ClearField("members")
    g.members.add(value=ids[3])
    r = client.replace_group(tenant.id, g)
    assert r.display_name == "renamed" and r.member_count == 1


def test_nested_groups(client: IdentityClient, tenant: Tenant) -> None:
    child = client.create_group(tenant.id, Group(display_name="child"))
    parent = client.create_group(
        tenant.id, Group(display_name="parent", members=[Member(value=child.meta.id)])
    )
    (m,) = client.get_group(tenant.id, parent.meta.id).members
    assert m.type == MemberType.MEMBER_TYPE_GROUP and m.display == "child"
    with pytest.raises(InvalidArgument):
        client.update_group(tenant.id, parent.meta.id, add_members=[parent.meta.id])
    client.delete_group(tenant.id, child.meta.id)
    assert client.get_group(tenant.id, parent.meta.id).member_count == 0


def test_unknown_members_under_the_reject_policy_change_nothing(
    client: IdentityClient, tenant: Tenant
) -> None:
    client.set_policy(
        tenant.id, policy_pb2.TenantPolicy(unknown_members=policy_pb2.UNKNOWN_MEMBERS_REJECT)
    )
    (uid,) = users(client, tenant, 1)
    other = client.create_tenant(f"t-{uuid.uuid4().hex[:10]}")
    foreign = client.create_user(other.id, User(user_name="x")).meta.id
    g = client.create_group(tenant.id, Group(display_name="g"))
    gone = str(uuid.uuid4())
    for bad in ([gone], ["not-an-id"], [foreign], [uid, gone]):
        with pytest.raises(InvalidArgument) as exc:
            client.update_group(tenant.id, g.meta.id, add_members=bad, display_name="changed")
        assert exc.value.field == "members"
        assert exc.value.reason == ErrorReason.ERROR_REASON_INVALID_VALUE
        assert bad[-1][:8] in exc.value.message  # named
    with pytest.raises(InvalidArgument):
        client.update_group(
            tenant.id, g.meta.id, add_members=[Member(value=uid, type=MemberType.MEMBER_TYPE_GROUP)]
        )
    after = client.get_group(tenant.id, g.meta.id)
    assert after.display_name == "g" and after.member_count == 0 and after.meta.version == 1


def test_unknown_members_are_skipped_and_answered(client: IdentityClient, tenant: Tenant) -> None:
    uid, deleted = users(client, tenant, 2)
    client.delete_user(tenant.id, deleted, hard=True)  # the IdP still has its id
    other = client.create_tenant(f"t-{uuid.uuid4().hex[:10]}")
    foreign = client.create_user(other.id, User(user_name="x")).meta.id
    g = client.create_group(tenant.id, Group(display_name="g", members=[Member(value=deleted)]))
    assert list(g.skipped_members) == [deleted] and g.member_count == 0
    updated = client.update_group(
        tenant.id, g.meta.id, add_members=[deleted, uid, foreign, "not-an-id"], display_name="h"
    )
    assert list(updated.skipped_members) == ["not-an-id", deleted, foreign]
    assert updated.display_name == "h" and updated.member_count == 1
    assert [m.value for m in client.get_group(tenant.id, g.meta.id).members] == [uid]
    assert not client.get_group(tenant.id, g.meta.id).skipped_members  # only in a write's answer


def test_version_checks(client: IdentityClient, tenant: Tenant) -> None:
    g = client.create_group(tenant.id, Group(display_name="g"))
    client.update_group(tenant.id, g.meta.id, display_name="h", expected_version=1)
    with pytest.raises(VersionMismatch):
        client.update_group(tenant.id, g.meta.id, display_name="i", expected_version=1)
    with pytest.raises(VersionMismatch):
        client.delete_group(tenant.id, g.meta.id, expected_version=1)


def test_blank_display_name(client: IdentityClient, tenant: Tenant) -> None:
    with pytest.raises(InvalidArgument) as exc:
        client.create_group(tenant.id, Group(display_name=" "))
    assert exc.value.reason == ErrorReason.ERROR_REASON_INVALID_VALUE


def test_deleting_a_user_leaves_groups(client: IdentityClient, tenant: Tenant) -> None:
    ids = users(client, tenant, 2)
    g = client.create_group(
        tenant.id, Group(display_name="g", members=[Member(value=i) for i in ids])
    )
    client.delete_user(tenant.id, ids[0])
    after = client.get_group(tenant.id, g.meta.id)
    assert [m.value for m in after.members] == [ids[1]] and after.member_count == 1


def test_list_members_pages(client: IdentityClient, tenant: Tenant) -> None:
    ids = users(client, tenant, 25)
    g = client.create_group(
        tenant.id, Group(display_name="g", members=[Member(value=i) for i in ids])
    )
    assert [m.value for m in client.list_members(tenant.id, g.meta.id, page_size=7)] == ids
    with pytest.raises(NotFound):
        list(client.list_members(tenant.id, str(uuid.uuid4())))


def test_group_filters(client: IdentityClient, tenant: Tenant) -> None:
    from .test_filters import cmp

    (uid,) = users(client, tenant, 1)
    a = client.create_group(
        tenant.id, Group(display_name="Admins", external_id="E1", members=[Member(value=uid)])
    )
    client.create_group(tenant.id, Group(display_name="Readers"))
    by_name = client.list_groups(tenant.id, filter=cmp("displayName", "eq", "admins"))
    assert [g.meta.id for g in by_name.groups] == [a.meta.id]
    by_member = client.list_groups(tenant.id, filter=cmp("members.value", "eq", uid))
    assert [g.meta.id for g in by_member.groups] == [a.meta.id]
    by_type = client.list_groups(tenant.id, filter=cmp("members.type", "eq", "User"))
    assert by_type.total_results == 1
    with_members = client.list_groups(tenant.id, include_members=True)
    assert [len(g.members) for g in with_members.groups] == [1, 0]
    with pytest.raises(InvalidArgument):
        client.list_groups(tenant.id, filter=cmp("userName", "eq", "x"))


@pytest.fixture
def statements(identity_service_db: object) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = identity_service_db.engine

    def record(conn: object, cursor: object, stmt: str, *args: object) -> None:
        # The health probe shares the engine; its statements are not the call's cost.
        if "alembic_version" not in stmt and stmt.strip() != "SELECT 1":
            seen.append(stmt)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_membership_change_cost_does_not_grow_with_group_size(
    client: IdentityClient, tenant: Tenant, statements: list[str]
) -> None:
    """Adding one member issues the same statements for a 3-member group as for a
    300-member one, none of which reads the whole member list."""
    small = users(client, tenant, 3, "s")
    big = users(client, tenant, 300, "b")
    extra = users(client, tenant, 2, "x")
    g_small = client.create_group(
        tenant.id, Group(display_name="small", members=[Member(value=i) for i in small])
    )
    g_big = client.create_group(
        tenant.id, Group(display_name="big", members=[Member(value=i) for i in big])
    )

    def cost(group_id: str, member: str) -> list[str]:
        statements.clear()
        client.update_group(tenant.id, group_id, add_members=[member])
        client.update_group(tenant.id, group_id, remove_members=[member])
        return list(statements)

    # The fewest of three tries: a background statement of the shared service (a change
    # stream's poll) can land in one measurement, never take one away.
    small_cost = min((cost(g_small.meta.id, extra[0]) for _ in range(3)), key=len)
    big_cost = min((cost(g_big.meta.id, extra[1]) for _ in range(3)), key=len)
    assert len(small_cost) == len(big_cost)
    for stmt in big_cost:
        # every read of group_members is restricted to the members being changed
        if "FROM group_members" in stmt and stmt.lstrip().upper().startswith("SELECT"):
            assert "member_id IN" in stmt or "member_id =" in stmt, stmt


def test_deleting_a_member_of_many_groups_costs_the_same_statements(
    client: IdentityClient, tenant: Tenant, statements: list[str], database_url: str
) -> None:
    from .test_events import read_events

    def cost(user_id: str) -> int:
        statements.clear()
        client.delete_user(tenant.id, user_id)
        return len(statements)

    # The fewest of three pairs: a background statement of the shared service (a change
    # stream's poll) can land in one measurement, never take one away.
    costs: dict[str, list[int]] = {"few": [], "many": []}
    for attempt in range(3):
        few, many = users(client, tenant, 2, f"d{attempt}-")
        for i in range(20):
            members = [Member(value=many)] + ([Member(value=few)] if i < 2 else [])
            client.create_group(tenant.id, Group(display_name=f"g{attempt}-{i}", members=members))
        costs["few"].append(cost(few))
        costs["many"].append(cost(many))
    assert min(costs["few"]) == min(costs["many"])
    removed = [
        e
        for e in read_events(database_url, tenant.id)
        if e.type == EventType.EVENT_TYPE_GROUP_MEMBER_REMOVED
    ]
    assert len(removed) == 3 * (2 + 20)
    assert all(g.member_count == 0 for g in client.list_groups(tenant.id, count=100).groups)
