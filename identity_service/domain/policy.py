"""Per-tenant provisioning policy (identity.v1.TenantPolicy).

- Roles from group names and from a user attribute become `scim`-sourced role
  assignments; roles no rule manages (`local` ones) are never touched.
- What happens when a user loses their last SCIM-managed role, what DELETE means,
  how JIT-created users are adopted, whether admin edits to SCIM-managed users are
  refused.
- Tenant extension schemas (advertised by the gateway, filterable in the core) and
  attribute mappings, computed when a resource is read, so they are never stale.

The policy is stored in tenants.settings["policy"] as the message's JSON form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, common_pb2, policy_pb2, roles_pb2, users_pb2

from ..errors import InvalidFilter, InvalidValue
from ..schema import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA
from ..storage import events
from ..storage.db import Reader
from ..storage.filters import USERS
from ..storage.memo import MAX_POLICIES, memo_of
from ..storage.models import AssignmentRow, GroupRow, MemberRow, RoleRow, TenantRow, table, utcnow

P = policy_pb2
E = changes_pb2
SCIM = users_pb2.ROLE_SOURCE_SCIM
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ATTRIBUTE_TYPES = {"string", "boolean", "integer", "decimal", "dateTime", "reference"}


T = TypeVar("T")


class _Parsed:
    """One stored policy, parsed once, and what calls derive from it."""

    __slots__ = ("derived", "policy")

    def __init__(self, policy: policy_pb2.TenantPolicy) -> None:
        self.policy = policy
        self.derived: dict[str, Any] = {}


def _parsed(session: Reader, tenant: TenantRow) -> _Parsed | None:
    """The stored policy, parsed once per database (its Memo, by the JSON with keys
    sorted). Every read of a user of a tenant with a policy needs it, often twice
    (its filter catalog, its mappings): parsing the JSON form each time cost as
    much as the rest of an IdP lookup."""
    raw = (tenant.settings or {}).get("policy")
    if not raw:
        return None
    parsed = memo_of(session).policies
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    hit: _Parsed | None = parsed.get(key)
    if hit is None:
        policy = policy_pb2.TenantPolicy()
        json_format.ParseDict(raw, policy)
        if len(parsed) >= MAX_POLICIES:
            parsed.clear()
        hit = parsed[key] = _Parsed(policy)
    return hit


def load(session: Reader, tenant: TenantRow) -> policy_pb2.TenantPolicy:
    """The tenant's policy. Shared by every call that reads the same stored policy:
    read it, never change it (copy it first, as `store` callers do)."""
    parsed = _parsed(session, tenant)
    return parsed.policy if parsed is not None else policy_pb2.TenantPolicy()


def derived(
    session: Reader, tenant: TenantRow, name: str, make: Callable[[policy_pb2.TenantPolicy], T]
) -> T | None:
    """make(policy), computed once per stored policy and `name` (read-only as well);
    None when the tenant has no policy."""
    parsed = _parsed(session, tenant)
    if parsed is None:
        return None
    if name not in parsed.derived:
        parsed.derived[name] = make(parsed.policy)
    value: T = parsed.derived[name]
    return value


def store(tenant: TenantRow, policy: policy_pb2.TenantPolicy) -> None:
    # A new dict, so the JSON column sees the change.
    tenant.settings = {**(tenant.settings or {}), "policy": json_format.MessageToDict(policy)}


# -- group-name role rules ------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    org: str | None
    spaces: bool


def _compile(rule: policy_pb2.GroupRoleRule) -> _Rule:
    names = _PLACEHOLDER.findall(rule.pattern)
    parts = _PLACEHOLDER.split(rule.pattern)
    regex = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            # org is the shortest run that lets the rest match; role takes the rest.
            regex += "(?P<org>.+?)" if part == "org" else "(?P<role>.+)"
    return _Rule(
        re.compile(regex), rule.org if "org" in names else None, rule.underscores_are_spaces
    )


def _rules(policy: policy_pb2.TenantPolicy) -> list[_Rule]:
    return [_compile(r) for r in policy.group_role_rules]


def rule_matches(rules: Sequence[_Rule], name: str) -> Iterator[tuple[int, str]]:
    """(rule index, role) for each rule a group's displayName grants a role by."""
    for i, rule in enumerate(rules):
        m = rule.regex.fullmatch(name)
        if m is None:
            continue
        role = m.group("role")
        if rule.spaces:
            role = role.replace("_", " ")
        if rule.org is not None:
            org = m.group("org")
            if rule.spaces:
                org = org.replace("_", " ")
            if org != rule.org:
                continue
        yield i, role


