"""SCIM JSON <-> identity.v1 `User` / `Group`.

Incoming JSON is first *normalized* against the attribute definitions of
`schemas`: attribute names are matched case-insensitively and rewritten to their
canonical spelling (RFC 7643 §2.1), values are type-checked (booleans sent as
"True"/"False" strings are accepted, as Entra ID sends them), read-only
attributes are dropped (RFC 7643 §2.2: "values provided SHALL be ignored") and
attributes of schemas other than core/enterprise are kept as opaque JSON keyed
by schema URN. The normalized document ("doc") is what PATCH edits and what
`*_to_proto` reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

import orjson
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from scim_identity_api.urns import CORE_GROUP, CORE_USER, ENTERPRISE_USER
from scim_identity_api.v1 import groups_pb2, users_pb2
from scim_identity_api.values import finite_number, is_datetime, shown, type_name

from ..errors import invalid_value
from .schemas import Attr, ResourceType, Schema

_MEMBER_TYPES = {"user": groups_pb2.MEMBER_TYPE_USER, "group": groups_pb2.MEMBER_TYPE_GROUP}
_MEMBER_TYPE_NAMES = {groups_pb2.MEMBER_TYPE_USER: "User", groups_pb2.MEMBER_TYPE_GROUP: "Group"}

# Write-only attributes the IdPs send that this service does not store
# (RFC 7643 §4.1.1 password; Okta sends it on create). Ignored, never echoed.
_IGNORED_USER_ATTRS = frozenset({"password"})
_COMMON_LOW = frozenset({"schemas", "id", "meta", "externalid", *_IGNORED_USER_ATTRS})


# -- where identity.v1 holds each attribute: the core's catalogue says ----------------------


def _held(attr: Attr) -> bool:
    """Whether a built-in field of User/Group holds `attr` (AttributeDefinition.proto_field;
    "extensions" for a tenant's own attributes, empty for derived ones such as `$ref`)."""
    return attr.proto_field not in ("", "extensions")


def _builtin_low(rtype: ResourceType) -> frozenset[str]:
    """Names (lower-cased) of the core schema's attributes that User/Group fields hold:
    anything else at the top level of a normalized document is a tenant-declared
    core-namespace attribute, stored in `extensions` under the core URN."""
    return frozenset(a.name.lower() for a in rtype.schema.attributes if _held(a))


def _field_of(message: Any, path: str) -> tuple[Any, str]:
    """(the message holding the last part of a dotted proto field path, that part)."""
    *parents, last = path.split(".")
    for name in parents:
        message = getattr(message, name)
    return message, last


def _element_doc(element: Any, attr: Attr) -> dict[str, Any]:
    """One value of a multi-valued complex attribute as SCIM JSON: the sub-attributes
    that hold a value, `primary: false` included when the client set it."""
    out: dict[str, Any] = {}
    fields = element.DESCRIPTOR.fields_by_name
    for sub in attr.sub_attributes:
        if not _held(sub):
            continue
        name = sub.proto_field.rpartition(".")[2]
        value = getattr(element, name)
        if value or (fields[name].has_presence and element.HasField(name)):
            out[sub.name] = value
    return out


# -- JSON values -------------------------------------------------------------------


def coerce(attr: Attr, value: Any, where: str) -> Any:
    """Checks `value` against `attr` and returns its canonical form (None = unassigned).

    `where` names the attribute in error details, e.g. "emails[0].primary".
    """
    if value is None:
        return None
    if attr.multi_valued:
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if attr.type == "complex" and not isinstance(item, dict) and item is not None:
                raise invalid_value(f"{where}[{i}] must be an object, not {type_name(item)}")
            single = _coerce_single(attr, item, f"{where}[{i}]")
            if single is not None and single != {}:
                out.append(single)
        return out
    return _coerce_single(attr, value, where)


def _coerce_single(attr: Attr, value: Any, where: str) -> Any:
    if value is None:
        return None
    if attr.type == "complex":
        if not isinstance(value, dict):
            if isinstance(value, str) and attr.sub("value") is not None:
                # A bare id for a complex attribute with a `value`, e.g. the
                # enterprise `manager` as Entra ID sends it.
                value = {"value": value}
            else:
                raise invalid_value(f"{where} must be an object, not {type_name(value)}")
        out: dict[str, Any] = {}
        for key, sub_value in value.items():
            sub = attr.sub(key)
            if sub is None:
                raise invalid_value(f"{where} has no sub-attribute {key!r}")
            if sub.read_only:
                continue
            coerced = _coerce_single(sub, sub_value, f"{where}.{sub.name}")
            if coerced is not None:
                out[sub.name] = coerced
        return out
    if attr.type == "boolean":
        if isinstance(value, bool):
            return value
        # Entra ID sends booleans as "True" / "False".
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise invalid_value(f"{where} must be a boolean, not {type_name(value)}")
    if attr.type in ("string", "reference", "binary", "dateTime"):
        if not isinstance(value, str):
            raise invalid_value(f"{where} must be a string, not {type_name(value)}")
        if attr.type == "dateTime" and not is_datetime(value):
            raise invalid_value(
                f"{where} must be a dateTime (xsd:dateTime, e.g. 2024-04-10T12:00:00Z), "
                f"not {value!r}"
            )
        return value
    if attr.type == "integer":
        number = finite_number(value)
        if number is None or not float(number).is_integer():
            raise invalid_value(f"{where} must be an integer, not {shown(value)}")
        return int(number)
    if attr.type == "decimal":
        number = finite_number(value)
        if number is None:
            raise invalid_value(f"{where} must be a number, not {shown(value)}")
        return number
    raise invalid_value(f"{where} has an unsupported type")  # pragma: no cover


def _check_schemas(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise invalid_value("'schemas' must be an array of schema URNs")


def known_extension(rtype: ResourceType, urn: str) -> str | None:
    """The canonical URN of an extension schema `rtype` implements."""
    low = urn.lower()
    for ext in rtype.extensions:
        if ext.id.lower() == low:
            return ext.id
    return None


def normalize(body: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    """The canonical writable document of a POST/PUT body (see module docstring)."""
    doc: dict[str, Any] = {}
    listed: set[str] = set()
    for key, value in body.items():
        if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
            continue
        low = key.lower()
        if low == "schemas":
            _check_schemas(value)
            listed = {s.lower() for s in value}
            continue
        if low in ("id", "meta"):  # readOnly common attributes (RFC 7643 §3.1)
            continue
        if low == "externalid":
            doc["externalId"] = coerce(Attr("externalId"), value, "externalId")
            continue
        attr = rtype.schema.attr(key)
        if attr is not None:
            if not attr.read_only:
                doc[attr.name] = coerce(attr, value, attr.name)
            continue
        if rtype.id == "User" and low in _IGNORED_USER_ATTRS:
            continue
        if low.startswith("urn:"):
            _normalize_urn_key(doc, rtype, key, value, listed)
            continue
        raise invalid_value(
            f"{key!r} is not an attribute of {rtype.name} resources; see /Schemas/{rtype.schema.id}"
        )
    return doc


def _normalize_urn_key(
    doc: dict[str, Any], rtype: ResourceType, key: str, value: Any, listed: set[str]
) -> None:
    if key.lower() == rtype.schema.id.lower():
        # Core attributes nested under their own schema URN.
        if not isinstance(value, dict):
            raise invalid_value(f"{key!r} must be an object")
        doc.update(normalize(value, rtype))
        return
    ext_id = known_extension(rtype, key)
    if ext_id is not None:
        if value is None:
            doc[ext_id] = None
            return
        if not isinstance(value, dict):
            raise invalid_value(f"{ext_id!r} must be an object of extension attributes")
        doc[ext_id] = normalize_extension(_extension_schema(rtype, ext_id), value)
        return
    for ext in (rtype.schema, *rtype.extensions):
        # A schema-qualified attribute as a key: "urn:...:User:department".
        if key.lower().startswith(ext.id.lower() + ":"):
            name = key[len(ext.id) + 1 :]
            if ext is rtype.schema:
                doc.update(normalize({name: value}, rtype))
            else:
                merged = dict(doc.get(ext.id) or {})
                merged.update(normalize_extension(ext, {name: value}))
                doc[ext.id] = merged
            return
    # Another schema: a custom extension stored as opaque JSON (proto
    # `extensions`, keyed by schema URN).
    if isinstance(value, dict) or key.lower() in listed or value is None:
        if value is not None and not isinstance(value, dict):
            raise invalid_value(f"{key!r} must be an object of extension attributes")
        doc[key] = value
        return
    schema, _, name = key.rpartition(":")
    if not name:
        raise invalid_value(f"{key!r} is not a valid schema URN or attribute path")
    ext_doc = _ci_get_key(doc, schema)
    target = dict(doc.get(ext_doc) or {}) if ext_doc else {}
    target[name] = value
    doc[ext_doc or schema] = target


def _ci_get_key(doc: dict[str, Any], key: str) -> str | None:
    low = key.lower()
    for k in doc:
        if k.lower() == low:
            return k
    return None


def _extension_schema(rtype: ResourceType, ext_id: str) -> Schema:
    return next(e for e in rtype.extensions if e.id == ext_id)


def normalize_extension(schema: Schema, value: dict[str, Any]) -> dict[str, Any]:
    """An extension object checked against its schema (names in their declared spelling)."""
    out: dict[str, Any] = {}
    for key, sub_value in value.items():
        attr = schema.attr(key)
        if attr is None:
            raise invalid_value(f"{key!r} is not an attribute of {schema.id}")
        if attr.read_only:
            continue
        out[attr.name] = coerce(attr, sub_value, f"{schema.id}:{attr.name}")
    return out


def mentions_custom(body: dict[str, Any], rtype: ResourceType) -> bool:
    """Whether a User body names anything outside the built-in schemas of `rtype`
    (the core's User type), so that the tenant's own schemas are needed to read it."""
    builtin = _builtin_low(rtype)
    for key, value in body.items():
        if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
            continue
        low = key.lower()
        if low in builtin or low in _COMMON_LOW:
            continue
        if not low.startswith("urn:"):
            return True
        if low == CORE_USER.lower():
            if isinstance(value, dict) and mentions_custom(value, rtype):
                return True
            continue
        if low == ENTERPRISE_USER.lower() or low.startswith(ENTERPRISE_USER.lower() + ":"):
            continue
        if low.startswith(CORE_USER.lower() + ":"):
            name = low[len(CORE_USER) + 1 :].partition(".")[0].partition("[")[0]
            if name in builtin or name in _COMMON_LOW:
                continue
        return True
    return False


# -- to proto --------------------------------------------------------------------------


def struct_from(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    try:
        s.update(doc)
    except (ValueError, TypeError) as exc:  # pragma: no cover - JSON always fits
        raise invalid_value(f"extension attributes cannot be stored: {exc}") from None
    return s


def custom_extensions(doc: dict[str, Any], core: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The doc's attributes of schemas other than `core` and `known` extensions."""
    skip = {core.lower(), *(k.lower() for k in known)}
    return {
        k: v
        for k, v in doc.items()
        if k.lower().startswith("urn:") and k.lower() not in skip and v is not None
    }


def user_to_proto(doc: dict[str, Any], rtype: ResourceType) -> users_pb2.User:
    """A `User` from a document normalized against `rtype` (meta/id are set by the
    caller): each attribute into the field the core's catalogue names for it."""
    user = users_pb2.User()
    if doc.get("externalId") is not None:
        user.external_id = doc["externalId"]
    for schema in rtype.all_schemas:
        src = doc if schema is rtype.schema else doc.get(schema.id)
        if not isinstance(src, dict):
            continue
        for attr in schema.attributes:
            value = src.get(attr.name)
            if value is None or not _held(attr) or attr.read_only:
                continue
            if attr.type != "complex":
                target, name = _field_of(user, attr.proto_field)
                setattr(target, name, value)
            elif attr.multi_valued:
                values = _field_of(user, attr.proto_field)
                for item in value:
                    element = getattr(*values).add()
                    for sub in attr.sub_attributes:
                        if _held(sub) and item.get(sub.name) is not None:
                            setattr(element, sub.proto_field.rpartition(".")[2], item[sub.name])
            else:
                for sub in attr.sub_attributes:
                    if _held(sub) and not sub.read_only and value.get(sub.name):
                        target, name = _field_of(user, sub.proto_field)
                        setattr(target, name, value[sub.name])
    ext = custom_extensions(doc, CORE_USER, (ENTERPRISE_USER,))
    core = _core_extras(doc, rtype)
    if core:
        ext[CORE_USER] = core
    if ext:
        user.extensions.CopyFrom(struct_from(ext))
    return user


def _core_extras(doc: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    """Tenant-declared core-namespace attributes of a user document: the top-level
    names that are not built in, over any kept as they were stored (`CORE_USER` key)."""
    out: dict[str, Any] = {}
    stored = doc.get(CORE_USER)
    if isinstance(stored, dict):
        out.update({k: v for k, v in stored.items() if v is not None})
    builtin = _builtin_low(rtype)
    for key, value in doc.items():
        low = key.lower()
        if low in builtin or low in _COMMON_LOW or low.startswith("urn:") or value is None:
            continue
        if isinstance(value, list) and not value:
            continue
        out[key] = value
    return out


def member_to_proto(item: dict[str, Any], where: str = "members") -> groups_pb2.Member:
    value = item.get("value")
    if not value and isinstance(item.get("$ref"), str):
        # RFC 7643 §4.2: `$ref` is the member's URI; its last segment is the id.
        value = item["$ref"].rstrip("/").rpartition("/")[2]
    if not value:
        raise invalid_value(f"{where} needs a 'value' (the member's id)")
    member = groups_pb2.Member(value=value)
    mtype = item.get("type")
    if mtype:
        if mtype.lower() not in _MEMBER_TYPES:
            raise invalid_value(f"{where}.type must be 'User' or 'Group', not {mtype!r}")
        member.type = _MEMBER_TYPES[mtype.lower()]
    return member


def group_to_proto(doc: dict[str, Any]) -> groups_pb2.Group:
    group = groups_pb2.Group()
    if doc.get("displayName") is not None:
        group.display_name = doc["displayName"]
    if doc.get("externalId") is not None:
        group.external_id = doc["externalId"]
    for i, item in enumerate(doc.get("members") or ()):
        group.members.append(member_to_proto(item, f"members[{i}]"))
    ext = custom_extensions(doc, CORE_GROUP, ())
    if ext:
        group.extensions.CopyFrom(struct_from(ext))
    return group


# -- to SCIM JSON --------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    """Struct numbers are doubles: print whole numbers as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    raw = json_format.MessageToDict(struct)
    return {k: _json_number(v) for k, v in raw.items()}


def _meta(meta: Any, resource_type: str, location: str) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": resource_type}
    if meta.HasField("created"):
        out["created"] = timestamp_json(meta.created)
    if meta.HasField("last_modified"):
        out["lastModified"] = timestamp_json(meta.last_modified)
    out["location"] = location
    out["version"] = etag(meta.version)
    return out


_EPOCH = datetime(1970, 1, 1)


def timestamp_json(t: timestamp_pb2.Timestamp) -> str:
    """`t.ToJsonString()` (RFC 3339, UTC, 0/3/6/9 fraction digits), in a third of
    the time: every resource in every answer has two."""
    nanos = t.nanos
    if not 0 <= nanos < 1_000_000_000 or not 0 <= t.seconds < 253_402_300_800:
        return t.ToJsonString()  # outside what the core writes: protobuf decides
    base = (_EPOCH + timedelta(seconds=t.seconds)).isoformat()
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{base}.{nanos // 1000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def etag(version: int) -> str:
    """meta.version and the ETag header: a weak validator (RFC 7644 §3.14)."""
    return f'W/"{version}"'


def user_to_scim(user: users_pb2.User, base_url: str, rtype: ResourceType) -> dict[str, Any]:
    """The full SCIM representation of a user: each attribute of `rtype` (the core's
    User type) from the field the catalogue names for it."""
    schemas = [CORE_USER]
    doc: dict[str, Any] = {"schemas": schemas, "id": user.meta.id}
    # The fields that hold a value, asked once: a user sets a handful of the ~30.
    present = {fd.name for fd, _ in user.ListFields()}
    if "external_id" in present:
        doc["externalId"] = user.external_id
    for schema in rtype.all_schemas:
        out = doc if schema is rtype.schema else {}
        for attr in schema.attributes:
            if not _held(attr) or attr.proto_field.partition(".")[0] not in present:
                continue
            holder, name = _field_of(user, attr.proto_field)
            value = getattr(holder, name)
            if attr.name == "groups" and schema is rtype.schema:
                out["groups"] = [
                    {
                        "value": g.id,
                        "$ref": f"{base_url}/Groups/{g.id}",
                        "display": g.display_name,
                        "type": "direct",
                    }
                    for g in value
                ]
            elif attr.type != "complex":
                # A top-level field is in `present` only when set (`active: false`
                # included); a nested one (enterprise.*) when it holds a value.
                if "." not in attr.proto_field or value:
                    out[attr.name] = value
            elif attr.multi_valued:
                if value:
                    out[attr.name] = [_element_doc(e, attr) for e in value]
            elif attr.name == "manager" and schema.id == ENTERPRISE_USER:
                if value.value:
                    out["manager"] = {
                        "value": value.value,
                        "$ref": f"{base_url}/Users/{value.value}",
                    }
                    if value.display_name:
                        out["manager"]["displayName"] = value.display_name
            else:
                sub_doc = {
                    sub.name: getattr(value, sub.proto_field.rpartition(".")[2])
                    for sub in attr.sub_attributes
                    if _held(sub) and getattr(value, sub.proto_field.rpartition(".")[2])
                }
                if sub_doc:
                    out[attr.name] = sub_doc
        if out and out is not doc:
            schemas.append(schema.id)
            doc[schema.id] = out
    builtin = _builtin_low(rtype)
    for urn, value in (struct_to_dict(user.extensions) if user.extensions.fields else {}).items():
        if urn.lower() == CORE_USER.lower() and isinstance(value, dict):
            # Tenant-declared attributes of the core schema are top-level attributes.
            for key, sub_value in value.items():
                if key.lower() not in builtin and key.lower() not in _COMMON_LOW:
                    doc[key] = sub_value
            continue
        if urn not in schemas:
            schemas.append(urn)
        doc[urn] = value
    doc["meta"] = _meta(user.meta, "User", f"{base_url}/Users/{user.meta.id}")
    return doc


def member_to_scim(m: groups_pb2.Member, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"value": m.value}
    kind = _MEMBER_TYPE_NAMES.get(m.type)
    if kind:
        out["$ref"] = f"{base_url}/{kind}s/{m.value}"
        out["type"] = kind
    if m.display:
        out["display"] = m.display
    return out


def _append_members(
    buf: bytearray, members: Iterable[groups_pb2.Member], base_url: str, sep: bytes
) -> bytes:
    """Encodes `members` into `buf` one at a time, each after `sep`; the next sep.

    No dict per member is kept, nor the bytes orjson returns, which are
    over-allocated (about 4 KB for a 200-byte member: a list of them would cost
    40 MB per 10,000 members)."""
    for m in members:
        buf += sep
        buf += orjson.dumps(member_to_scim(m, base_url))
        sep = b","
    return sep


def members_json_chunks(
    members: Iterable[groups_pb2.Member], base_url: str, chunk: int
) -> Iterator[bytes]:
    """The JSON members array in pieces, pulling `members` only as the pieces are
    taken: `[` and the first `chunk` members, then `,` and the next `chunk`, ...,
    and `]` last (`[]` alone when there are none). Joined, the pieces are the array
    of `member_to_scim` objects."""
    it = iter(members)
    sep = b"["
    while True:
        buf = bytearray()
        sep = _append_members(buf, islice(it, chunk), base_url, sep)
        if not buf:
            break
        yield bytes(buf)
    yield b"[]" if sep == b"[" else b"]"


async def members_json_pieces(
    pages: AsyncIterable[Sequence[groups_pb2.Member]], base_url: str
) -> AsyncIterator[bytes]:
    """As `members_json_chunks`, one piece per page of `pages`, each page pulled
    only when the previous piece was taken (a streamed response holds one page)."""
    sep = b"["
    async for page in pages:
        buf = bytearray()
        sep = _append_members(buf, page, base_url, sep)
        if buf:
            yield bytes(buf)
    yield b"[]" if sep == b"[" else b"]"


def members_json(members: Iterable[groups_pb2.Member], base_url: str) -> orjson.Fragment:
    """The members array, encoded one member at a time: a large group never holds a
    dict per member (measured at 100k members: peak +35 MB instead of +66 MB)."""
    return orjson.Fragment(b"".join(members_json_chunks(members, base_url, 1000)))


class _MembersSlot:
    """Stands for a members array that is streamed: it goes into a group document
    where the array belongs, and `split_at_members` cuts the document's JSON there.
    Projections deep-copy documents; the slot stays itself."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _MembersSlot:
        return self

    def __repr__(self) -> str:
        return "MEMBERS_SLOT"


MEMBERS_SLOT = _MembersSlot()
# Written raw where the slot is: orjson escapes control characters inside strings
# (as \u0000), so this byte occurs nowhere else in the JSON.
_SLOT_MARK = b"\x00"


def _slot_json(obj: Any) -> orjson.Fragment:
    if obj is MEMBERS_SLOT:
        return orjson.Fragment(_SLOT_MARK)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def split_at_members(doc: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The JSON of `doc` before and after its `MEMBERS_SLOT` (head + members array +
    tail is the document); None when the slot is not in `doc`."""
    raw = orjson.dumps(doc, default=_slot_json)
    head, mark, tail = raw.partition(_SLOT_MARK)
    return (head, tail) if mark else None


def group_to_scim(
    group: groups_pb2.Group,
    base_url: str,
    *,
    with_members: bool = True,
    encoded_members: bool = False,
) -> dict[str, Any]:
    """`encoded_members`: members as a pre-encoded JSON fragment, for a response that
    is sent as it is (no projection walks it)."""
    schemas = [CORE_GROUP]
    doc: dict[str, Any] = {"schemas": schemas, "id": group.meta.id}
    if group.external_id:
        doc["externalId"] = group.external_id
    doc["displayName"] = group.display_name
    if with_members:
        doc["members"] = (
            members_json(group.members, base_url)
            if encoded_members
            else [member_to_scim(m, base_url) for m in group.members]
        )
    for urn, value in struct_to_dict(group.extensions).items():
        schemas.append(urn)
        doc[urn] = value
    doc["meta"] = _meta(group.meta, "Group", f"{base_url}/Groups/{group.meta.id}")
    return doc


__all__ = [
    "MEMBERS_SLOT",
    "coerce",
    "etag",
    "group_to_proto",
    "group_to_scim",
    "member_to_proto",
    "members_json_chunks",
    "normalize",
    "split_at_members",
    "user_to_proto",
    "user_to_scim",
]
