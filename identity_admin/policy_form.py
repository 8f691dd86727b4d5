"""The Roles and rules and the Mappings pages' forms <-> identity.v1.TenantPolicy.

Translation only, as the gateway's scim/mapping.py is for SCIM JSON: which form field
holds which part of the policy, and the choices a select offers. Whether a policy can
work (a pattern without {role}, a mapping from a missing attribute, a default role the
tenant lacks) is the core's to say: PreviewPolicy and SetPolicy refuse it with a
reason, which the pages show. A value no form offers (a choice outside a select, too
many rows) is a FormError, a 400 before any core call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from scim_identity_api.v1 import common_pb2, policy_pb2

P = policy_pb2

#: Most group-name rules and mappings a form may carry (far beyond any guide's needs).
MAX_ROWS = 100
#: The schema a path names when its select says "core" (the User's, or the Group's).
CORE = ""
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

#: Each select's choices: form value -> (enum value, label).
LAST_ROLE = {
    "keep": (P.LAST_ROLE_ACTION_KEEP, "Nothing else happens"),
    "deactivate": (P.LAST_ROLE_ACTION_DEACTIVATE, "Deactivate the user"),
    "delete": (P.LAST_ROLE_ACTION_DELETE, "Delete the user, even with local roles"),
}
ON_DELETE = {
    "delete": (P.DELETE_ACTION_DELETE, "Delete the user"),
    "deactivate": (P.DELETE_ACTION_DEACTIVATE, "Deactivate the user, keep it"),
}
UNIQUE_IDENTIFIER = {
    "userName": (P.UNIQUE_IDENTIFIER_USER_NAME, "userName"),
    "email": (P.UNIQUE_IDENTIFIER_EMAIL, "email"),
}
LOCAL_EDITS = {
    "overwritten": (P.LOCAL_EDITS_OVERWRITTEN_BY_SCIM, "Allowed (the next sync may overwrite)"),
    "refused": (P.LOCAL_EDITS_REFUSED, "Refused"),
}
UNKNOWN_MEMBERS = {
    "skip": (P.UNKNOWN_MEMBERS_SKIP, "Skip them, apply the rest"),
    "reject": (P.UNKNOWN_MEMBERS_REJECT, "Refuse the whole write"),
}
#: Big ACL's mapping types.
MAPPING_KINDS = {
    "simple": (P.MAPPING_KIND_SIMPLE, "Simple value"),
    "reference": (P.MAPPING_KIND_REFERENCE, "Reference"),
    "list": (P.MAPPING_KIND_LIST_OF_REFERENCES, "List of references"),
}
RESOURCE_TYPES = {"user": "User", "group": "Group"}
#: The switches a checkbox holds.
SWITCHES = ("scim_create_disabled", "groups_disabled", "unique_email")
_ROW = re.compile(r"^rule-(\d{1,3})-(pattern|org|spaces|remove)$")


class FormError(ValueError):
    """A form no page of the console sends: answered 400 with this message."""


def _choice(form: Mapping[str, str], name: str, choices: Mapping[str, tuple[int, str]]) -> int:
    value = form.get(name, "")
    if value not in choices:
        raise FormError(f"Choose one of the offered values for {name.replace('_', ' ')}.")
    return choices[value][0]


def _key_of(choices: Mapping[str, tuple[int, str]], value: int) -> str:
    return next((k for k, (v, _) in choices.items() if v == value), next(iter(choices)))


def _text(form: Mapping[str, str], name: str, limit: int = 1024) -> str:
    value = form.get(name, "").strip()
    if len(value) > limit or "\x00" in value:
        raise FormError(f"{name.replace('_', ' ').capitalize()} is too long.")
    return value


def version(policy: policy_pb2.TenantPolicy) -> str:
    """What a page's form says it was made from: a digest of the stored policy, so a
    form made before someone else's change is told so instead of undoing it."""
    return hashlib.sha256(policy.SerializeToString(deterministic=True)).hexdigest()[:32]


# -- Roles and rules --------------------------------------------------------------------


def rules_from_form(
    form: Mapping[str, str], base: policy_pb2.TenantPolicy
) -> policy_pb2.TenantPolicy:
    """`base` (the stored policy: its schemas and mappings stay) with the rules the
    form sets. Rows marked for removal, and the empty row for a new rule, are left out."""
    policy = policy_pb2.TenantPolicy()
    policy.CopyFrom(base)
    rows: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        m = _ROW.match(key)
        if m:
            rows.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if len(rows) > MAX_ROWS:
        raise FormError(f"At most {MAX_ROWS} group-name rules.")
    del policy.group_role_rules[:]
    for i in sorted(rows):
        row = rows[i]
        pattern = _text(row, "pattern", 256)
        org = _text(row, "org", 256)
        if row.get("remove") or not (pattern or org):
            continue
        policy.group_role_rules.append(
            P.GroupRoleRule(
                pattern=pattern, org=org, underscores_are_spaces=bool(row.get("spaces"))
            )
        )
    policy.ClearField("attribute_role")
    attribute = _text(form, "attribute_name", 256)
    if attribute:
        policy.attribute_role.path.CopyFrom(
            common_pb2.AttributePath(
                schema=_text(form, "attribute_schema", 256),
                attribute=attribute,
                sub_attribute=_text(form, "attribute_sub", 256),
            )
        )
    # (the ignores below) an int where the stubs want each enum's ValueType (a NewType)
    policy.on_last_scim_role_removed = _choice(form, "on_last_scim_role_removed", LAST_ROLE)  # type: ignore[assignment]
    policy.on_scim_delete = _choice(form, "on_scim_delete", ON_DELETE)  # type: ignore[assignment]
    policy.unique_identifier = _choice(form, "unique_identifier", UNIQUE_IDENTIFIER)  # type: ignore[assignment]
    policy.local_edits = _choice(form, "local_edits", LOCAL_EDITS)  # type: ignore[assignment]
    policy.unknown_members = _choice(form, "unknown_members", UNKNOWN_MEMBERS)  # type: ignore[assignment]
    policy.default_role = _text(form, "default_role", 256)
    for name in SWITCHES:
        setattr(policy, name, bool(form.get(name)))
    return policy