# -- attribute lookup (role rule and mappings share it) --------------------------


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """SCIM attribute names are case-insensitive (RFC 7643 §2.1)."""
    if key in obj:
        return obj[key]
    low = key.lower()
    return next((v for k, v in obj.items() if k.lower() == low), None)


def raw_value(doc: Mapping[str, Any], path: common_pb2.AttributePath) -> Any:
    """The attribute's value (before any sub-attribute) from a user/group's JSON form."""
    schema = path.schema.strip()
    if schema.lower() == ENTERPRISE_SCHEMA.lower():
        return _get(doc.get("enterprise") or {}, path.attribute)
    if schema and schema.lower() not in (USER_SCHEMA.lower(), GROUP_SCHEMA.lower()):
        return _get(_get(doc.get("extensions") or {}, schema) or {}, path.attribute)
    value = _get(doc, path.attribute) if path.attribute.lower() != "extensions" else None
    if value is None:
        # Custom attributes in the core schema's own namespace (Panther's pantherRole).
        core = _get(doc.get("extensions") or {}, schema or USER_SCHEMA) or {}
        value = _get(core, path.attribute)
    return value


def value_at(
    doc: Mapping[str, Any], path: common_pb2.AttributePath, *, primary_only: bool = False
) -> Any:
    value = raw_value(doc, path)
    if isinstance(value, list):
        if primary_only:
            chosen = next((v for v in value if isinstance(v, dict) and v.get("primary")), None)
            value = chosen if chosen is not None else (value[0] if value else None)
        elif path.sub_attribute:
            return [_get(v, path.sub_attribute) for v in value if isinstance(v, dict)]
    if path.sub_attribute and isinstance(value, dict):
        return _get(value, path.sub_attribute)
    return value


def _doc(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def attribute_role(policy: policy_pb2.TenantPolicy, user: users_pb2.User) -> str | None:
    if not policy.attribute_role.path.attribute:
        return None
    value = value_at(_doc(user), policy.attribute_role.path)
    if value is None or value == "":
        return None
    return str(value)


# -- role sync -----------------------------------------------------------------


def defined_roles(session: Session, tenant: TenantRow, names: Iterable[str]) -> dict[str, int]:
    wanted = list(set(names))
    if not wanted:
        return {}
    return dict(
        session.execute(
            select(RoleRow.name, RoleRow.pk).where(
                RoleRow.tenant_pk == tenant.pk, RoleRow.name.in_(wanted)
            )
        ).all()
    )


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and float(value).is_integer()
        )
    if kind == "decimal":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "dateTime":
        if not isinstance(value, str):
            return False
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return isinstance(value, str)  # string, reference


def check_extension_values(policy: policy_pb2.TenantPolicy, user: users_pb2.User) -> None:
    """Values of declared extension attributes must have the declared type, so that
    filters and sorts on them (which cast in SQL) can never meet a value they reject;
    required ones must be there (extension URNs: when the user carries the extension)."""
    if not policy.extension_schemas:
        return
    stored = json_format.MessageToDict(user.extensions) if user.extensions.fields else {}
    for urn, attrs in user_extension_attributes(policy).items():
        values = _get(stored, urn)
        core = urn.lower() == USER_SCHEMA.lower()
        if not isinstance(values, dict):
            values = {}
            if not core:
                continue  # RFC 7643 §3.3: an extension's required attributes bind when it is used
        present = {k.lower() for k, v in values.items() if v not in (None, "", [])}
        for name, declared in attrs.items():
            if declared.required and name not in present:
                raise InvalidValue(f"{declared.name} is required", field=declared.name)
        for key, value in values.items():
            attr = attrs.get(key.lower())
            if attr is None or value is None:
                continue
            items = value if attr.multi_valued and isinstance(value, list) else [value]
            if attr.multi_valued != isinstance(value, list) or not all(
                _type_ok(attr.type, v) for v in items
            ):
                shape = f"a list of {attr.type}" if attr.multi_valued else f"a {attr.type}"
                raise InvalidValue(f"{attr.name} must be {shape}", field=attr.name)


