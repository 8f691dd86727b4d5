"""Groups and membership. Membership is rows: changing k members costs O(k)
queries and rows, whatever the group's size; member lists are paged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, groups_pb2, policy_pb2

from ..context import RequestContext
from ..errors import InvalidValue, NotFound, TooMany
from ..schema import GROUP_SCHEMA, GROUP_TYPE
from ..settings import Settings
from ..storage import events
from ..storage.db import Reader
from ..storage.filters import GROUPS
from ..storage.listing import lookup_page, page_of
from ..storage.models import GroupRow, MemberRow, TenantRow, UserRow, table, utcnow
from ..storage.prepared import Prepared
from . import patching, policy
from .convert import check_id, new_id, ts
from .policy_apply import resync_users
from .rows import check_version, chunks, leave_all_groups
from .validate import check_message

E = changes_pb2
M = groups_pb2
MAX_NAME = 512
#: Members one call may add or remove (larger changes: several calls).
MAX_MEMBER_CHANGE = 100_000

_ROW_COLUMNS = (
    GroupRow.pk,
    GroupRow.id,
    GroupRow.version,
    GroupRow.created,
    GroupRow.last_modified,
    GroupRow.display_name,
    GroupRow.external_id,
    GroupRow.member_count,
    GroupRow.doc,
)
_ROW_SELECT = select(*_ROW_COLUMNS)
_BY_ID_SELECT = _ROW_SELECT.where(
    GroupRow.tenant_pk == bindparam("t"), GroupRow.id == bindparam("id")
)
_BY_ID = Prepared(_BY_ID_SELECT)
_BY_ID_FOR_UPDATE = Prepared(_BY_ID_SELECT.with_for_update())


def _proto(row: Any, tenant_id: str) -> groups_pb2.Group:
    g = groups_pb2.Group(
        tenant_id=tenant_id,
        display_name=row.display_name,
        external_id=row.external_id or "",
        member_count=row.member_count,
    )
    g.meta.id = row.id
    g.meta.version = row.version
    g.meta.created.FromDatetime(row.created)
    g.meta.last_modified.FromDatetime(row.last_modified)
    if row.doc:
        g.extensions.update(row.doc)
    return g


def _row(session: Reader, tenant: TenantRow, group_id: str, *, lock: bool = False) -> Any:
    params = {"t": tenant.pk, "id": check_id(group_id, "group")}
    # Writes lock the row until commit (FOR UPDATE on PostgreSQL).
    row = (_BY_ID_FOR_UPDATE if lock else _BY_ID).first(session, params)
    if row is None:
        raise NotFound(f"no group with id {group_id!r} in this tenant", field="id")
    return row


def _display_name(value: str) -> str:
    if not value.strip():
        raise InvalidValue("displayName is required and must not be blank", field="displayName")
    if len(value) > MAX_NAME:
        raise InvalidValue(f"displayName is longer than {MAX_NAME} characters", field="displayName")
    return value


def _members_select() -> Any:
    """Member rows with their display name: (pk, member_id, member_type, display, group_pk)."""
    return (
        select(
            MemberRow.pk,
            MemberRow.member_id,
            MemberRow.member_type,
            func.coalesce(UserRow.display_name, UserRow.user_name, GroupRow.display_name),
            MemberRow.group_pk,
        )
        .outerjoin(UserRow, UserRow.id == MemberRow.member_id)
        .outerjoin(GroupRow, GroupRow.id == MemberRow.member_id)
        .order_by(MemberRow.pk)
    )


def _members_query(group_pk: int) -> Any:
    return _members_select().where(MemberRow.group_pk == group_pk)


def _member(row: Any) -> groups_pb2.Member:
    return groups_pb2.Member(
        value=row[1], type=groups_pb2.MemberType.ValueType(row[2]), display=row[3] or ""
    )


def get(
    session: Session,
    tenant: TenantRow,
    group_id: str,
    include_members: bool,
    settings: Settings,
    *,
    member_limit: int = 0,
) -> groups_pb2.Group:
    row = _row(session, tenant, group_id)
    if member_limit > 0 and row.member_count > member_limit:
        include_members = False  # the caller pages through them (ListMembers)
    if not include_members:
        return _without_members(session, tenant, row)
    g = _proto(row, tenant.id)
    g.members.extend(
        _member(m)
        for m in session.execute(_members_query(row.pk).limit(settings.max_inline_members))
    )
    _map(session, tenant, [g], with_members=True)
    return g


def get_without_members(reader: Reader, tenant: TenantRow, group_id: str) -> groups_pb2.Group:
    """The group without its members (prepared statements only: a quick read)."""
    return _without_members(reader, tenant, _row(reader, tenant, group_id))


def _without_members(reader: Reader, tenant: TenantRow, row: Any) -> groups_pb2.Group:
    g = _proto(row, tenant.id)
    _map(reader, tenant, [g], with_members=False)
    return g


def lookup_groups(
    reader: Reader, tenant: TenantRow, req: groups_pb2.ListGroupsRequest, settings: Settings
) -> groups_pb2.ListGroupsResponse:
    """The IdPs' `displayName eq "..."` without members (listing.idp_lookup; the
    servicer checked it is one): prepared statements only, a quick read."""
    page = lookup_page(
        reader,
        catalog=GROUPS,
        model=GroupRow,
        columns=_ROW_SELECT,
        tenant_pk=tenant.pk,
        f=req.filter,
        page=req.page,
        settings=settings,
    )
    out = [_proto(r, tenant.id) for r in page.rows]
    _map(reader, tenant, out, with_members=False)
    return groups_pb2.ListGroupsResponse(
        groups=out,
        total_results=page.total,
        start_index=page.start_index,
        revision=tenant.revision,
    )


def _map(
    reader: Reader, tenant: TenantRow, out: list[groups_pb2.Group], *, with_members: bool
) -> None:
    """The tenant's group mappings, computed on read. Member references are the
    group's members (validated when they were added), so no lookup is needed;
    without the members, list-of-reference fields are left out."""
    mappings = policy.load(reader, tenant).group_mappings if tenant.settings else ()
    if not mappings:
        return
    for g in out:
        doc = json_format.MessageToDict(g)
        exists = {m.value for m in g.members} | {g.meta.id}
        fields = policy.mapped_fields(mappings, doc, exists)
        for m in mappings:
            if m.kind == policy_pb2.MAPPING_KIND_LIST_OF_REFERENCES and not with_members:
                fields.pop(m.field, None)
        g.mapped.update(fields)


def list_groups(
    session: Session, tenant: TenantRow, req: groups_pb2.ListGroupsRequest, settings: Settings
) -> groups_pb2.ListGroupsResponse:
    page = page_of(
        session,
        catalog=GROUPS,
        model=GroupRow,
        columns=_ROW_SELECT,
        tenant_pk=tenant.pk,
        f=req.filter if req.HasField("filter") else None,
        sort=req.sort if req.HasField("sort") else None,
        page=req.page,
        settings=settings,
        revision=tenant.revision,
        count_all=tenant.group_count,
    )
    out = [_proto(r, tenant.id) for r in page.rows]
    if req.include_members and out:
        by_pk = {r.pk: g for r, g in zip(page.rows, out, strict=True)}
        for chunk in chunks(list(by_pk)):
            for m in session.execute(_members_select().where(MemberRow.group_pk.in_(chunk))):
                by_pk[m[4]].members.append(_member(m))
    _map(session, tenant, out, with_members=req.include_members)
    return groups_pb2.ListGroupsResponse(
        groups=out,
        total_results=page.total,
        start_index=page.start_index,
        next_cursor=page.next_cursor,
        revision=tenant.revision,
    )


def _resolve_members(
    session: Session, tenant: TenantRow, group_id: str, members: Sequence[groups_pb2.Member]
) -> tuple[dict[str, int], list[str]]:
    """member id -> MemberType for the requested members that are users or groups of
    this tenant (O(k) in batches), and the ids that are not: skipped, or refused
    (InvalidValue naming them) when the tenant's policy says `reject`."""
    wanted: dict[str, int] = {}
    unknown: list[str] = []
    for m in members:
        try:
            mid = check_id(m.value, "member")
        except NotFound:
            unknown.append(m.value[:80])  # never an id: no user or group has it
            continue
        if mid == group_id:
            raise InvalidValue("a group cannot be a member of itself", field="members")
        wanted[mid] = m.type
    if len(wanted) > MAX_MEMBER_CHANGE:
        raise TooMany(f"at most {MAX_MEMBER_CHANGE} members per call", field="members")
    found: dict[str, int] = {}
    ids = list(wanted)
    for chunk in chunks(ids):
        for (uid,) in session.execute(
            select(UserRow.id).where(UserRow.tenant_pk == tenant.pk, UserRow.id.in_(chunk))
        ):
            found[uid] = M.MEMBER_TYPE_USER
        for (gid,) in session.execute(
            select(GroupRow.id).where(GroupRow.tenant_pk == tenant.pk, GroupRow.id.in_(chunk))
        ):
            found[gid] = M.MEMBER_TYPE_GROUP
    unknown += [i for i in ids if i not in found]
    if (
        unknown
        and policy.load(session, tenant).unknown_members == policy_pb2.UNKNOWN_MEMBERS_REJECT
    ):
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InvalidValue(
            f"{len(unknown)} member(s) are not users or groups of this tenant: {shown}",
            field="members",
        )
    for mid, declared in wanted.items():
        if mid in found and declared and declared != found[mid]:
            kind = "group" if found[mid] == M.MEMBER_TYPE_GROUP else "user"
            raise InvalidValue(f"member {mid} is a {kind}, not the type given", field="members")
    # In the order asked for.
    return {mid: found[mid] for mid in wanted if mid in found}, unknown


