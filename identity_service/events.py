"""The event log (transactional outbox).

`emit` runs inside the writing transaction: it bumps the tenant's revision
counter with a row-locking UPDATE and stores the events stamped with the new
revisions. Because the lock is held until commit, revisions are gapless and
their commit order is their order (docs/architecture.md, "Event log").
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from sqlalchemy import insert, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from identity.v1 import changes_pb2

from .context import RequestContext
from .models import EventRow, TenantRow, table, utcnow

E = changes_pb2

#: The one table of event names: `resource.action`.
EVENT_NAMES: dict[int, str] = {
    E.EVENT_TYPE_USER_CREATED: "user.created",
    E.EVENT_TYPE_USER_UPDATED: "user.updated",
    E.EVENT_TYPE_USER_DEACTIVATED: "user.deactivated",
    E.EVENT_TYPE_USER_REACTIVATED: "user.reactivated",
    E.EVENT_TYPE_USER_DELETED: "user.deleted",
    E.EVENT_TYPE_GROUP_CREATED: "group.created",
    E.EVENT_TYPE_GROUP_UPDATED: "group.updated",
    E.EVENT_TYPE_GROUP_DELETED: "group.deleted",
    E.EVENT_TYPE_GROUP_MEMBER_ADDED: "group.member_added",
    E.EVENT_TYPE_GROUP_MEMBER_REMOVED: "group.member_removed",
    E.EVENT_TYPE_ROLE_ASSIGNED: "role.assigned",
    E.EVENT_TYPE_ROLE_REVOKED: "role.revoked",
    E.EVENT_TYPE_ROLE_CREATED: "role.created",
    E.EVENT_TYPE_ROLE_DELETED: "role.deleted",
    E.EVENT_TYPE_TENANT_CREATED: "tenant.created",
    E.EVENT_TYPE_TENANT_UPDATED: "tenant.updated",
    E.EVENT_TYPE_TOKEN_ISSUED: "token.issued",
    E.EVENT_TYPE_TOKEN_REVOKED: "token.revoked",
}

#: PostgreSQL channel that carries "<tenant_id>:<revision>" on every commit with events.
NOTIFY_CHANNEL = "identity_events"
#: Session.info key: {tenant_id: last revision written} for after-commit wake-ups.
WRITTEN = "identity_written_revisions"


def emit(
    session: Session,
    tenant: TenantRow,
    ctx: RequestContext,
    events: Sequence[changes_pb2.ChangeEvent],
) -> int:
    """Stamps `events` with the tenant's next revisions and stores them. Returns
    the last revision written. Call once per transaction, after the state change."""
    if not events:
        return tenant.revision
    n = len(events)
    last = session.execute(
        update(table(TenantRow))
        .where(TenantRow.pk == tenant.pk)
        .values(revision=TenantRow.revision + n)
        .returning(TenantRow.revision)
    ).scalar_one()
    first = last - n + 1
    now = utcnow()
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(now)
    actor = ctx.actor()
    rows = []
    for offset, ev in enumerate(events):
        ev.revision = first + offset
        ev.tenant_id = tenant.id
        ev.time.CopyFrom(ts)
        ev.actor.CopyFrom(actor)
        ev.request_id = ctx.request_id
        rows.append(
            {
                "tenant_pk": tenant.pk,
                "revision": ev.revision,
                "type": ev.type,
                "resource_type": ev.resource_type,
                "time": now,
                "payload": ev.SerializeToString(),
            }
        )
    session.execute(insert(table(EventRow)), rows)
    session.info.setdefault(WRITTEN, {})[tenant.id] = last
    if session.get_bind().dialect.name == "postgresql":
        # Delivered to listeners on commit, never for a rolled-back transaction.
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": f"{tenant.id}:{last}"},
        )
    if "_sa_instance_state" in tenant.__dict__:
        set_committed_value(tenant, "revision", last)
    else:  # a detached snapshot (models.detached)
        tenant.__dict__["revision"] = last
    return last


def event(
    type_: int, resource_type: str, resource_id: str, **fields: object
) -> changes_pb2.ChangeEvent:
    """A ChangeEvent with its resource fields; emit() fills revision, time, actor."""
    return changes_pb2.ChangeEvent(
        type=type_,  # type: ignore[arg-type]
        resource_type=resource_type,
        resource_id=resource_id,
        **fields,  # type: ignore[arg-type]
    )
