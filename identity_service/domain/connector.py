"""Deleting a tenant's SCIM connector: its configuration goes, its data stays.

Big ACL's "Delete Connector" removes the connector configuration and mappings and
keeps the provisioned users and groups. Here that is one transaction that revokes
every live token, clears the policy's role rules, extension schemas and attribute
mappings, and deactivates the tenant. The users' existing role assignments are
kept as they are (the rules are not re-applied: nothing provisioned changes).
With `purge`, every group and user of the tenant is deleted too, each with its
ordinary event.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, policy_pb2, tenants_pb2, users_pb2

from ..context import RequestContext
from ..storage import events
from ..storage.models import GroupRow, TokenRow, UserRow, utcnow
from . import groups, policy, tenants, users

E = changes_pb2


def _cleared(old: policy_pb2.TenantPolicy) -> policy_pb2.TenantPolicy:
    """The policy without what the connector brought: rules, schemas, mappings."""
    new = policy_pb2.TenantPolicy()
    new.CopyFrom(old)
    for name in (
        "group_role_rules",
        "attribute_role",
        "default_role",
        "extension_schemas",
        "user_mappings",
        "group_mappings",
    ):
        new.ClearField(name)
    return new


def reset(
    session: Session, req: tenants_pb2.ResetConnectorRequest, ctx: RequestContext
) -> tenants_pb2.ResetConnectorResponse:
    tenant = tenants.resolve(session, req.tenant, lock=True)
    now = utcnow()
    evs: list[changes_pb2.ChangeEvent] = []
    live = session.execute(
        select(TokenRow).where(TokenRow.tenant_pk == tenant.pk, TokenRow.revoked.is_(None))
    ).scalars()
    revoked = 0
    for row in live:
        row.revoked = now
        revoked += 1
        evs.append(
            events.event(
                E.EVENT_TYPE_TOKEN_REVOKED,
                "Token",
                row.id,
                token=tenants.token_proto(row, tenant.id),
            )
        )
    changed: list[str] = []
    old = policy.load(session, tenant)
    new = _cleared(old)
    if new != old:
        policy.store(tenant, new)
        changed.append("policy")
    if tenant.active:
        tenant.active = False
        changed.append("active")
    if changed:
        tenant.last_modified = now
    session.flush()
    if changed:
        evs.append(
            events.event(
                E.EVENT_TYPE_TENANT_UPDATED,
                "Tenant",
                tenant.id,
                tenant=tenants.to_proto(tenant),
                changed_attributes=changed,
            )
        )
    events.emit(session, tenant, ctx, evs)
    groups_deleted = users_deleted = 0
    if req.purge:
        for gid in list(
            session.execute(select(GroupRow.id).where(GroupRow.tenant_pk == tenant.pk)).scalars()
        ):
            groups.remove(session, tenant, gid, 0, ctx)
            groups_deleted += 1
        for uid in list(
            session.execute(select(UserRow.id).where(UserRow.tenant_pk == tenant.pk)).scalars()
        ):
            users.remove(session, tenant, uid, 0, ctx, mode=users_pb2.DELETE_MODE_HARD)
            users_deleted += 1
    return tenants_pb2.ResetConnectorResponse(
        tenant=tenants.to_proto(tenant),
        tokens_revoked=revoked,
        users_deleted=users_deleted,
        groups_deleted=groups_deleted,
    )
