"""Users: create, read, list, replace, delete; each write emits its event."""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from sqlalchemy import (
    Integer,
    String,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, groups_pb2, policy_pb2, users_pb2

from ..context import RequestContext
from ..errors import Conflict, InvalidValue, ManagedElsewhere, NotFound
from ..schema import USER_TYPE, ResourceType, schema_set
from ..settings import Settings
from ..storage import events
from ..storage.db import Reader
from ..storage.filters import USERS, Catalog
from ..storage.listing import lookup_page, page_of
from ..storage.models import (
    AssignmentRow,
    GroupRow,
    MemberRow,
    RoleRow,
    TenantRow,
    UserRow,
    UserValueRow,
    table,
    utcnow,
)
from ..storage.names import fold, user_name_key
from ..storage.prepared import Prepared, PreparedInsert, json_rows
from . import patching, policy
from .convert import check_id, new_id
from .rows import check_version, chunks, leave_all_groups
from .validate import check_message

#: A Session, or a quick read's Reader (see _map).
R = TypeVar("R", Session, Reader)

E = changes_pb2
#: proto field -> schema attribute name of the multi-valued attributes kept as rows.
MULTI_VALUED = {
    "emails": "emails",
    "phone_numbers": "phoneNumbers",
    "ims": "ims",
    "photos": "photos",
    "entitlements": "entitlements",
    "roles": "roles",
    "x509_certificates": "x509Certificates",
}
#: The attributes stored as `user_values` rows too (`_value_rows`), as
#: changed_attributes names them: a write that changes none keeps the rows.
VALUE_ATTRIBUTES = frozenset({*MULTI_VALUED.values(), "addresses"})
READ_ONLY = ("meta", "tenant_id", "groups", "role_assignments", "managed_by", "mapped")
USER_FIELDS = users_pb2.User.DESCRIPTOR.fields
#: Indexed string attributes: longer values are refused rather than truncated.
MAX_KEY = 512
MAX_TEXT = 4096

_ROW_COLUMNS = (
    UserRow.pk,
    UserRow.id,
    UserRow.version,
    UserRow.created,
    UserRow.last_modified,
    UserRow.active,
    UserRow.body,
    UserRow.managed_by,
)


_users = table(UserRow)
_members, _groups = table(MemberRow), table(GroupRow)
_assignments, _roles = table(AssignmentRow), table(RoleRow)
#: A user's groups, then its roles, as one JSON array of [rank, kind, name, display,
#: source] (kind 0: a group's id and display name; kind 1: a role's name and source),
#: ranked in the order of _GROUPS_OF and _ROLES_OF (the database's own ordering of
#: names, which an aggregate does not keep). A column of the user's row: a read of a
#: few users is one statement, one round trip to PostgreSQL.
_REFS_OF_ROW = union_all(
    select(
        literal_column("0", Integer).label("kind"),
        _groups.c.pk.label("ordinal"),
        _groups.c.id.label("name"),
        _groups.c.display_name.label("display"),
        literal_column("0", Integer).label("source"),
    )
    .select_from(_members)
    .join(_groups, _groups.c.pk == _members.c.group_pk)
    .where(_members.c.member_id == _users.c.id)
    .correlate(_users),
    select(
        literal_column("1", Integer),
        literal_column("0", Integer),
        _roles.c.name,
        literal_column("''", String),
        _assignments.c.source,
    )
    .select_from(_assignments)
    .join(_roles, _roles.c.pk == _assignments.c.role_pk)
    .where(_assignments.c.user_pk == _users.c.pk)
    .correlate(_users),
).subquery("refs_of_row")
_RANKED_REFS = select(
    _REFS_OF_ROW,
    func.row_number()
    .over(
        order_by=(
            _REFS_OF_ROW.c.kind,
            _REFS_OF_ROW.c.ordinal,
            _REFS_OF_ROW.c.name,
            _REFS_OF_ROW.c.source,
        )
    )
    .label("rank"),
).subquery("ranked_refs")
_REFS = (
    select(
        json_rows(
            _RANKED_REFS.c.rank,
            _RANKED_REFS.c.kind,
            _RANKED_REFS.c.name,
            _RANKED_REFS.c.display,
            _RANKED_REFS.c.source,
        )
    )
    .scalar_subquery()
    .label("refs")
)

#: Pages of a list (their groups and roles are read in batches: `load`).
_ROW_SELECT = select(*_ROW_COLUMNS)
#: A few users, each with its groups and roles (`load_few`).
_ONE_SELECT = select(*_ROW_COLUMNS, _REFS)
#: A row of _ONE_SELECT that a write made rather than read.
_OneRow = namedtuple(
    "_OneRow",
    ("pk", "id", "version", "created", "last_modified", "active", "body", "managed_by", "refs"),
)
assert _OneRow._fields == tuple(c.key for c in _ONE_SELECT.selected_columns)
_BY_ID_WHERE = (UserRow.tenant_pk == bindparam("t"), UserRow.id == bindparam("id"))
_BY_ID = Prepared(_ONE_SELECT.where(*_BY_ID_WHERE))
#: A write's row, locked (FOR UPDATE on PostgreSQL). Not its groups and roles: on
#: PostgreSQL a lock that waited for another writer's commit returns that writer's
#: row, but a subquery of the same statement still reads the snapshot from before
#: the wait. A write reads the user it stored afterwards (`get`: a statement whose
#: snapshot starts after the lock).
_BY_ID_FOR_UPDATE = Prepared(_ROW_SELECT.where(*_BY_ID_WHERE).with_for_update())
# The write path's statements, built once with their values as parameters. A
# statement built per call with the values inside costs SQLAlchemy a cache-key walk
# over every value: that was about half of users.create's time.
_BY_NAME_KEY = Prepared(
    _ONE_SELECT.where(
        UserRow.tenant_pk == bindparam("t"), UserRow.user_name_key == bindparam("key")
    )
)
_NAME_TAKEN = Prepared(
    select(UserRow.pk).where(
        UserRow.tenant_pk == bindparam("t"),
        UserRow.user_name_key == bindparam("key"),
        UserRow.pk != bindparam("pk"),
    )
)
#: What `_columns` sets, plus what a write sets beside it.
_WRITTEN = (
    "user_name",
    "user_name_key",
    "external_id",
    "display_name",
    "display_name_key",
    "given_name",
    "family_name",
    "active",
    "doc",
    "body",
    "version",
    "last_modified",
    "managed_by",
)
#: The write path's statements, on the DBAPI cursor (storage.prepared: SQLAlchemy's
#: execute costs more than each statement). Core columns, not the model's attributes
#: (tests/layout/test_plain_dml.py).
_INSERT_USER = Prepared(
    insert(_users)
    .values({c: bindparam(c) for c in ("id", "tenant_pk", "created", *_WRITTEN)})
    .returning(_users.c.pk)
)
#: `row_pk` names the row.
_UPDATE_USER = Prepared(
    update(_users)
    .where(_users.c.pk == bindparam("row_pk"))
    .values({c: bindparam(c) for c in _WRITTEN})
)
_DELETE_VALUES = Prepared(
    delete(table(UserValueRow)).where(table(UserValueRow).c.user_pk == bindparam("user_pk"))
)
_VALUE_COLUMNS = (
    "user_pk",
    "tenant_pk",
    "attr",
    "value",
    "value_key",
    "type",
    "primary",
    "display",
    "extra",
)
_INSERT_VALUES = PreparedInsert(table(UserValueRow), _VALUE_COLUMNS)
# Built once (reads run them on every call): the groups and roles of a page of users.
_GROUPS_OF = (
    select(MemberRow.member_id, GroupRow.id, GroupRow.display_name)
    .join(GroupRow, GroupRow.pk == MemberRow.group_pk)
    .where(MemberRow.member_id.in_(bindparam("ids", expanding=True)))
    .order_by(GroupRow.pk)
)
_ROLES_OF = (
    select(AssignmentRow.user_pk, RoleRow.name, AssignmentRow.source)
    .join(RoleRow, RoleRow.pk == AssignmentRow.role_pk)
    .where(AssignmentRow.user_pk.in_(bindparam("pks", expanding=True)))
    .order_by(RoleRow.name, AssignmentRow.source)
)


def _check_len(value: str, field: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidValue(f"{field} is longer than {limit} characters", field=field)


def is_active(u: users_pb2.User) -> bool:
    """Whether the user is active: `active` unassigned counts as active (RFC 7643
    §4.1.1 leaves it to the service; absent on create means active here too)."""
    return u.active if u.HasField("active") else True


def stored_form(user: users_pb2.User, *, default_active: bool = True) -> users_pb2.User:
    """The writable part of a user, validated; read-only fields dropped.
    `default_active`: an absent `active` is stored as true (create and replace); a
    PATCH that removes it stores it unassigned."""
    check_message(user)
    u = users_pb2.User()
    u.CopyFrom(user)
    for f in READ_ONLY:
        u.ClearField(f)  # type: ignore[arg-type]  # field names from a tuple, not literals
    if u.HasField("enterprise") and u.enterprise.HasField("manager"):
        u.enterprise.manager.display_name = ""
        if not u.enterprise.manager.value:
            u.enterprise.ClearField("manager")
    if default_active and not u.HasField("active"):
        u.active = True  # RFC 7643 §4.1.1: absent means active
    if not u.user_name.strip():
        raise InvalidValue("userName is required and must not be blank", field="userName")
    _check_len(u.user_name, "userName", MAX_KEY)
    _check_len(u.external_id, "externalId", MAX_KEY)
    _check_len(u.display_name, "displayName", MAX_KEY)
    _check_len(u.name.given_name, "name.givenName", 256)
    _check_len(u.name.family_name, "name.familyName", 256)
    for field, attr in MULTI_VALUED.items():
        for mv in getattr(u, field):
            _check_len(
                mv.value,
                f"{attr}.value",
                MAX_TEXT if attr in {"photos", "x509Certificates"} else MAX_KEY,
            )
            _check_len(mv.type, f"{attr}.type", 64)
            _check_len(mv.display, f"{attr}.display", MAX_KEY)
    for addr in u.addresses:
        _check_len(addr.type, "addresses.type", 64)
    return u


def _columns(u: users_pb2.User) -> dict[str, Any]:
    return {
        "user_name": u.user_name,
        "user_name_key": user_name_key(u.user_name),
        "external_id": u.external_id or None,
        "display_name": u.display_name or None,
        "display_name_key": u.display_name.lower() or None,
        "given_name": u.name.given_name or None,
        "family_name": u.name.family_name or None,
        "active": is_active(u),
        "doc": json_format.MessageToDict(u),
        "body": u.SerializeToString(deterministic=True),
    }


def _value_rows(u: users_pb2.User, user_pk: int, tenant_pk: int) -> list[tuple[Any, ...]]:
    """The user's `user_values` rows, in _VALUE_COLUMNS order."""
    rows: list[tuple[Any, ...]] = []
    for field, attr in MULTI_VALUED.items():
        for mv in getattr(u, field):
            keyed = len(mv.value) <= MAX_KEY
            rows.append(
                (
                    user_pk,
                    tenant_pk,
                    attr,
                    mv.value or None,
                    mv.value.lower() if mv.value and keyed else None,
                    mv.type.lower() or None,
                    mv.primary,
                    mv.display or None,
                    None,
                )
            )
    for addr in u.addresses:
        rows.append(
            (
                user_pk,
                tenant_pk,
                "addresses",
                addr.formatted or None,
                addr.formatted.lower()[:MAX_KEY] or None,
                addr.type.lower() or None,
                addr.primary,
                None,
                json_format.MessageToDict(addr),
            )
        )
    return rows


def _uniqueness(user_name: str) -> Conflict:
    # RFC 7643 §4.1.1: userName is unique, case-insensitively; here by the PRECIS
    # UsernameCaseMapped profile (storage.names: width, case folding, NFC).
    return Conflict(f"userName {user_name!r} is already taken in this tenant", field="userName")


def _assemble(
    rows: Sequence[Any],
    groups: dict[str, list[users_pb2.GroupRef]],
    roles: dict[int, list[users_pb2.RoleAssignment]],
    tenant_id: str,
) -> list[users_pb2.User]:
    out = []
    for r in rows:
        u = users_pb2.User.FromString(r.body)
        u.meta.id = r.id
        u.meta.version = r.version
        u.meta.created.FromDatetime(r.created)
        u.meta.last_modified.FromDatetime(r.last_modified)
        u.tenant_id = tenant_id
        if u.HasField("active") or not r.active:  # unassigned stays unassigned
            u.active = r.active
        u.managed_by = r.managed_by
        u.groups.extend(groups.get(r.id, ()))
        u.role_assignments.extend(roles.get(r.pk, ()))
        out.append(u)
    return out


def load_few(reader: Reader, tenant: TenantRow, rows: Sequence[Any]) -> list[users_pb2.User]:
    """Users from rows of _ONE_SELECT, which carry their groups and roles (a quick
    read's lookups and reads by id, a write's user): no statement of its own, but
    one for the references the tenant's attribute mappings name, if it has any."""
    groups: dict[str, list[users_pb2.GroupRef]] = defaultdict(list)
    roles: dict[int, list[users_pb2.RoleAssignment]] = defaultdict(list)
    for r in rows:
        for _, kind, name, display, source in sorted(r.refs or ()):
            if kind == 0:
                groups[r.id].append(users_pb2.GroupRef(id=name, display_name=display))
            else:
                roles[r.pk].append(
                    users_pb2.RoleAssignment(
                        role=name, source=users_pb2.RoleSource.ValueType(source)
                    )
                )
    out = _assemble(rows, groups, roles, tenant.id)
    mappings = policy.load(reader, tenant).user_mappings if tenant.settings else ()
    if mappings:
        _map(reader, tenant, mappings, out, _existing_ids_few)
    return out


def load(session: Session, tenant: TenantRow, rows: Sequence[Any]) -> list[users_pb2.User]:
    """Users from rows of a list page (_ROW_COLUMNS): two batched queries for groups
    and roles (and one for the references of the tenant's attribute mappings, if it
    has any)."""
    tenant_id = tenant.id
    groups: dict[str, list[users_pb2.GroupRef]] = defaultdict(list)
    roles: dict[int, list[users_pb2.RoleAssignment]] = defaultdict(list)
    for chunk in chunks(rows):
        conn = session.connection()
        ids = [r.id for r in chunk]
        for member_id, gid, gname in conn.execute(_GROUPS_OF, {"ids": ids}):
            groups[member_id].append(users_pb2.GroupRef(id=gid, display_name=gname))
        pks = [r.pk for r in chunk]
        for user_pk, name, source in conn.execute(_ROLES_OF, {"pks": pks}):
            roles[user_pk].append(
                users_pb2.RoleAssignment(role=name, source=users_pb2.RoleSource.ValueType(source))
            )
    out = _assemble(rows, groups, roles, tenant_id)
    mappings = policy.load(session, tenant).user_mappings if tenant.settings else ()
    if mappings:
        _map(session, tenant, mappings, out, _existing_ids)
    return out


def _map(
    session: R,
    tenant: TenantRow,
    mappings: Sequence[policy_pb2.AttributeMapping],
    out: list[users_pb2.User],
    existing: Callable[[R, TenantRow, set[str]], set[str]],
) -> None:
    docs = [json_format.MessageToDict(u) for u in out]
    candidates: set[str] = set()
    for d in docs:
        candidates |= policy.reference_candidates(mappings, d)
    exists = existing(session, tenant, candidates)
    for u, d in zip(out, docs, strict=True):
        u.mapped.update(policy.mapped_fields(mappings, d, exists))


#: Whether an id is a user's or a group's of the tenant (a mapping's reference).
_ID_EXISTS = Prepared(
    select(UserRow.id)
    .where(UserRow.tenant_pk == bindparam("t"), UserRow.id == bindparam("id"))
    .union_all(
        select(GroupRow.id).where(
            GroupRow.tenant_pk == bindparam("t"), GroupRow.id == bindparam("id")
        )
    )
)


def _existing_ids_few(reader: Reader, tenant: TenantRow, ids: set[str]) -> set[str]:
    """_existing_ids by prepared statements, one per id (a few users' references)."""
    return {i for i in sorted(ids) if _ID_EXISTS.first(reader, {"t": tenant.pk, "id": i})}


def _existing_ids(session: Session, tenant: TenantRow, ids: set[str]) -> set[str]:
    found: set[str] = set()
    wanted = sorted(ids)
    for chunk in chunks(wanted):
        found.update(
            session.execute(
                select(UserRow.id).where(UserRow.tenant_pk == tenant.pk, UserRow.id.in_(chunk))
            ).scalars()
        )
        found.update(
            session.execute(
                select(GroupRow.id).where(GroupRow.tenant_pk == tenant.pk, GroupRow.id.in_(chunk))
            ).scalars()
        )
    return found


def _row(session: Reader, tenant: TenantRow, user_id: str, *, lock: bool = False) -> Any:
    params = {"t": tenant.pk, "id": check_id(user_id, "user")}
    # Writes lock the row until commit (FOR UPDATE on PostgreSQL).
    row = (_BY_ID_FOR_UPDATE if lock else _BY_ID).first(session, params)
    if row is None:
        raise NotFound(f"no user with id {user_id!r} in this tenant", field="id")
    return row


def get(reader: Reader, tenant: TenantRow, user_id: str) -> users_pb2.User:
    """One user by id (prepared statements only: a quick read)."""
    return load_few(reader, tenant, [_row(reader, tenant, user_id)])[0]


def _find_identity(
    session: Session,
    tenant: TenantRow,
    pol: policy_pb2.TenantPolicy,
    user_name: str,
    emails: Sequence[str],
) -> Any:
    """The existing user the tenant's unique identifier points at (case-insensitively)."""
    keys = {fold(user_name)} if user_name else set()
    if pol.unique_identifier == policy_pb2.UNIQUE_IDENTIFIER_EMAIL:
        keys |= {fold(e) for e in emails if e}
        # Email values are keyed lower-cased (emails are not userNames).
        low = ({user_name.lower()} if user_name else set()) | {e.lower() for e in emails if e}
        if low:
            by_email = session.execute(
                _ONE_SELECT.join(UserValueRow, UserValueRow.user_pk == UserRow.pk)
                .where(
                    UserValueRow.tenant_pk == tenant.pk,
                    UserValueRow.attr == "emails",
                    UserValueRow.value_key.in_(sorted(low)),
                )
                # Banyan: a person deactivated and created again signs in as the
                # active user, never as the deactivated one.
                .order_by(UserRow.active.desc(), UserRow.pk)
            ).first()
            if by_email is not None:
                return by_email
    if not keys:
        return None
    if len(keys) == 1:  # the userName alone (user_name_key is unique in a tenant)
        return _BY_NAME_KEY.first(session, {"t": tenant.pk, "key": next(iter(keys))})
    return session.execute(
        _ONE_SELECT.where(
            UserRow.tenant_pk == tenant.pk, UserRow.user_name_key.in_(sorted(keys))
        ).order_by(UserRow.active.desc(), UserRow.pk)
    ).first()


def _refuse_taken_name(
    session: Session, tenant: TenantRow, user_name: str, key: str, *, but: int = 0
) -> None:
    """409 when another user of the tenant (any but pk `but`; pks start at 1) has
    this userName (case-insensitively)."""
    if _NAME_TAKEN.first(session, {"t": tenant.pk, "key": key, "pk": but}):
        raise _uniqueness(user_name)


def _emails(u: users_pb2.User) -> list[str]:
    primary = [e.value for e in u.emails if e.primary]
    return primary + [e.value for e in u.emails if not e.primary]


def _primary_email_key(u: users_pb2.User) -> str:
    """The primary email (the one marked primary, else the first), lower-cased."""
    found = next((e.value for e in u.emails if e.value), "")
    found = next((e.value for e in u.emails if e.primary and e.value), found)
    return found.strip().lower()


_EMAIL_HOLDERS = Prepared(
    select(UserRow.pk, UserRow.body)
    .join(UserValueRow, UserValueRow.user_pk == UserRow.pk)
    .where(
        UserValueRow.tenant_pk == bindparam("t"),
        UserValueRow.attr == "emails",
        UserValueRow.value_key == bindparam("key"),
        UserRow.pk != bindparam("pk"),
    )
)


def _refuse_taken_email(
    session: Session,
    tenant: TenantRow,
    pol: policy_pb2.TenantPolicy,
    u: users_pb2.User,
    *,
    but: int = 0,
) -> None:
    """With the policy's unique_email (Banyan), 409 when another user of the tenant
    (any but pk `but`) has the same primary email, case-insensitively."""
    key = _primary_email_key(u) if pol.unique_email else ""
    if not key:
        return
    # Writers of one tenant take its row lock before checking, so two concurrent
    # creates of the same email cannot both pass (events.emit takes the same lock
    # at commit time anyway: this only takes it earlier).
    session.execute(select(TenantRow.pk).where(TenantRow.pk == tenant.pk).with_for_update())
    for _, body in _EMAIL_HOLDERS.run(session, {"t": tenant.pk, "key": key, "pk": but}):
        if _primary_email_key(users_pb2.User.FromString(body)) == key:
            # RFC 7644 §3.3: a duplicate of a unique attribute is 409 uniqueness.
            raise Conflict(
                f"email {key!r} is already another user's primary email in this tenant "
                "(the tenant's policy makes the primary email unique)",
                field="emails",
            )


def create(
    session: Session, tenant: TenantRow, user: users_pb2.User, ctx: RequestContext
) -> users_pb2.User:
    u = stored_form(user)
    pol = policy.load(session, tenant)
    policy.check_extension_values(pol, u)
    policy.check_attribute_role(session, tenant, pol, u)
    if ctx.actor_kind == "token":
        # A SCIM create of someone who signed in first adopts that user (Banyan, Panther).
        existing = _find_identity(session, tenant, pol, u.user_name, _emails(u))
        if existing is not None and existing.managed_by == "jit":
            # Lock and look again: of two racing creates, only one adopts.
            existing = _row(session, tenant, existing.id, lock=True)
        if existing is not None and existing.managed_by == "jit":
            return _replace_row(session, tenant, row=existing, new=u, pol=pol, ctx=ctx, adopt=True)
        if pol.scim_create_disabled:
            raise ManagedElsewhere(
                f"this tenant creates users at their first sign-in (JIT); SCIM may update "
                f"them but not create {u.user_name!r}: the user must sign in first",
                field="userName",
            )
    cols = _columns(u)
    managed_by = "local" if ctx.actor_kind == "admin" else "scim"
    taken = _BY_NAME_KEY.first(session, {"t": tenant.pk, "key": cols["user_name_key"]})
    if taken is not None:
        if ctx.actor_kind == "token" and _is_retry(taken, cols, managed_by):
            return load_few(session, tenant, [taken])[0]
        raise _uniqueness(u.user_name)
    return _insert(session, tenant, u=u, cols=cols, managed_by=managed_by, pol=pol, ctx=ctx)


def _is_retry(taken: Any, cols: dict[str, Any], managed_by: str) -> bool:
    """Whether a SCIM create (a token's) that finds its userName taken is a retry of
    the create that took it: the same writable attributes, by the same kind of
    caller, and the user unchanged since (version 1). Then the create answers that user, as it
    answered (or would have) the first time, instead of a conflict: a caller whose
    first attempt timed out after the commit (a race the commit deadline narrows
    but cannot close, see docs/architecture.md "Deadlines") can retry safely."""
    return bool(
        taken.version == 1 and taken.managed_by == managed_by and bytes(taken.body) == cols["body"]
    )


def _insert(
    session: Session,
    tenant: TenantRow,
    *,
    u: users_pb2.User,
    cols: dict[str, Any],
    managed_by: str,
    pol: policy_pb2.TenantPolicy,
    ctx: RequestContext,
) -> users_pb2.User:
    _refuse_taken_email(session, tenant, pol, u)
    now = utcnow()
    uid = new_id()
    try:
        ((pk,),) = _INSERT_USER.run(
            session,
            {
                "id": uid,
                "tenant_pk": tenant.pk,
                "version": 1,
                "created": now,
                "last_modified": now,
                "managed_by": managed_by,
                **cols,
            },
        )
    except IntegrityError:
        # Two creates raced past the check above: the unique index decides.
        raise _uniqueness(u.user_name) from None
    _INSERT_VALUES.run(session, _value_rows(u, pk, tenant.pk))
    role_events: list[changes_pb2.ChangeEvent] = []
    if policy.has_role_rules(pol):
        role_events, _ = policy.sync_roles(
            session, tenant, pk, uid, policy.desired_roles(session, tenant, pol, uid, u)
        )
    if role_events:
        result = get(session, tenant, uid)  # the roles its policy gave it
    else:
        # What the INSERT stored: a new user has no groups yet.
        stored = _OneRow(pk, uid, 1, now, now, cols["active"], cols["body"], managed_by, None)
        result = load_few(session, tenant, [stored])[0]
    events.emit(
        session,
        tenant,
        ctx,
        [events.event(E.EVENT_TYPE_USER_CREATED, "User", uid, user=result), *role_events],
    )
    return result


def jit_provision(
    session: Session, tenant: TenantRow, req: users_pb2.JitProvisionRequest, ctx: RequestContext
) -> users_pb2.JitProvisionResponse:
    """Finds or creates the user at first sign-in (managed_by "jit" until SCIM adopts it)."""
    pol = policy.load(session, tenant)
    user_name = req.user_name.strip() or req.email.strip()
    if not user_name:
        raise InvalidValue("give the user's userName or email", field="user_name")
    existing = _find_identity(session, tenant, pol, user_name, [req.email.strip()])
    if existing is not None:
        return users_pb2.JitProvisionResponse(
            user=load_few(session, tenant, [existing])[0], created=False
        )
    u = users_pb2.User(user_name=user_name, display_name=req.display_name, active=True)
    if req.given_name or req.family_name:
        u.name.given_name = req.given_name
        u.name.family_name = req.family_name
    if req.email.strip():
        u.emails.add(value=req.email.strip(), type="work", primary=True)
    u = stored_form(u)
    cols = _columns(u)
    _refuse_taken_name(session, tenant, u.user_name, cols["user_name_key"])
    user = _insert(session, tenant, u=u, cols=cols, managed_by="jit", pol=pol, ctx=ctx)
    return users_pb2.JitProvisionResponse(user=user, created=True)


def _user_catalog(pol: policy_pb2.TenantPolicy) -> Catalog:
    return USERS.extended(policy.user_extension_attributes(pol))


def lookup_users(
    reader: Reader, tenant: TenantRow, req: users_pb2.ListUsersRequest, settings: Settings
) -> users_pb2.ListUsersResponse:
    """The IdPs' `userName eq "..."` (listing.idp_lookup; the servicer checked it is
    one): prepared statements only, a quick read."""
    catalog = USERS
    if tenant.settings:
        catalog = policy.derived(reader, tenant, "user_catalog", _user_catalog) or USERS
    page = lookup_page(
        reader,
        catalog=catalog,
        model=UserRow,
        columns=_ONE_SELECT,
        tenant_pk=tenant.pk,
        f=req.filter,
        page=req.page,
        settings=settings,
    )
    return users_pb2.ListUsersResponse(
        users=load_few(reader, tenant, page.rows),
        total_results=page.total,
        start_index=page.start_index,
        revision=tenant.revision,
    )


def list_users(
    session: Session, tenant: TenantRow, req: users_pb2.ListUsersRequest, settings: Settings
) -> users_pb2.ListUsersResponse:
    catalog = USERS
    if tenant.settings:
        catalog = policy.derived(session, tenant, "user_catalog", _user_catalog) or USERS
    page = page_of(
        session,
        catalog=catalog,
        model=UserRow,
        columns=_ROW_SELECT,
        tenant_pk=tenant.pk,
        f=req.filter if req.HasField("filter") else None,
        sort=req.sort if req.HasField("sort") else None,
        page=req.page,
        settings=settings,
        revision=tenant.revision,
        count_all=tenant.user_count,
    )
    return users_pb2.ListUsersResponse(
        users=load(session, tenant, page.rows),
        total_results=page.total,
        start_index=page.start_index,
        next_cursor=page.next_cursor,
        revision=tenant.revision,
    )


def changed_attributes(old: users_pb2.User, new: users_pb2.User) -> list[str]:
    """Schema names of the attributes that differ (name/enterprise sub-attributes spelled out)."""
    out: list[str] = []
    for fd in USER_FIELDS:
        if fd.name in READ_ONLY:
            continue
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a == b and (
            # An optional scalar (`active`) may also change by becoming unassigned.
            fd.message_type is not None
            or not fd.has_presence
            or old.HasField(fd.name) == new.HasField(fd.name)  # type: ignore[arg-type]  # a name from the descriptor
        ):
            continue
        if fd.name in ("name", "enterprise"):
            prefix = "name." if fd.name == "name" else ""
            assert fd.message_type is not None
            for sub in fd.message_type.fields:
                if getattr(a, sub.name) != getattr(b, sub.name):
                    out.append(prefix + sub.json_name)
        else:
            out.append(fd.json_name)
    return out


def _check_local_edit(pol: policy_pb2.TenantPolicy, row: Any, ctx: RequestContext) -> None:
    if (
        ctx.actor_kind == "admin"
        and row.managed_by == "scim"
        and pol.local_edits == policy_pb2.LOCAL_EDITS_REFUSED
    ):
        raise ManagedElsewhere(
            "this user is managed by the tenant's identity provider (SCIM); "
            "change it there (the tenant's policy refuses local edits)",
            field="managed_by",
        )


def replace(
    session: Session,
    tenant: TenantRow,
    user: users_pb2.User,
    expected_version: int,
    ctx: RequestContext,
) -> users_pb2.User:
    row = _row(session, tenant, user.meta.id, lock=True)
    check_version(row, expected_version)
    pol = policy.load(session, tenant)
    _check_local_edit(pol, row, ctx)
    new = stored_form(user)
    policy.check_extension_values(pol, new)
    policy.check_attribute_role(session, tenant, pol, new)
    return _replace_row(session, tenant, row=row, new=new, pol=pol, ctx=ctx, adopt=False)


def _user_type(session: Session, tenant: TenantRow) -> ResourceType:
    """The User resource type with the tenant's own attributes."""
    if not tenant.settings:
        return USER_TYPE
    found = policy.derived(session, tenant, "schema_set", lambda p: schema_set(p.extension_schemas))
    return found.user if found is not None else USER_TYPE


def patch(
    session: Session, tenant: TenantRow, req: users_pb2.PatchUserRequest, ctx: RequestContext
) -> users_pb2.User:
    """RFC 7644 §3.5.2 applied under the user's row lock: the operations edit the
    stored user's document in order, and the result is stored as a replace would
    store it (all of them, or nothing). Concurrent patches of one user wait for
    each other's commit instead of failing on a stale version."""
    check_message(req)
    ops = patching.operations(req.operations)
    row = _row(session, tenant, req.id, lock=True)
    check_version(row, req.expected_version)
    pol = policy.load(session, tenant)
    _check_local_edit(pol, row, ctx)
    rtype = _user_type(session, tenant)
    doc = patching.user_document(users_pb2.User.FromString(row.body), rtype)
    # RFC 7644 §3.5.2.2: a removed singular attribute becomes unassigned, `active` too.
    patched = patching.user_from_document(patching.apply(rtype, doc, ops))
    new = stored_form(patched, default_active=False)
    policy.check_extension_values(pol, new)
    policy.check_attribute_role(session, tenant, pol, new)
    return _replace_row(session, tenant, row=row, new=new, pol=pol, ctx=ctx, adopt=False)


def _replace_row(
    session: Session,
    tenant: TenantRow,
    *,
    row: Any,
    new: users_pb2.User,
    pol: policy_pb2.TenantPolicy,
    ctx: RequestContext,
    adopt: bool,
) -> users_pb2.User:
    old = users_pb2.User.FromString(row.body)
    changed = changed_attributes(old, new)
    if adopt:
        changed.append("managedBy")
    if not changed:
        return get(session, tenant, row.id)
    cols = _columns(new)
    if adopt:
        cols["managed_by"] = "scim"
    now = utcnow()
    if cols["user_name_key"] != fold(old.user_name):
        _refuse_taken_name(session, tenant, new.user_name, cols["user_name_key"], but=row.pk)
    if _primary_email_key(new) != _primary_email_key(old):
        _refuse_taken_email(session, tenant, pol, new, but=row.pk)
    try:
        _UPDATE_USER.execute(
            session,
            {
                "row_pk": row.pk,
                "version": row.version + 1,
                "last_modified": now,
                "managed_by": row.managed_by,
                **cols,
            },
        )
    except IntegrityError:
        raise _uniqueness(new.user_name) from None
    if not VALUE_ATTRIBUTES.isdisjoint(changed):
        _DELETE_VALUES.execute(session, {"user_pk": row.pk})
        _INSERT_VALUES.run(session, _value_rows(new, row.pk, tenant.pk))
    role_events: list[changes_pb2.ChangeEvent] = []
    lost_last = False
    if policy.has_role_rules(pol):
        role_events, lost_last = policy.sync_roles(
            session, tenant, row.pk, row.id, policy.desired_roles(session, tenant, pol, row.id, new)
        )
    if is_active(old) != is_active(new):
        kind = E.EVENT_TYPE_USER_REACTIVATED if is_active(new) else E.EVENT_TYPE_USER_DEACTIVATED
    else:
        kind = E.EVENT_TYPE_USER_UPDATED
    ev = events.event(kind, "User", row.id, changed_attributes=changed)

    def read_back() -> None:
        # Under the tenant's row lock: the groups a concurrent membership change
        # committed before this event's revision are in it (events.emit).
        ev.user.CopyFrom(get(session, tenant, row.id))

    events.emit(session, tenant, ctx, [ev, *role_events], complete=read_back)
    result = users_pb2.User()
    result.CopyFrom(ev.user)
    if lost_last:
        return apply_last_role_action(session, tenant, pol, row.id, ctx) or result
    return result


def apply_last_role_action(
    session: Session,
    tenant: TenantRow,
    pol: policy_pb2.TenantPolicy,
    user_id: str,
    ctx: RequestContext,
) -> users_pb2.User | None:
    """The policy for a user who just lost their last SCIM-managed role. Returns the
    user after a deactivation, None after a delete or when nothing happens."""
    action = pol.on_last_scim_role_removed
    if action == policy_pb2.LAST_ROLE_ACTION_DELETE:
        # The policy deletes, not the caller: an admin's group change may trigger it
        # even where the policy refuses admins' edits of SCIM-managed users.
        remove(session, tenant, user_id, 0, ctx, mode=users_pb2.DELETE_MODE_HARD, by_policy=True)
        return None
    if action == policy_pb2.LAST_ROLE_ACTION_DEACTIVATE:
        return _deactivate(session, tenant, _row(session, tenant, user_id, lock=True), pol, ctx)
    return None


def _deactivate(
    session: Session, tenant: TenantRow, row: Any, pol: policy_pb2.TenantPolicy, ctx: RequestContext
) -> users_pb2.User:
    new = users_pb2.User.FromString(row.body)
    new.active = False
    return _replace_row(session, tenant, row=row, new=new, pol=pol, ctx=ctx, adopt=False)


def remove(
    session: Session,
    tenant: TenantRow,
    user_id: str,
    expected_version: int,
    ctx: RequestContext,
    *,
    mode: int = users_pb2.DELETE_MODE_POLICY,
    by_policy: bool = False,
) -> users_pb2.DeleteUserResponse:
    row = _row(session, tenant, user_id, lock=True)
    check_version(row, expected_version)
    pol = policy.load(session, tenant)
    if not by_policy:
        _check_local_edit(pol, row, ctx)
    if (
        mode == users_pb2.DELETE_MODE_POLICY
        and pol.on_scim_delete == policy_pb2.DELETE_ACTION_DEACTIVATE
    ):
        # Panther: "users can only be deactivated, never deleted".
        return users_pb2.DeleteUserResponse(
            deleted=False, user=_deactivate(session, tenant, row, pol, ctx)
        )
    before = get(session, tenant, row.id)
    evs = leave_all_groups(session, row.id, groups_pb2.MEMBER_TYPE_USER)
    session.execute(delete(UserRow).where(UserRow.pk == row.pk))
    evs.append(events.event(E.EVENT_TYPE_USER_DELETED, "User", row.id, user=before))
    events.emit(session, tenant, ctx, evs)
    return users_pb2.DeleteUserResponse(deleted=True)