def _add_members(
    session: Session, group_pk: int, resolved: dict[str, int]
) -> list[groups_pb2.Member]:
    ids = list(resolved)
    present: set[str] = set()
    for chunk in chunks(ids):
        present.update(
            session.execute(
                select(MemberRow.member_id).where(
                    MemberRow.group_pk == group_pk, MemberRow.member_id.in_(chunk)
                )
            ).scalars()
        )
    new = [i for i in ids if i not in present]
    if new:
        session.execute(
            insert(table(MemberRow)),
            [{"group_pk": group_pk, "member_id": i, "member_type": resolved[i]} for i in new],
        )
    return [
        groups_pb2.Member(value=i, type=groups_pb2.MemberType.ValueType(resolved[i])) for i in new
    ]


def _remove_members(session: Session, group_pk: int, ids: Sequence[str]) -> list[groups_pb2.Member]:
    removed: list[groups_pb2.Member] = []
    for chunk in chunks(list(dict.fromkeys(ids))):
        rows = list(
            session.execute(
                select(MemberRow.pk, MemberRow.member_id, MemberRow.member_type).where(
                    MemberRow.group_pk == group_pk, MemberRow.member_id.in_(chunk)
                )
            )
        )
        if rows:
            session.execute(delete(MemberRow).where(MemberRow.pk.in_([r[0] for r in rows])))
            removed.extend(
                groups_pb2.Member(value=r[1], type=groups_pb2.MemberType.ValueType(r[2]))
                for r in rows
            )
    return removed


