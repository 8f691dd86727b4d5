"""The event log (transactional outbox).

`emit` runs inside the writing transaction: it bumps the tenant's revision
counter with a row-locking UPDATE and stores the events stamped with the new
revisions. Because the lock is held until commit, revisions are gapless and
their commit order is their order (docs/architecture.md, "Event log").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf import timestamp_pb2
from sqlalchemy import bindparam, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from scim_identity_api.v1 import changes_pb2

from ..context import RequestContext
from .db import WRITTEN
from .models import EventRow, TenantRow, table, utcnow
from .prepared import Prepared, PreparedInsert

E = changes_pb2

# Built once, values as parameters, and run on the DBAPI cursor (storage.prepared):
# every write runs them, and SQLAlchemy's execute costs more than either statement.
_tenants = table(TenantRow)
_BUMP_REVISION = Prepared(
    update(_tenants)
    .where(_tenants.c.pk == bindparam("tenant"))
    .values(
        revision=_tenants.c.revision + bindparam("n"),
        user_count=_tenants.c.user_count + bindparam("users"),
        group_count=_tenants.c.group_count + bindparam("groups"),
    )
    .returning(_tenants.c.revision)
)
_EVENT_COLUMNS = ("tenant_pk", "revision", "type", "resource_type", "time", "payload")
_INSERT_EVENTS = PreparedInsert(table(EventRow), _EVENT_COLUMNS)
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")

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


#: The events that create or delete a user or group: every such write emits one, in
#: its transaction, so the tenant's counts move with them.
_COUNTED_USERS = {E.EVENT_TYPE_USER_CREATED: 1, E.EVENT_TYPE_USER_DELETED: -1}
_COUNTED_GROUPS = {E.EVENT_TYPE_GROUP_CREATED: 1, E.EVENT_TYPE_GROUP_DELETED: -1}


def emit(
    session: Session,
    tenant: TenantRow,
    ctx: RequestContext,
    events: Sequence[changes_pb2.ChangeEvent],
    *,
    complete: Callable[[], None] | None = None,
) -> int:
    """Stamps `events` with the tenant's next revisions and stores them. Returns
    the last revision written. Call once per transaction, after the state change.
    `complete`: fills in the events' resources once the revisions are taken, and with
    them the tenant's row lock (PostgreSQL), which every writer of the tenant takes
    here: a resource read then has every change of the revisions before its event's,
    and none of the ones after (read earlier, another writer's change committed in
    between would be missing from it, though its own event came first)."""
    if not events:
        return tenant.revision
    n = len(events)
    users = sum(_COUNTED_USERS.get(ev.type, 0) for ev in events)
    groups = sum(_COUNTED_GROUPS.get(ev.type, 0) for ev in events)
    (bumped,) = _BUMP_REVISION.run(
        session, {"tenant": tenant.pk, "n": n, "users": users, "groups": groups}
    )
    last: int = bumped.revision
    first = last - n + 1
    if complete is not None:
        complete()
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
            (tenant.pk, ev.revision, ev.type, ev.resource_type, now, ev.SerializeToString())
        )
    _INSERT_EVENTS.run(session, rows)
    session.info.setdefault(WRITTEN, {})[tenant.id] = last
    if session.get_bind().dialect.name == "postgresql":
        # Delivered to listeners on commit, never for a rolled-back transaction.
        session.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": f"{tenant.id}:{last}"})
    if "_sa_instance_state" in tenant.__dict__:
        set_committed_value(tenant, "revision", last)
        if users:
            set_committed_value(tenant, "user_count", tenant.user_count + users)
        if groups:
            set_committed_value(tenant, "group_count", tenant.group_count + groups)
    else:  # a detached snapshot (models.detached)
        tenant.__dict__["revision"] = last
        tenant.__dict__["user_count"] = tenant.user_count + users
        tenant.__dict__["group_count"] = tenant.group_count + groups
    return last


def event(
    type_: int, resource_type: str, resource_id: str, **fields: object
) -> changes_pb2.ChangeEvent:
    """A ChangeEvent with its resource fields; emit() fills revision, time, actor."""
    return changes_pb2.ChangeEvent(
        # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
        type=type_,  # type: ignore[arg-type]
        resource_type=resource_type,
        resource_id=resource_id,
        **fields,  # type: ignore[arg-type]  # each event type's own fields, checked by the message
    )
