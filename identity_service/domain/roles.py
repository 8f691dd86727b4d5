"""Roles defined per tenant, and their assignment to users (with a source)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, roles_pb2, users_pb2

from ..context import RequestContext
from ..errors import Conflict, InvalidValue, ManagedElsewhere, NotFound
from ..storage import events
from ..storage.models import AssignmentRow, RoleRow, TenantRow, UserRow, utcnow
from . import policy
from .convert import check_id, ts

E = changes_pb2
SOURCES = {users_pb2.ROLE_SOURCE_SCIM, users_pb2.ROLE_SOURCE_LOCAL}


def _role_proto(row: RoleRow, tenant_id: str) -> roles_pb2.Role:
    return roles_pb2.Role(
        tenant_id=tenant_id, name=row.name, description=row.description, created=ts(row.created)
    )


def _role(session: Session, tenant: TenantRow, name: str) -> RoleRow:
    row = session.execute(
        select(RoleRow).where(RoleRow.tenant_pk == tenant.pk, RoleRow.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"tenant has no role named {name!r}", field="role")
    return row


def _user_pk(session: Session, tenant: TenantRow, user_id: str) -> int:
    pk = session.execute(
        select(UserRow.pk).where(
            UserRow.tenant_pk == tenant.pk, UserRow.id == check_id(user_id, "user")
        )
    ).scalar_one_or_none()
    if pk is None:
        raise NotFound(f"no user with id {user_id!r} in this tenant", field="user_id")
    return pk


def _source(source: int) -> users_pb2.RoleSource.ValueType:
    if source == users_pb2.ROLE_SOURCE_UNSPECIFIED:
        return users_pb2.ROLE_SOURCE_LOCAL
    if source not in SOURCES:
        raise InvalidValue("source must be ROLE_SOURCE_SCIM or ROLE_SOURCE_LOCAL", field="source")
    return users_pb2.RoleSource.ValueType(source)


def create_role(
    session: Session, tenant: TenantRow, name: str, description: str, ctx: RequestContext
) -> roles_pb2.Role:
    name = name.strip()
    if "\x00" in name or "\x00" in description:
        raise InvalidValue("role name and description must not contain NUL", field="name")
    if not name or len(name) > 256:
        raise InvalidValue("role name must be 1-256 characters", field="name")
    if session.execute(
        select(RoleRow.pk).where(RoleRow.tenant_pk == tenant.pk, RoleRow.name == name)
    ).first():
        raise Conflict(f"role {name!r} already exists", field="name")
    row = RoleRow(tenant_pk=tenant.pk, name=name, description=description[:1024], created=utcnow())
    session.add(row)
    session.flush()
    role = _role_proto(row, tenant.id)
    events.emit(
        session, tenant, ctx, [events.event(E.EVENT_TYPE_ROLE_CREATED, "Role", name, role=role)]
    )
    return role


def list_roles(session: Session, tenant: TenantRow) -> roles_pb2.ListRolesResponse:
    rows = session.execute(
        select(RoleRow).where(RoleRow.tenant_pk == tenant.pk).order_by(RoleRow.name)
    ).scalars()
    return roles_pb2.ListRolesResponse(roles=[_role_proto(r, tenant.id) for r in rows])


def delete_role(session: Session, tenant: TenantRow, name: str, ctx: RequestContext) -> None:
    row = _role(session, tenant, name)
    evs = []
    for user_id, source in session.execute(
        select(UserRow.id, AssignmentRow.source)
        .join(UserRow, UserRow.pk == AssignmentRow.user_pk)
        .where(AssignmentRow.role_pk == row.pk)
    ):
        a = roles_pb2.Assignment(
            user_id=user_id, role=name, source=users_pb2.RoleSource.ValueType(source)
        )
        evs.append(events.event(E.EVENT_TYPE_ROLE_REVOKED, "User", user_id, assignment=a))
    session.execute(delete(AssignmentRow).where(AssignmentRow.role_pk == row.pk))
    session.delete(row)
    session.flush()
    evs.append(
        events.event(E.EVENT_TYPE_ROLE_DELETED, "Role", name, role=_role_proto(row, tenant.id))
    )
    events.emit(session, tenant, ctx, evs)


def assign(
    session: Session, tenant: TenantRow, req: roles_pb2.AssignRoleRequest, ctx: RequestContext
) -> roles_pb2.Assignment:
    source = _source(req.source)
    role = _role(session, tenant, req.role)
    user_pk = _user_pk(session, tenant, req.user_id)
    existing = session.execute(
        select(AssignmentRow).where(
            AssignmentRow.user_pk == user_pk,
            AssignmentRow.role_pk == role.pk,
            AssignmentRow.source == source,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return roles_pb2.Assignment(
            user_id=req.user_id,
            role=role.name,
            source=source,
            created=ts(existing.created),
        )
    row = AssignmentRow(
        tenant_pk=tenant.pk, user_pk=user_pk, role_pk=role.pk, source=source, created=utcnow()
    )
    session.add(row)
    session.flush()
    a = roles_pb2.Assignment(
        user_id=req.user_id.lower(),
        role=role.name,
        source=source,
        created=ts(row.created),
    )
    events.emit(
        session,
        tenant,
        ctx,
        [events.event(E.EVENT_TYPE_ROLE_ASSIGNED, "User", a.user_id, assignment=a)],
    )
    return a


def _held_from_scim(session: Session, user_pk: int, role_pk: int) -> bool:
    return (
        session.execute(
            select(AssignmentRow.pk).where(
                AssignmentRow.user_pk == user_pk,
                AssignmentRow.role_pk == role_pk,
                AssignmentRow.source == users_pb2.ROLE_SOURCE_SCIM,
            )
        ).first()
        is not None
    )


def revoke(
    session: Session, tenant: TenantRow, req: roles_pb2.RevokeRoleRequest, ctx: RequestContext
) -> roles_pb2.Assignment:
    source = _source(req.source)
    role = _role(session, tenant, req.role)
    user_pk = _user_pk(session, tenant, req.user_id)
    row = session.execute(
        select(AssignmentRow).where(
            AssignmentRow.user_pk == user_pk,
            AssignmentRow.role_pk == role.pk,
            AssignmentRow.source == source,
        )
    ).scalar_one_or_none()
    if row is None:
        if source == users_pb2.ROLE_SOURCE_LOCAL and _held_from_scim(session, user_pk, role.pk):
            raise ManagedElsewhere(
                f"role {role.name!r} is SCIM-managed for this user: the tenant's identity "
                "provider grants it (a group or the role attribute, by the tenant's policy), "
                "so revoke it there; only local assignments can be revoked here",
                field="role",
            )
        raise NotFound(f"user does not hold role {req.role!r} from that source", field="role")
    a = roles_pb2.Assignment(
        user_id=req.user_id.lower(),
        role=role.name,
        source=source,
        created=ts(row.created),
    )
    session.delete(row)
    session.flush()
    events.emit(
        session,
        tenant,
        ctx,
        [events.event(E.EVENT_TYPE_ROLE_REVOKED, "User", a.user_id, assignment=a)],
    )
    return a


def list_assignments(
    session: Session, tenant: TenantRow, req: roles_pb2.ListAssignmentsRequest
) -> roles_pb2.ListAssignmentsResponse:
    if req.include_grants and not req.user_id:
        raise InvalidValue("include_grants needs a user_id", field="include_grants")
    stmt = (
        select(UserRow.id, RoleRow.name, AssignmentRow.source, AssignmentRow.created)
        .join(UserRow, UserRow.pk == AssignmentRow.user_pk)
        .join(RoleRow, RoleRow.pk == AssignmentRow.role_pk)
        .where(AssignmentRow.tenant_pk == tenant.pk)
        .order_by(UserRow.pk, RoleRow.name)
    )
    if req.user_id:
        stmt = stmt.where(UserRow.id == check_id(req.user_id, "user"))
    if req.role:
        stmt = stmt.where(RoleRow.name == req.role)
    out = roles_pb2.ListAssignmentsResponse(
        assignments=[
            roles_pb2.Assignment(
                user_id=u, role=n, source=users_pb2.RoleSource.ValueType(s), created=ts(c)
            )
            for u, n, s, c in session.execute(stmt)
        ]
    )
    if req.include_grants:
        grants = _grants(session, tenant, check_id(req.user_id, "user"))
        for a in out.assignments:
            if a.source == users_pb2.ROLE_SOURCE_SCIM:
                a.grants.extend(grants.get(a.role, []))
    return out


def _grants(
    session: Session, tenant: TenantRow, user_id: str
) -> dict[str, list[roles_pb2.RoleGrant]]:
    """What grants each SCIM-managed role the user holds: the policy's own rules,
    applied as a sync applies them (policy.role_grants), to the user as stored."""
    body = session.execute(
        select(UserRow.body).where(UserRow.tenant_pk == tenant.pk, UserRow.id == user_id)
    ).scalar_one_or_none()
    if body is None:
        raise NotFound(f"no user with id {user_id!r} in this tenant", field="user_id")
    pol = policy.load(session, tenant)
    user = users_pb2.User.FromString(body)
    return policy.role_grants(session, tenant, pol, user_id, user)