def rules_fields(policy: policy_pb2.TenantPolicy) -> list[tuple[str, str]]:
    """The form fields that say `policy`'s rules (rules_from_form's inverse): the
    hidden fields of a preview's Save, and the values the rules form shows."""
    fields: list[tuple[str, str]] = []
    for i, rule in enumerate(policy.group_role_rules):
        fields += [(f"rule-{i}-pattern", rule.pattern), (f"rule-{i}-org", rule.org)]
        if rule.underscores_are_spaces:
            fields.append((f"rule-{i}-spaces", "on"))
    path = policy.attribute_role.path
    fields += [
        ("attribute_schema", path.schema),
        ("attribute_name", path.attribute),
        ("attribute_sub", path.sub_attribute),
        ("on_last_scim_role_removed", _key_of(LAST_ROLE, policy.on_last_scim_role_removed)),
        ("on_scim_delete", _key_of(ON_DELETE, policy.on_scim_delete)),
        ("unique_identifier", _key_of(UNIQUE_IDENTIFIER, policy.unique_identifier)),
        ("local_edits", _key_of(LOCAL_EDITS, policy.local_edits)),
        ("unknown_members", _key_of(UNKNOWN_MEMBERS, policy.unknown_members)),
        ("default_role", policy.default_role),
    ]
    fields += [(name, "on") for name in SWITCHES if getattr(policy, name)]
    return fields


@dataclass(frozen=True)
class RuleRow:
    index: int
    pattern: str
    org: str
    spaces: bool


def rules_view(policy: policy_pb2.TenantPolicy) -> dict[str, object]:
    """What the rules form shows: each rule a row, then an empty row for a new one."""
    values = dict(rules_fields(policy))
    rows = [
        RuleRow(i, r.pattern, r.org, r.underscores_are_spaces)
        for i, r in enumerate(policy.group_role_rules)
    ]
    rows.append(RuleRow(len(rows), "", "", False))
    return {"rows": rows, "values": values}


def changed_parts(old: policy_pb2.TenantPolicy, new: policy_pb2.TenantPolicy) -> str:
    """A line for the history: which parts of the policy changed."""
    names = [
        f.name
        for f in policy_pb2.TenantPolicy.DESCRIPTOR.fields
        if getattr(old, f.name) != getattr(new, f.name)
    ]
    return ", ".join(names) or "nothing"


# -- Mappings -----------------------------------------------------------------------------


def mappings_of(
    policy: policy_pb2.TenantPolicy, kind: str
) -> list[policy_pb2.AttributeMapping] | None:
    if kind == "user":
        return list(policy.user_mappings)
    if kind == "group":
        return list(policy.group_mappings)
    return None


def mapping_from_form(form: Mapping[str, str]) -> tuple[str, policy_pb2.AttributeMapping]:
    """("user" or "group", the mapping) from the add or change form."""
    kind = form.get("type", "")
    if kind not in RESOURCE_TYPES:
        raise FormError("Say whether the mapping is a user's or a group's.")
    mapping = P.AttributeMapping(
        field=_text(form, "field", 256),
        source=common_pb2.AttributePath(
            schema=_text(form, "schema", 256),
            attribute=_text(form, "attribute", 256),
            sub_attribute=_text(form, "sub_attribute", 256),
        ),
        kind=_choice(form, "kind", MAPPING_KINDS),  # type: ignore[arg-type]
        primary_only=bool(form.get("primary_only")),
    )
    return kind, mapping


def with_mapping(
    policy: policy_pb2.TenantPolicy,
    kind: str,
    mapping: policy_pb2.AttributeMapping | None,
    *,
    replacing: str | None = None,
) -> policy_pb2.TenantPolicy:
    """`policy` with `mapping` added (replacing=None), put in the place of the
    mapping of field `replacing`, or that one removed (mapping=None)."""
    out = policy_pb2.TenantPolicy()
    out.CopyFrom(policy)
    target = out.user_mappings if kind == "user" else out.group_mappings
    current = list(target)
    if replacing is None:
        assert mapping is not None
        current.append(mapping)
    else:
        at = next(i for i, m in enumerate(current) if m.field == replacing)
        if mapping is None:
            del current[at]
        else:
            current[at] = mapping
    del target[:]
    target.extend(current)
    return out


def source_text(mapping: policy_pb2.AttributeMapping) -> str:
    """The source as Big ACL's guide writes it: emails[primary].value, manager.value,
    members[].value; an extension's attributes after their schema URN."""
    path = mapping.source
    text = path.attribute
    if path.schema and path.schema not in (USER_SCHEMA,):
        text = f"{path.schema}:{text}"
    if mapping.primary_only:
        text += "[primary]"
    elif mapping.kind == P.MAPPING_KIND_LIST_OF_REFERENCES:
        text += "[]"
    if path.sub_attribute:
        text += f".{path.sub_attribute}"
    return text


def kind_label(mapping: policy_pb2.AttributeMapping) -> str:
    return next((label for v, label in MAPPING_KINDS.values() if v == mapping.kind), "?")


def kind_key(mapping: policy_pb2.AttributeMapping) -> str:
    return _key_of(MAPPING_KINDS, mapping.kind)