def check_attribute_role(
    session: Session, tenant: TenantRow, policy: policy_pb2.TenantPolicy, user: users_pb2.User
) -> None:
    """An unknown role named by the role attribute is refused before anything changes."""
    role = attribute_role(policy, user)
    if role is None or role in defined_roles(session, tenant, [role]):
        return
    known = session.execute(
        select(RoleRow.name).where(RoleRow.tenant_pk == tenant.pk).order_by(RoleRow.name)
    ).scalars()
    attr = policy.attribute_role.path.attribute
    raise InvalidValue(
        f"{attr} names role {role!r}, which this tenant does not define; "
        f"defined roles: {', '.join(known) or 'none'}",
        field=attr,
    )


def has_role_rules(policy: policy_pb2.TenantPolicy) -> bool:
    return (
        bool(policy.group_role_rules)
        or bool(policy.attribute_role.path.attribute)
        or bool(policy.default_role)
    )


def role_rules_differ(old: policy_pb2.TenantPolicy, new: policy_pb2.TenantPolicy) -> bool:
    """Whether users' SCIM-managed roles may change from `old` to `new`."""
    return (
        list(old.group_role_rules) != list(new.group_role_rules)
        or old.attribute_role != new.attribute_role
        or old.default_role != new.default_role
    )


def check_default_role(
    session: Session, tenant: TenantRow, policy: policy_pb2.TenantPolicy
) -> None:
    """The default role must be defined when the policy is set (a role deleted later
    simply grants nothing, as a group naming an undefined role does)."""
    name = policy.default_role
    if name and name not in defined_roles(session, tenant, [name]):
        raise InvalidValue(
            f"default_role: the tenant defines no role {name!r}; create it first",
            field="default_role",
        )


def role_grants(
    session: Session,
    tenant: TenantRow,
    policy: policy_pb2.TenantPolicy,
    user_id: str,
    user: users_pb2.User | None,
) -> dict[str, list[roles_pb2.RoleGrant]]:
    """The SCIM-managed roles the user should hold now, each with every rule that
    grants it (what the console shows as a role's provenance)."""
    out: dict[str, list[roles_pb2.RoleGrant]] = {}
    if policy.group_role_rules:
        rules = _rules(policy)
        groups = session.execute(
            select(GroupRow.id, GroupRow.display_name)
            .join(MemberRow, MemberRow.group_pk == GroupRow.pk)
            .where(MemberRow.member_id == user_id, GroupRow.tenant_pk == tenant.pk)
            .order_by(GroupRow.display_name, GroupRow.id)
        ).all()
        for group_id, name in groups:
            for i, role in rule_matches(rules, name):
                grant = roles_pb2.RoleGrant(
                    kind=roles_pb2.ROLE_GRANT_KIND_GROUP,
                    group_id=group_id,
                    group_display_name=name,
                    pattern=policy.group_role_rules[i].pattern,
                )
                out.setdefault(role, []).append(grant)
    named = attribute_role(policy, user) if user is not None else None
    if named:
        grant = roles_pb2.RoleGrant(
            kind=roles_pb2.ROLE_GRANT_KIND_ATTRIBUTE, attribute=policy.attribute_role.path
        )
        out.setdefault(named, []).append(grant)
    # Panther: a user Okta sends without a pantherRole still gets a role.
    if policy.default_role and not defined_roles(session, tenant, out):
        out = {
            policy.default_role: [roles_pb2.RoleGrant(kind=roles_pb2.ROLE_GRANT_KIND_DEFAULT_ROLE)]
        }
    return out


def desired_roles(
    session: Session,
    tenant: TenantRow,
    policy: policy_pb2.TenantPolicy,
    user_id: str,
    user: users_pb2.User | None,
) -> set[str]:
    """The SCIM-managed roles the user should hold now."""
    return set(role_grants(session, tenant, policy, user_id, user))


def sync_roles(
    session: Session,
    tenant: TenantRow,
    user_pk: int,
    user_id: str,
    desired: set[str],
) -> tuple[list[changes_pb2.ChangeEvent], bool]:
    """Makes the user's scim-sourced assignments equal `desired` (only defined roles).
    Returns the events and whether the user just lost their last SCIM-managed role."""
    current = dict(
        session.execute(
            select(RoleRow.name, AssignmentRow.pk)
            .join(RoleRow, RoleRow.pk == AssignmentRow.role_pk)
            .where(AssignmentRow.user_pk == user_pk, AssignmentRow.source == SCIM)
        ).all()
    )
    defined = defined_roles(session, tenant, desired)
    add = sorted(set(defined) - set(current))
    remove = sorted(set(current) - set(defined))
    evs: list[changes_pb2.ChangeEvent] = []
    now = utcnow()
    if add:
        session.execute(
            insert(table(AssignmentRow)),
            [
                {
                    "tenant_pk": tenant.pk,
                    "user_pk": user_pk,
                    "role_pk": defined[r],
                    "source": SCIM,
                    "created": now,
                }
                for r in add
            ],
        )
    if remove:
        session.execute(
            delete(AssignmentRow).where(AssignmentRow.pk.in_([current[r] for r in remove]))
        )
    for kind, names in ((E.EVENT_TYPE_ROLE_REVOKED, remove), (E.EVENT_TYPE_ROLE_ASSIGNED, add)):
        for name in names:
            a = roles_pb2.Assignment(user_id=user_id, role=name, source=SCIM)
            evs.append(events.event(kind, "User", user_id, assignment=a))
    lost_last = bool(current) and not (set(current) - set(remove)) and not add
    return evs, lost_last