def _clear_members(session: Session, group_pk: int) -> list[groups_pb2.Member]:
    rows = list(
        session.execute(
            select(MemberRow.member_id, MemberRow.member_type).where(MemberRow.group_pk == group_pk)
        )
    )
    session.execute(delete(MemberRow).where(MemberRow.group_pk == group_pk))
    return [groups_pb2.Member(value=r[0], type=groups_pb2.MemberType.ValueType(r[1])) for r in rows]


def _membership_events(
    group_id: str, added: list[groups_pb2.Member], removed: list[groups_pb2.Member]
) -> list[changes_pb2.ChangeEvent]:
    out = []
    if removed:
        out.append(
            events.event(
                E.EVENT_TYPE_GROUP_MEMBER_REMOVED,
                "Group",
                group_id,
                membership=changes_pb2.MembershipChange(group_id=group_id, members=removed),
                changed_attributes=["members"],
            )
        )
    if added:
        out.append(
            events.event(
                E.EVENT_TYPE_GROUP_MEMBER_ADDED,
                "Group",
                group_id,
                membership=changes_pb2.MembershipChange(group_id=group_id, members=added),
                changed_attributes=["members"],
            )
        )
    return out


def _doc(extensions: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(extensions) if extensions.fields else {}


def create(
    session: Session, tenant: TenantRow, group: groups_pb2.Group, ctx: RequestContext
) -> groups_pb2.Group:
    check_message(group)
    name = _display_name(group.display_name)
    if len(group.external_id) > MAX_NAME:
        raise InvalidValue(f"externalId is longer than {MAX_NAME} characters", field="externalId")
    gid = new_id()
    resolved, skipped = _resolve_members(session, tenant, gid, group.members)
    now = utcnow()
    pk = session.execute(
        insert(table(GroupRow))
        .values(
            id=gid,
            tenant_pk=tenant.pk,
            version=1,
            created=now,
            last_modified=now,
            display_name=name,
            display_name_key=name.lower(),
            external_id=group.external_id or None,
            member_count=len(resolved),
            doc=_doc(group.extensions),
        )
        .returning(GroupRow.pk)
    ).scalar_one()
    added = _add_members(session, pk, resolved)
    result = _proto(_row(session, tenant, gid), tenant.id)
    _map(session, tenant, [result], with_members=False)
    evs = [events.event(E.EVENT_TYPE_GROUP_CREATED, "Group", gid, group=result)]
    evs += _membership_events(gid, added, [])
    events.emit(session, tenant, ctx, evs)
    _resync(session, tenant, ctx, _user_ids(added))
    result.skipped_members.extend(skipped)
    return result


def update_group(
    session: Session, tenant: TenantRow, req: groups_pb2.UpdateGroupRequest, ctx: RequestContext
) -> groups_pb2.Group:
    check_message(req)
    row = _row(session, tenant, req.id, lock=True)
    check_version(row, req.expected_version)
    return _update(session, tenant, row, req, ctx)


def patch(
    session: Session,
    tenant: TenantRow,
    req: groups_pb2.PatchGroupRequest,
    ctx: RequestContext,
    settings: Settings,
) -> groups_pb2.Group:
    """RFC 7644 §3.5.2 applied under the group's row lock: attribute operations on the
    group's document, member operations as O(change) adds and removes (the member
    list is never read)."""
    check_message(req)
    ops = patching.operations(req.operations)
    row = _row(session, tenant, req.id, lock=True)
    check_version(row, req.expected_version)
    before = patching.group_document(_proto(row, tenant.id))
    plan = patching.plan_group(GROUP_TYPE, before, ops)
    after = plan.doc
    upd = groups_pb2.UpdateGroupRequest(
        tenant_id=tenant.id,
        id=row.id,
        clear_members=plan.clear_members,
        add_members=list(plan.add_members.values()),
        remove_members=sorted(plan.remove_members),
    )
    if after.get("displayName") != before.get("displayName"):
        # An absent displayName is "", which _update refuses (it is required).
        upd.display_name = after.get("displayName") or ""
    if after.get("externalId") != before.get("externalId"):
        upd.external_id = after.get("externalId") or ""
    ext_after = patching.custom_extensions(after, GROUP_SCHEMA, ())
    if ext_after != patching.custom_extensions(before, GROUP_SCHEMA, ()):
        upd.extensions.SetInParent()
        upd.extensions.update(ext_after)
    check_message(upd)
    result = _update(session, tenant, row, upd, ctx)
    if not req.include_members:
        return result
    # RFC 7644 §3.5.2: 200 with the entire resource, members as this transaction
    # leaves them (up to member_limit: a larger group is answered without them).
    whole = get(session, tenant, row.id, True, settings, member_limit=req.member_limit)
    whole.skipped_members.extend(result.skipped_members)
    return whole


def _update(
    session: Session,
    tenant: TenantRow,
    row: Any,
    req: groups_pb2.UpdateGroupRequest,
    ctx: RequestContext,
) -> groups_pb2.Group:
    """Attribute and membership changes of the locked group `row`."""
    values: dict[str, Any] = {}
    changed: list[str] = []
    if req.HasField("display_name") and req.display_name != row.display_name:
        name = _display_name(req.display_name)
        values.update(display_name=name, display_name_key=name.lower())
        changed.append("displayName")
    if req.HasField("external_id") and (req.external_id or None) != row.external_id:
        if len(req.external_id) > MAX_NAME:
            raise InvalidValue(
                f"externalId is longer than {MAX_NAME} characters", field="externalId"
            )
        values["external_id"] = req.external_id or None
        changed.append("externalId")
    if req.HasField("extensions") and _doc(req.extensions) != (row.doc or {}):
        values["doc"] = _doc(req.extensions)
        changed.extend(req.extensions.fields.keys())
    resolved, skipped = _resolve_members(session, tenant, row.id, req.add_members)
    removed: list[groups_pb2.Member] = []
    if req.clear_members:
        removed = _clear_members(session, row.pk)
    elif req.remove_members:
        removed = _remove_members(session, row.pk, list(req.remove_members))
    added = _add_members(session, row.pk, resolved)
    if req.clear_members:
        # A replace that keeps a member is no change for that member.
        kept = {m.value for m in added} & {m.value for m in removed}
        added = [m for m in added if m.value not in kept]
        removed = [m for m in removed if m.value not in kept]
    delta = len(added) - len(removed)
    if not values and not added and not removed:
        unchanged = _proto(row, tenant.id)
        unchanged.skipped_members.extend(skipped)
        return unchanged
    values.update(
        version=row.version + 1,
        last_modified=utcnow(),
        member_count=GroupRow.member_count + delta,
    )
    session.execute(update(table(GroupRow)).where(GroupRow.pk == row.pk).values(**values))
    result = _proto(_row(session, tenant, row.id), tenant.id)
    _map(session, tenant, [result], with_members=False)
    evs = []
    if changed:
        evs.append(
            events.event(
                E.EVENT_TYPE_GROUP_UPDATED,
                "Group",
                row.id,
                group=result,
                changed_attributes=changed,
            )
        )
    evs += _membership_events(row.id, added, removed)
    events.emit(session, tenant, ctx, evs)
    affected = _user_ids(added) | _user_ids(removed)
    if "displayName" in changed:
        # A rename can change the role the name carries: every member is concerned.
        affected |= _all_user_members(session, row.pk)
    _resync(session, tenant, ctx, affected)
    result.skipped_members.extend(skipped)
    return result


def replace(
    session: Session,
    tenant: TenantRow,
    group: groups_pb2.Group,
    expected_version: int,
    ctx: RequestContext,
) -> groups_pb2.Group:
    req = groups_pb2.UpdateGroupRequest(
        tenant_id=tenant.id,
        id=group.meta.id,
        expected_version=expected_version,
        display_name=group.display_name,
        external_id=group.external_id,
        extensions=group.extensions,
        clear_members=True,
        add_members=group.members,
    )
    return update_group(session, tenant, req, ctx)


def remove(
    session: Session, tenant: TenantRow, group_id: str, expected_version: int, ctx: RequestContext
) -> None:
    row = _row(session, tenant, group_id, lock=True)
    check_version(row, expected_version)
    before = _proto(row, tenant.id)
    # Nested membership: the group leaves the groups it belongs to.
    evs = leave_all_groups(session, row.id, M.MEMBER_TYPE_GROUP)
    members = _all_user_members(session, row.pk)
    session.execute(delete(GroupRow).where(GroupRow.pk == row.pk))
    evs.append(events.event(E.EVENT_TYPE_GROUP_DELETED, "Group", row.id, group=before))
    events.emit(session, tenant, ctx, evs)
    _resync(session, tenant, ctx, members)


def _user_ids(members: Iterable[groups_pb2.Member]) -> set[str]:
    return {m.value for m in members if m.type == M.MEMBER_TYPE_USER}


def _all_user_members(session: Session, group_pk: int) -> set[str]:
    return set(
        session.execute(
            select(MemberRow.member_id).where(
                MemberRow.group_pk == group_pk, MemberRow.member_type == M.MEMBER_TYPE_USER
            )
        ).scalars()
    )


def _resync(session: Session, tenant: TenantRow, ctx: RequestContext, user_ids: set[str]) -> None:
    """Roles from group names follow membership (only when the tenant has such rules)."""
    if not user_ids or not tenant.settings:
        return
    pol = policy.load(session, tenant)
    if pol.group_role_rules:
        resync_users(session, tenant, pol, user_ids, ctx)


def list_members(
    session: Session, tenant: TenantRow, req: groups_pb2.ListMembersRequest
) -> groups_pb2.ListMembersResponse:
    row = _row(session, tenant, req.group_id)
    size = min(max(req.page_size or 1000, 1), 10_000)
    stmt = _members_query(row.pk).limit(size + 1)
    if req.page_token:
        try:
            after = int(req.page_token)
        except ValueError:
            raise InvalidValue(
                "page_token is not one this server issued", field="page_token"
            ) from None
        stmt = stmt.where(MemberRow.pk > after)
    rows = list(session.execute(stmt))
    more = len(rows) > size
    rows = rows[:size]
    return groups_pb2.ListMembersResponse(
        members=[_member(r) for r in rows],
        next_page_token=str(rows[-1][0]) if more else "",
        total_members=row.member_count,
    )


__all__ = [
    "create",
    "get",
    "list_groups",
    "list_members",
    "remove",
    "replace",
    "ts",
    "update_group",
]
