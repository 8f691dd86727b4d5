"""Applying the role rules to users: after a policy change (every user the rules
concern) and after membership changes (the members that changed).

A policy change's preview is the change itself, rolled back: `apply_policy` runs as
SetPolicy runs it and `effects` reads back the events it wrote, so the preview can
never disagree with what saving does. Its digest covers the stored policy, the new
one and every effect; SetPolicy given that digest applies only if it still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, policy_pb2, users_pb2

from ..context import RequestContext
from ..errors import VersionMismatch
from ..storage import events
from ..storage.models import AssignmentRow, EventRow, TenantRow, UserRow
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


#: Effects a preview answers unless asked otherwise, and at most.
PREVIEW_EFFECTS = 1000
MAX_PREVIEW_EFFECTS = 10000


def _effects(session: Session, tenant: TenantRow, after: int) -> list[policy_pb2.PolicyEffect]:
    """Each user's role and state changes among the events written after revision
    `after` in this transaction, by userName then id."""
    found: dict[str, policy_pb2.PolicyEffect] = {}
    payloads = session.execute(
        select(EventRow.payload)
        .where(EventRow.tenant_pk == tenant.pk, EventRow.revision > after)
        .order_by(EventRow.revision)
    ).scalars()
    for payload in payloads:
        ev = changes_pb2.ChangeEvent.FromString(payload)
        if ev.resource_type != "User":
            continue
        effect = found.setdefault(ev.resource_id, policy_pb2.PolicyEffect(user_id=ev.resource_id))
        if ev.type == E.EVENT_TYPE_ROLE_ASSIGNED:
            effect.roles_gained.append(ev.assignment.role)
        elif ev.type == E.EVENT_TYPE_ROLE_REVOKED:
            effect.roles_lost.append(ev.assignment.role)
        elif ev.type == E.EVENT_TYPE_USER_DEACTIVATED:
            effect.deactivated = True
        elif ev.type == E.EVENT_TYPE_USER_DELETED:
            effect.deleted = True
            effect.user_name = ev.user.user_name
    missing = [uid for uid, e in found.items() if not e.user_name]
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        for uid, name in session.execute(
            select(UserRow.id, UserRow.user_name).where(
                UserRow.tenant_pk == tenant.pk, UserRow.id.in_(chunk)
            )
        ).all():
            found[uid].user_name = name
    out = [
        e for e in found.values() if e.roles_gained or e.roles_lost or e.deactivated or e.deleted
    ]
    for e in out:
        e.roles_gained.sort()
        e.roles_lost.sort()
    out.sort(key=lambda e: (e.user_name, e.user_id))
    return out


def _digest(
    old: policy_pb2.TenantPolicy,
    new: policy_pb2.TenantPolicy,
    effects: list[policy_pb2.PolicyEffect],
) -> str:
    h = hashlib.sha256(b"identity policy change v1\0")
    for message in (old, new, *effects):
        data = message.SerializeToString(deterministic=True)
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _change(
    session: Session, tenant: TenantRow, new: policy_pb2.TenantPolicy, ctx: RequestContext
) -> tuple[int, policy_pb2.TenantPolicy, str, list[policy_pb2.PolicyEffect]]:
    """Applies `new` (in the caller's transaction) and says what it did: the revision
    it started from, the policy it replaced, the change's digest and its effects."""
    # The tenant's row lock first, so no other write lands between here and the
    # events read back (PostgreSQL; SQLite has one writer at a time).
    start = session.execute(
        select(TenantRow.revision).where(TenantRow.pk == tenant.pk).with_for_update()
    ).scalar_one()
    old = policy_pb2.TenantPolicy()
    old.CopyFrom(policy.load(session, tenant))
    apply_policy(session, tenant, new, ctx)
    effects = _effects(session, tenant, start)
    return start, old, _digest(old, new, effects), effects


def preview_policy(
    session: Session,
    tenant: TenantRow,
    request: policy_pb2.PreviewPolicyRequest,
    ctx: RequestContext,
) -> policy_pb2.PolicyPreview:
    """What SetPolicy would do now. The caller rolls the transaction back."""
    start, old, digest, effects = _change(session, tenant, request.policy, ctx)
    limit = request.max_effects if request.max_effects > 0 else PREVIEW_EFFECTS
    limit = min(limit, MAX_PREVIEW_EFFECTS)
    return policy_pb2.PolicyPreview(
        effects=effects[:limit],
        effect_count=len(effects),
        digest=digest,
        revision=start,
        current=old,
    )


def set_policy(
    session: Session,
    tenant: TenantRow,
    request: policy_pb2.SetPolicyRequest,
    ctx: RequestContext,
) -> policy_pb2.TenantPolicy:
    if not request.expected_digest:
        return apply_policy(session, tenant, request.policy, ctx)
    _, _, digest, _ = _change(session, tenant, request.policy, ctx)
    if digest != request.expected_digest:
        # Raised inside the transaction: everything above rolls back.
        raise VersionMismatch(
            "the tenant changed since this policy was previewed (its policy, or the users "
            "and groups its rules read): nothing was saved; preview it again",
            field="expected_digest",
        )
    return request.policy