# -- validation ------------------------------------------------------------------


def _resolves(path: common_pb2.AttributePath) -> bool:
    try:
        USERS.resolve(path)
    except InvalidFilter:
        return False
    return True


def _check_path(path: common_pb2.AttributePath, schemas: Mapping[str, set[str]], what: str) -> None:
    schema = path.schema.strip() or USER_SCHEMA
    if not path.attribute:
        raise InvalidValue(f"{what}: name an attribute", field=what)
    declared = {k.lower(): v for k, v in schemas.items()}.get(schema.lower(), set())
    if path.attribute.lower() in declared:
        return
    if schema.lower() in (USER_SCHEMA.lower(), ENTERPRISE_SCHEMA.lower()) and _resolves(path):
        return
    shown = f"{schema}:{path.attribute}" + (f".{path.sub_attribute}" if path.sub_attribute else "")
    raise InvalidValue(
        f"{what}: attribute {shown!r} does not exist; define it in an extension schema first",
        field=what,
    )


def check_compatible(old: policy_pb2.TenantPolicy, new: policy_pb2.TenantPolicy) -> None:
    """Stored values were checked against the old types: an attribute keeps its type."""
    before = user_extension_attributes(old)
    for urn, attrs in user_extension_attributes(new).items():
        was = {k.lower(): v for k, v in before.items()}.get(urn.lower(), {})
        for name, attr in attrs.items():
            prior = was.get(name)
            if prior is not None and (prior.type, prior.multi_valued) != (
                attr.type,
                attr.multi_valued,
            ):
                raise InvalidValue(
                    f"{urn}:{attr.name} is a {prior.type}; its type cannot change while "
                    "values may be stored: add an attribute with a new name instead",
                    field="extension_schemas",
                )


