"""Applying the role rules to users: after a policy change (every user the rules
concern) and after membership changes (the members that changed)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, policy_pb2, users_pb2

from ..context import RequestContext
from ..storage import events
from ..storage.models import AssignmentRow, TenantRow, UserRow
from . import policy, users

E = changes_pb2


def resync_users(
    session: Session,
    tenant: TenantRow,
    pol: policy_pb2.TenantPolicy,
    user_ids: Iterable[str],
    ctx: RequestContext,
) -> None:
    """Brings each user's SCIM-managed roles in line with the rules, then applies the
    last-role policy to those who lost their last one. O(users given)."""
    ids = sorted(set(user_ids))
    if not ids:
        return
    lost: list[str] = []
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        rows = session.execute(
            select(UserRow.pk, UserRow.id, UserRow.body).where(
                UserRow.tenant_pk == tenant.pk, UserRow.id.in_(chunk)
            )
        ).all()
        evs: list[changes_pb2.ChangeEvent] = []
        for pk, uid, body in rows:
            user = users_pb2.User.FromString(body)
            desired = policy.desired_roles(session, tenant, pol, uid, user)
            role_events, lost_last = policy.sync_roles(session, tenant, pk, uid, desired)
            evs += role_events
            if lost_last:
                lost.append(uid)
        events.emit(session, tenant, ctx, evs)
    for uid in lost:
        users.apply_last_role_action(session, tenant, pol, uid, ctx)


def apply_policy(
    session: Session, tenant: TenantRow, new: policy_pb2.TenantPolicy, ctx: RequestContext
) -> policy_pb2.TenantPolicy:
    policy.validate(new)
    old = policy.load(session, tenant)
    policy.check_compatible(old, new)
    policy.check_default_role(session, tenant, new)
    policy.store(tenant, new)
    session.flush()
    events.emit(
        session,
        tenant,
        ctx,
        [
            events.event(
                E.EVENT_TYPE_TENANT_UPDATED, "Tenant", tenant.id, changed_attributes=["policy"]
            )
        ],
    )
    if policy.role_rules_differ(old, new):
        # Everyone a rule may now concern, and everyone holding a SCIM-managed role.
        concerned = (
            set(session.execute(select(UserRow.id).where(UserRow.tenant_pk == tenant.pk)).scalars())
            if policy.has_role_rules(new)
            else set(
                session.execute(
                    select(UserRow.id)
                    .join(AssignmentRow, AssignmentRow.user_pk == UserRow.pk)
                    .where(
                        AssignmentRow.tenant_pk == tenant.pk, AssignmentRow.source == policy.SCIM
                    )
                ).scalars()
            )
        )
        resync_users(session, tenant, new, concerned, ctx)
    return new