def validate(policy: policy_pb2.TenantPolicy) -> None:
    """Refuses a policy that cannot work, saying what to fix."""
    for i, rule in enumerate(policy.group_role_rules):
        where = f"group_role_rules[{i}]"
        names = _PLACEHOLDER.findall(rule.pattern)
        if names.count("role") != 1:
            raise InvalidValue(
                f"{where}: the pattern must contain {{role}} exactly once", field=where
            )
        if set(names) - {"role", "org"} or names.count("org") > 1:
            raise InvalidValue(f"{where}: only {{role}} and one {{org}} may appear", field=where)
        if "{}" in rule.pattern or "}{" in rule.pattern:
            raise InvalidValue(f"{where}: placeholders need literal text between them", field=where)
        if "org" in names and not rule.org:
            raise InvalidValue(
                f"{where}: the pattern has {{org}}: set org to the org name", field=where
            )
        if "org" not in names and rule.org:
            raise InvalidValue(f"{where}: org is set but the pattern has no {{org}}", field=where)
        if len(rule.pattern) > 256:
            raise InvalidValue(f"{where}: pattern longer than 256 characters", field=where)
    schemas: dict[str, set[str]] = {}
    seen: set[tuple[str, str]] = set()
    for i, ext in enumerate(policy.extension_schemas):
        where = f"extension_schemas[{i}]"
        if not ext.schema.startswith("urn:"):
            raise InvalidValue(f"{where}: schema must be a URN (urn:...)", field=where)
        if ext.resource_type not in ("User", "Group"):
            raise InvalidValue(f"{where}: resource_type must be User or Group", field=where)
        if ext.schema.lower() == ENTERPRISE_SCHEMA.lower():
            raise InvalidValue(f"{where}: the enterprise extension is built in", field=where)
        if (ext.schema.lower(), ext.resource_type) in seen:
            raise InvalidValue(f"{where}: {ext.schema} is defined twice", field=where)
        seen.add((ext.schema.lower(), ext.resource_type))
        names_seen: set[str] = set()
        for attr in ext.attributes:
            if not _NAME.match(attr.name):
                raise InvalidValue(
                    f"{where}: attribute name {attr.name!r} is not valid", field=where
                )
            if attr.type not in ATTRIBUTE_TYPES:
                allowed = ", ".join(sorted(ATTRIBUTE_TYPES))
                raise InvalidValue(
                    f"{where}.{attr.name}: type must be one of {allowed}", field=where
                )
            if attr.name.lower() in names_seen:
                raise InvalidValue(f"{where}: attribute {attr.name} is defined twice", field=where)
            if ext.schema.lower() == USER_SCHEMA.lower() and attr.name.lower() in USERS.default:
                raise InvalidValue(f"{where}: {attr.name} is a core attribute already", field=where)
            names_seen.add(attr.name.lower())
        if ext.resource_type == "User":
            schemas.setdefault(ext.schema, set()).update(names_seen)
    if policy.attribute_role.path.attribute:
        _check_path(policy.attribute_role.path, schemas, "attribute_role")
    for kind, mappings in (
        ("user_mappings", policy.user_mappings),
        ("group_mappings", policy.group_mappings),
    ):
        fields: set[str] = set()
        for i, m in enumerate(mappings):
            where = f"{kind}[{i}]"
            if not _NAME.match(m.field):
                raise InvalidValue(f"{where}: field name {m.field!r} is not valid", field=where)
            if m.field in fields:
                raise InvalidValue(f"{where}: field {m.field} is mapped twice", field=where)
            fields.add(m.field)
            if kind == "user_mappings":
                _check_path(m.source, schemas, where)
            elif m.source.attribute.lower() not in ("displayname", "externalid", "members", "id"):
                raise InvalidValue(
                    f"{where}: groups have displayName, externalId, id and members", field=where
                )
            if m.kind == P.MAPPING_KIND_LIST_OF_REFERENCES and m.source.attribute.lower() not in (
                "members",
                "groups",
            ):
                raise InvalidValue(
                    f"{where}: a list of references maps members (groups) or groups (users)",
                    field=where,
                )


def user_extension_attributes(
    policy: policy_pb2.TenantPolicy,
) -> dict[str, dict[str, policy_pb2.SchemaAttribute]]:
    """schema URN -> attribute name (lower-case) -> definition, for User extensions."""
    out: dict[str, dict[str, policy_pb2.SchemaAttribute]] = {}
    for ext in policy.extension_schemas:
        if ext.resource_type == "User":
            out.setdefault(ext.schema, {}).update({a.name.lower(): a for a in ext.attributes})
    return out


# -- mappings (computed on read) ---------------------------------------------------


def mapped_fields(
    mappings: Sequence[policy_pb2.AttributeMapping],
    doc: Mapping[str, Any],
    exists: set[str],
) -> dict[str, Any]:
    """The mapped fields of one resource. `exists`: ids known to be users/groups of
    the tenant (references to anything else map to null)."""
    out: dict[str, Any] = {}
    for m in mappings:
        value = value_at(doc, m.source, primary_only=m.primary_only)
        if m.kind == P.MAPPING_KIND_REFERENCE:
            if isinstance(value, dict):
                value = _get(value, "value")
            out[m.field] = value if isinstance(value, str) and value in exists else None
        elif m.kind == P.MAPPING_KIND_LIST_OF_REFERENCES:
            raw = raw_value(doc, m.source)  # the elements themselves, not a sub-attribute
            items = raw if isinstance(raw, list) else []
            ids = [(_get(v, "value") or _get(v, "id")) if isinstance(v, dict) else v for v in items]
            out[m.field] = [i for i in ids if isinstance(i, str) and i in exists]
        else:
            out[m.field] = value
    return out


def reference_candidates(
    mappings: Sequence[policy_pb2.AttributeMapping], doc: Mapping[str, Any]
) -> set[str]:
    found: set[str] = set()
    for m in mappings:
        if m.kind == P.MAPPING_KIND_SIMPLE:
            continue
        if m.kind == P.MAPPING_KIND_LIST_OF_REFERENCES:
            value = raw_value(doc, m.source)
        else:
            value = value_at(doc, m.source, primary_only=m.primary_only)
        items = value if isinstance(value, list) else [value]
        for item in items:
            ref = (_get(item, "value") or _get(item, "id")) if isinstance(item, dict) else item
            if isinstance(ref, str):
                found.add(ref)
    return found
