"""PATCH applied in the core (RFC 7644 §3.5.2), on a resource's attribute document.

The gateway parses a SCIM PATCH request into the contract's typed operations
(identity.v1.PatchOperation: op, a path made of an AttributePath and an optional
value filter, a JSON value); `users.patch` and `groups.patch` apply them here,
inside the write transaction and under the resource's row lock, so concurrent
patches of one resource are serialised instead of refused.

A user is patched as its *document*: attribute names in their catalogue
spelling (`schema`), core attributes at the top level, the enterprise extension
and other schemas' objects under their URNs. `user_document` builds it from the
stored `User`, `user_from_document` turns the result back into one. A group's
attributes are patched the same way; its membership never is: member operations
become an O(change) plan (`plan_group`).

Every operation that cannot apply raises InvalidPath, NoTarget, InvalidValue or
Mutability before anything is written.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2

from scim_identity_api.v1 import common_pb2, groups_pb2, users_pb2
from scim_identity_api.values import finite_number, is_datetime, shown, type_name

from ..errors import InvalidPath, InvalidValue, Mutability, NoTarget
from ..schema import (
    ADDRESS,
    ENTERPRISE_FIELDS,
    ENTERPRISE_SCHEMA,
    EXTERNAL_ID,
    MULTI,
    MULTI_SUB,
    NAME,
    USER,
    USER_SCHEMA,
    USER_SIMPLE,
    Attr,
    ResourceType,
)

P = common_pb2
_OPS = {P.PATCH_OP_ADD: "add", P.PATCH_OP_REMOVE: "remove", P.PATCH_OP_REPLACE: "replace"}
# Common and read-only attributes a path-less value may carry (Okta sends the
# group's `id` with a rename); ignored there, refused as an explicit path.
_READ_ONLY_NAMES = frozenset({"id", "meta", "schemas", "groups"})
# Write-only attributes the IdPs send that this service does not store
# (RFC 7643 §4.1.1 password). Ignored, never stored.
_IGNORED_NAMES = frozenset({"password"})
_CORE_PREFIX = "urn:ietf:params:scim:schemas:core:"

# -- the user document <-> identity.v1.User ------------------------------------------------

_BUILTIN_USER_NAMES = frozenset({a.name for a in USER.attributes} | {"externalId"})
_MEMBER_TYPES = {"user": groups_pb2.MEMBER_TYPE_USER, "group": groups_pb2.MEMBER_TYPE_GROUP}


def _json_number(value: Any) -> Any:
    """Struct numbers are doubles: whole numbers back as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value


def struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _json_number(v) for k, v in json_format.MessageToDict(struct).items()}


def _mv_doc(mv: Any, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scim, f in names.items():
        if f == "primary":
            if mv.HasField("primary"):  # `primary: false` as the client set it
                out["primary"] = mv.primary
        elif getattr(mv, f):
            out[scim] = getattr(mv, f)
    return out


def user_document(user: users_pb2.User, rtype: ResourceType) -> dict[str, Any]:
    """The attribute document of a stored user (what PATCH edits).

    Extension values are taken as stored: a core-namespace attribute `rtype`
    declares becomes a top-level attribute, one it does not declare (any more) is
    kept as it is under the core User URN, and every other schema's object is kept
    under its URN (a declared one's canonical URN)."""
    doc: dict[str, Any] = {}
    present = {fd.name for fd, _ in user.ListFields()}
    for scim, f in USER_SIMPLE.items():
        if f in present:
            doc[scim] = getattr(user, f)
    if "external_id" in present:
        doc["externalId"] = user.external_id
    if "name" in present:
        name = {scim: getattr(user.name, f) for scim, f in NAME.items() if getattr(user.name, f)}
        if name:
            doc["name"] = name
    if user.HasField("active"):
        doc["active"] = user.active
    for scim, f in MULTI.items():
        if f in present:
            doc[scim] = [_mv_doc(mv, MULTI_SUB) for mv in getattr(user, f)]
    if "addresses" in present:
        doc["addresses"] = [_mv_doc(a, ADDRESS) for a in user.addresses]
    if "enterprise" in present:
        ent = {
            s: getattr(user.enterprise, f)
            for s, f in ENTERPRISE_FIELDS.items()
            if getattr(user.enterprise, f)
        }
        if user.enterprise.manager.value:
            ent["manager"] = {"value": user.enterprise.manager.value}
        if ent:
            doc[ENTERPRISE_SCHEMA] = ent
    for urn, value in struct_dict(user.extensions).items():
        if urn.lower() != USER_SCHEMA.lower() or not isinstance(value, dict):
            known = rtype.extension(urn)
            doc[known.id if known is not None else urn] = value
            continue
        kept: dict[str, Any] = {}
        for key, sub_value in value.items():
            attr = rtype.schema.attr(key)
            if attr is not None and attr.name not in _BUILTIN_USER_NAMES:
                doc[attr.name] = sub_value
            else:
                kept[key] = sub_value
        if kept:
            doc[USER_SCHEMA] = kept
    return doc


def _struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    try:
        s.update(doc)
    except (ValueError, TypeError) as exc:  # pragma: no cover - JSON always fits
        raise InvalidValue(f"extension attributes cannot be stored: {exc}") from None
    return s


def custom_extensions(doc: dict[str, Any], core: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The document's objects of schemas other than `core` and the `known` extensions."""
    skip = {core.lower(), *(k.lower() for k in known)}
    return {
        k: v
        for k, v in doc.items()
        if k.lower().startswith("urn:") and k.lower() not in skip and v is not None
    }


def _core_extras(doc: dict[str, Any]) -> dict[str, Any]:
    """Tenant-declared core-namespace attributes: the top-level names that are not
    built in, over any kept as they were stored (under the core User URN)."""
    out: dict[str, Any] = {}
    stored = doc.get(USER_SCHEMA)
    if isinstance(stored, dict):
        out.update({k: v for k, v in stored.items() if v is not None})
    for key, value in doc.items():
        if key in _BUILTIN_USER_NAMES or key.lower().startswith("urn:") or value is None:
            continue
        if isinstance(value, list) and not value:
            continue
        out[key] = value
    return out


def _fill(message: Any, item: dict[str, Any], names: dict[str, str]) -> None:
    for scim, f in names.items():
        v = item.get(scim)
        if v is not None:
            setattr(message, f, v)


def user_from_document(doc: dict[str, Any]) -> users_pb2.User:
    """A `User` from a document (meta and read-only fields are the caller's)."""
    user = users_pb2.User()
    _fill(user, doc, USER_SIMPLE)
    if doc.get("externalId") is not None:
        user.external_id = doc["externalId"]
    if doc.get("active") is not None:
        user.active = doc["active"]
    name = doc.get("name")
    if name:
        _fill(user.name, name, NAME)
    for scim, f in MULTI.items():
        for item in doc.get(scim) or ():
            _fill(getattr(user, f).add(), item, MULTI_SUB)
    for item in doc.get("addresses") or ():
        _fill(user.addresses.add(), item, ADDRESS)
    ent = doc.get(ENTERPRISE_SCHEMA)
    if ent:
        _fill(user.enterprise, ent, ENTERPRISE_FIELDS)
        manager = ent.get("manager")
        if manager and manager.get("value"):
            user.enterprise.manager.value = manager["value"]
    ext = custom_extensions(doc, USER_SCHEMA, (ENTERPRISE_SCHEMA,))
    core = _core_extras(doc)
    if core:
        ext[USER_SCHEMA] = core
    if ext:
        user.extensions.CopyFrom(_struct(ext))
    return user


# -- values -------------------------------------------------------------------------------


def json_value(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as plain JSON (whole numbers as integers)."""
    try:
        return _json_number(json_format.MessageToDict(value))
    except ValueError:  # NaN or an infinity: no JSON number
        raise InvalidValue(
            "a PATCH value must be JSON with finite numbers", field="value"
        ) from None


def coerce(attr: Attr, value: Any, where: str) -> Any:
    """Checks `value` against `attr`; its canonical form (None = unassigned)."""
    if value is None:
        return None
    if attr.multi_valued:
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if attr.type == "complex" and not isinstance(item, dict) and item is not None:
                raise InvalidValue(
                    f"{where}[{i}] must be an object, not {type_name(item)}", field=attr.name
                )
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
                raise InvalidValue(
                    f"{where} must be an object, not {type_name(value)}", field=attr.name
                )
        out: dict[str, Any] = {}
        for key, sub_value in value.items():
            sub = attr.sub(key)
            if sub is None:
                raise InvalidValue(f"{where} has no sub-attribute {key!r}", field=attr.name)
            if sub.read_only or sub.name == "$ref":
                continue  # RFC 7643 §2.2: read-only values given are ignored; $ref is derived
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
        raise InvalidValue(f"{where} must be a boolean, not {type_name(value)}", field=attr.name)
    if attr.type in ("string", "reference", "binary", "dateTime"):
        if not isinstance(value, str):
            raise InvalidValue(f"{where} must be a string, not {type_name(value)}", field=attr.name)
        if attr.type == "dateTime" and not is_datetime(value):
            raise InvalidValue(
                f"{where} must be a dateTime (xsd:dateTime, e.g. 2024-04-10T12:00:00Z), "
                f"not {value!r}",
                field=attr.name,
            )
        return value
    number = finite_number(value)
    if attr.type == "integer":
        if number is None or not float(number).is_integer():
            raise InvalidValue(f"{where} must be an integer, not {shown(value)}", field=attr.name)
        return int(number)
    if number is None:  # decimal
        raise InvalidValue(f"{where} must be a number, not {shown(value)}", field=attr.name)
    return number


# -- value filters, evaluated on one element of a multi-valued attribute ---------------------


def _literal(v: common_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    return getattr(v, kind)


def _get_ci(obj: dict[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    low = name.lower()
    for key, value in obj.items():
        if key.lower() == low:
            return value
    return None


def _values_at(obj: dict[str, Any], path: common_pb2.AttributePath) -> list[Any]:
    value = _get_ci(obj, path.attribute)
    items = value if isinstance(value, list) else [value]
    if not path.sub_attribute:
        return items
    return [_get_ci(i, path.sub_attribute) for i in items if isinstance(i, dict)]


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _pair(actual: Any, expected: Any) -> tuple[Any, Any] | None:
    """Comparable forms of two JSON values, or None when their types differ."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        # Entra ID compares booleans given as strings ("True").
        a, e = _as_bool(actual), _as_bool(expected)
        return None if a is None or e is None else (a, e)
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual, expected
    if isinstance(actual, str) and isinstance(expected, str):
        # Every sub-attribute a value filter can name (value, type, display,
        # primary, an address's parts) is caseExact false in the catalogue.
        return actual.lower(), expected.lower()
    return None


def _present(value: Any) -> bool:
    return value is not None and value not in ("", [], {})


_NAMES = {
    P.COMPARE_OP_EQ: "eq",
    P.COMPARE_OP_NE: "ne",
    P.COMPARE_OP_CO: "co",
    P.COMPARE_OP_SW: "sw",
    P.COMPARE_OP_EW: "ew",
    P.COMPARE_OP_GT: "gt",
    P.COMPARE_OP_GE: "ge",
    P.COMPARE_OP_LT: "lt",
    P.COMPARE_OP_LE: "le",
    P.COMPARE_OP_PR: "pr",
}


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "pr":
        return _present(actual)
    if expected is None:
        return (not _present(actual)) if op == "eq" else (_present(actual) if op == "ne" else False)
    pair = _pair(actual, expected)
    if pair is None:
        return op == "ne"
    a, e = pair
    if op == "eq":
        return bool(a == e)
    if op == "ne":
        return bool(a != e)
    if op in ("co", "sw", "ew"):
        if not (isinstance(a, str) and isinstance(e, str)):
            return False
        return e in a if op == "co" else a.startswith(e) if op == "sw" else a.endswith(e)
    if isinstance(a, bool):
        return False
    try:
        return bool({"gt": a > e, "ge": a >= e, "lt": a < e, "le": a <= e}[op])
    except TypeError:
        return False


def matches(f: common_pb2.Filter, obj: dict[str, Any]) -> bool:
    """Whether a JSON object (one element of e.g. `emails`) satisfies `f`."""
    node = f.WhichOneof("node")
    if node == "compare":
        cmp = f.compare
        op = _NAMES.get(cmp.op)
        if op is None:
            raise InvalidPath(f"a value filter has an unknown operator ({cmp.op})")
        values = _values_at(obj, cmp.path)
        expected = _literal(cmp.value)
        if op == "ne":
            return all(_compare(v, "ne", expected) for v in values)
        return any(_compare(v, op, expected) for v in values)
    if node == "and":
        return all(matches(n, obj) for n in getattr(f, "and").filters)
    if node == "or":
        return any(matches(n, obj) for n in getattr(f, "or").filters)
    if node == "not":
        return not matches(getattr(f, "not"), obj)
    if node == "value_filter":
        elements = _get_ci(obj, f.value_filter.path.attribute)
        if not isinstance(elements, list):
            elements = [elements] if isinstance(elements, dict) else []
        return any(isinstance(e, dict) and matches(f.value_filter.filter, e) for e in elements)
    raise InvalidPath("a value filter is empty")


def equality_terms(f: common_pb2.Filter) -> dict[str, Any] | None:
    """For `a eq x and b eq y`: {"a": x, "b": y}; None for any other shape."""
    items = list(getattr(f, "and").filters) if f.WhichOneof("node") == "and" else [f]
    terms: dict[str, Any] = {}
    for item in items:
        if item.WhichOneof("node") != "compare":
            return None
        cmp = item.compare
        if cmp.op != P.COMPARE_OP_EQ or cmp.path.schema or cmp.path.sub_attribute:
            return None
        terms[cmp.path.attribute] = _literal(cmp.value)
    return terms


# -- operations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    """`attribute[value_filter].sub_attribute` in `schema`; all but `attribute`
    optional, and `attribute` "" for a path naming a whole extension schema."""

    schema: str
    attribute: str
    value_filter: common_pb2.Filter | None = None
    sub_attribute: str = ""

    @property
    def text(self) -> str:
        s = self.attribute
        if self.value_filter is not None:
            s += "[...]"
        if self.sub_attribute:
            s += f".{self.sub_attribute}"
        return f"{self.schema}:{s}" if self.schema else s


@dataclass(frozen=True, slots=True)
class Operation:
    op: str  # add | remove | replace
    path: Path | None
    value: Any
    has_value: bool
    index: int

    @property
    def where(self) -> str:
        return f"Operations[{self.index}]"


def operations(protos: Sequence[common_pb2.PatchOperation]) -> list[Operation]:
    """The contract's operations as applied here; INVALID_ARGUMENT if malformed."""
    if not protos:
        raise InvalidValue("a PATCH needs at least one operation", field="operations")
    out = []
    for i, p in enumerate(protos):
        op = _OPS.get(p.op)
        if op is None:
            raise InvalidValue(f"Operations[{i}]: op must be add, remove or replace", field="op")
        path = None
        if p.HasField("path"):
            ap = p.path.path
            if not ap.attribute.strip() and not ap.schema.strip():
                raise InvalidPath(f"Operations[{i}]: the path is empty", field="path")
            vf = p.path.value_filter if p.path.HasField("value_filter") else None
            path = Path(ap.schema.strip(), ap.attribute.strip(), vf, ap.sub_attribute.strip())
        has_value = p.HasField("value")
        value = json_value(p.value) if has_value else None
        if op in ("add", "replace") and not has_value:
            raise InvalidValue(f"Operations[{i}]: {op!r} needs a value", field="value")
        out.append(Operation(op, path, value, has_value, i))
    return out


@dataclass
class _Target:
    """Where a path points in a document."""

    container: dict[str, Any]  # the object holding the attribute
    key: str  # canonical attribute name in `container`
    attr: Attr | None  # None for opaque (custom extension) attributes
    whole: bool = False  # the path names a whole extension object


def _find_key(obj: dict[str, Any], name: str) -> str | None:
    if name in obj:
        return name
    low = name.lower()
    for k in obj:
        if k.lower() == low:
            return k
    return None


def _split_urn_key(key: str) -> Path:
    """A schema-qualified attribute given as a key ("urn:...:User:department")."""
    schema, _, name = key.rpartition(":")
    attribute, _, sub = name.partition(".")
    return Path(schema, attribute, None, sub)


class DocumentPatcher:
    """Applies operations to the document of one resource of type `rtype`."""

    def __init__(self, rtype: ResourceType, doc: dict[str, Any]) -> None:
        self.rtype = rtype
        self.doc = copy.deepcopy(doc)

    def apply(self, ops: Iterable[Operation]) -> dict[str, Any]:
        for op in ops:
            self.apply_one(op.op, op.path, op.value, op.where)
        return self.doc

    def apply_one(self, op: str, path: Path | None, value: Any, where: str) -> None:
        if path is None:
            self._apply_pathless(op, value, where)
            return
        target = self._resolve(path)
        if target is None:
            return  # a write-only attribute the service does not store
        if target.whole:
            self._apply_whole_extension(op, target, value, where)
        elif target.attr is None:
            self._apply_opaque(op, target, path, value, where)
        else:
            self._apply_attr(op, target, path, value, where)

    # -- path-less ------------------------------------------------------------------

    def _apply_pathless(self, op: str, value: Any, where: str) -> None:
        # RFC 7644 §3.5.2.1 / §3.5.2.3: without a path the value is an object of
        # attributes to add or replace; remove needs a path (§3.5.2.2).
        if op == "remove":
            raise NoTarget(f"{where}: 'remove' needs a path", field="path")
        if not isinstance(value, dict):
            raise InvalidValue(f"{where}: without a path, the value must be an object")
        for key, sub_value in value.items():
            low = key.lower()
            if low in _READ_ONLY_NAMES or low in _IGNORED_NAMES:
                continue  # RFC 7643 §2.2: read-only values provided are ignored
            if low == self.rtype.schema.id.lower() and isinstance(sub_value, dict):
                # Core attributes nested under their own schema URN, as on POST.
                self._apply_pathless(op, sub_value, where)
                continue
            if low.startswith("urn:"):
                if isinstance(sub_value, dict) or sub_value is None:
                    ext = self._extension_key(key)
                    if ext is not None:
                        self._apply_whole_extension(
                            op, _Target(self.doc, ext, None, whole=True), sub_value, where
                        )
                        continue
                self.apply_one(op, _split_urn_key(key), sub_value, where)
                continue
            self.apply_one(op, Path("", key), sub_value, where)

    def _extension_key(self, key: str) -> str | None:
        """The document key of a whole-extension URN (known or custom), else None."""
        known = self.rtype.extension(key)
        if known is not None:
            return known.id
        low = key.lower()
        if low == self.rtype.schema.id.lower():
            return None
        for s in self.rtype.all_schemas:
            if low.startswith(s.id.lower() + ":"):
                return None  # a schema-qualified attribute path
        # Another schema's URN with an object value: a custom extension.
        return _find_key(self.doc, key) or key

    # -- resolution ------------------------------------------------------------------

    def _resolve(self, path: Path) -> _Target | None:
        schema = path.schema
        core = self.rtype.schema
        if not schema or schema.lower() == core.id.lower():
            if not path.attribute:
                raise InvalidPath(f"{path.text!r} names a schema, not an attribute")
            low = path.attribute.lower()
            if low in _IGNORED_NAMES and self.rtype.name == "User":
                return None
            if low in _READ_ONLY_NAMES:
                raise Mutability(
                    f"{path.attribute!r} is read-only and cannot be modified", field=path.attribute
                )
            if low == "externalid":
                return _Target(self.doc, "externalId", EXTERNAL_ID)
            attr = core.attr(path.attribute)
            if attr is None:
                raise InvalidPath(
                    f"{path.text!r}: {path.attribute!r} is not an attribute of "
                    f"{self.rtype.name} resources",
                    field=path.attribute,
                )
            if attr.read_only:
                raise Mutability(
                    f"{attr.name!r} is read-only and cannot be modified", field=attr.name
                )
            return _Target(self.doc, attr.name, attr)
        known = self.rtype.extension(schema)
        if known is not None:
            if not path.attribute:
                return _Target(self.doc, known.id, None, whole=True)
            attr = known.attr(path.attribute)
            if attr is None:
                raise InvalidPath(
                    f"{path.text!r}: no attribute {path.attribute!r} in {known.id}",
                    field=path.attribute,
                )
            if attr.read_only:
                raise Mutability(
                    f"{attr.name!r} is read-only and cannot be modified", field=attr.name
                )
            container = self.doc.get(known.id)
            if not isinstance(container, dict):
                container = {}
                self.doc[known.id] = container
            return _Target(container, attr.name, attr)
        if path.attribute and path.value_filter is None and not path.sub_attribute:
            # A declared extension's URN as the path, in any letter case.
            whole = self.rtype.extension(f"{schema}:{path.attribute}")
            if whole is not None:
                return _Target(self.doc, whole.id, None, whole=True)
        if schema.lower().startswith(_CORE_PREFIX):
            raise InvalidPath(f"{path.text!r} is not a path of a {self.rtype.name}")
        # A custom extension: either the whole object (the path is its URN,
        # conventionally ending in the resource type's name) or one opaque
        # attribute in it.
        full = f"{schema}:{path.attribute}" if path.attribute else schema
        whole_key = _find_key(self.doc, full)
        simple = path.value_filter is None and not path.sub_attribute
        if simple and (whole_key is not None or path.attribute.lower() == self.rtype.name.lower()):
            return _Target(self.doc, whole_key or full, None, whole=True)
        if not path.attribute:
            return _Target(self.doc, _find_key(self.doc, schema) or schema, None, whole=True)
        ext_key = _find_key(self.doc, schema) or schema
        container = self.doc.get(ext_key)
        if not isinstance(container, dict):
            container = {}
            self.doc[ext_key] = container
        return _Target(container, _find_key(container, path.attribute) or path.attribute, None)

    # -- whole extension objects ---------------------------------------------------------

    def _apply_whole_extension(self, op: str, target: _Target, value: Any, where: str) -> None:
        key = target.key
        if op == "remove" or value is None:
            target.container.pop(key, None)
            return
        if not isinstance(value, dict):
            raise InvalidValue(f"{where}: the value for {key!r} must be an object", field=key)
        # The value may carry its own "schemas" member, as a resource does (Okta and
        # conformance checkers send it): it names the schema, it is no attribute.
        value = {k: v for k, v in value.items() if k.lower() != "schemas"}
        known = self.rtype.extension(key)
        if known is not None:
            for sub_key, sub_value in value.items():
                self.apply_one(op, Path(known.id, sub_key), sub_value, where)
            return
        current = target.container.get(key)
        merged = dict(current) if isinstance(current, dict) else {}
        # add and replace both merge at the object level (RFC 7644 §3.5.2.1/3).
        merged.update(value)
        target.container[key] = merged

    # -- opaque (custom extension) attributes ---------------------------------------------

    def _apply_opaque(self, op: str, target: _Target, path: Path, value: Any, where: str) -> None:
        c, key = target.container, target.key
        if path.value_filter is not None:
            elements = c.get(key)
            if not isinstance(elements, list):
                elements = []
            hits = [e for e in elements if isinstance(e, dict) and matches(path.value_filter, e)]
            if op == "remove":
                if path.sub_attribute:
                    for e in hits:
                        k = _find_key(e, path.sub_attribute)
                        if k is not None:
                            del e[k]
                else:
                    c[key] = [e for e in elements if not any(e is h for h in hits)]
                return
            if not hits:
                raise NoTarget(f"{where}: no value of {path.text!r} matches the filter")
            for e in hits:
                if path.sub_attribute:
                    e[_find_key(e, path.sub_attribute) or path.sub_attribute] = value
                elif isinstance(value, dict):
                    e.update(value)
            return
        if path.sub_attribute:
            obj = c.get(key)
            if op == "remove":
                if isinstance(obj, dict):
                    obj.pop(_find_key(obj, path.sub_attribute) or path.sub_attribute, None)
                return
            if not isinstance(obj, dict):
                obj = {}
                c[key] = obj
            obj[_find_key(obj, path.sub_attribute) or path.sub_attribute] = value
            return
        if op == "remove":
            c.pop(key, None)
        elif op == "add" and isinstance(c.get(key), list):
            items = value if isinstance(value, list) else [value]
            c[key] = c[key] + [v for v in items if v not in c[key]]
        else:
            c[key] = value

    # -- typed attributes -----------------------------------------------------------------

    def _apply_attr(self, op: str, target: _Target, path: Path, value: Any, where: str) -> None:
        attr = target.attr
        assert attr is not None
        c, key = target.container, target.key
        name = path.text
        if path.value_filter is not None:
            if not (attr.multi_valued and attr.type == "complex"):
                raise InvalidPath(
                    f"{name!r}: only multi-valued attributes take a value filter", field=attr.name
                )
            self._apply_filtered(op, target, path, value, where)
            return
        if path.sub_attribute:
            sub = attr.sub(path.sub_attribute)
            if attr.type != "complex" or sub is None:
                raise InvalidPath(
                    f"{name!r}: {attr.name!r} has no sub-attribute {path.sub_attribute!r}",
                    field=attr.name,
                )
            if sub.read_only:
                raise Mutability(
                    f"{attr.name}.{sub.name} is read-only and cannot be modified", field=attr.name
                )
            if attr.multi_valued:
                self._apply_sub_of_all(op, target, sub, value)
                return
            obj = c.get(key)
            if op == "remove":
                if isinstance(obj, dict):
                    obj.pop(sub.name, None)
                    if not obj:
                        c.pop(key, None)
                return
            new = coerce(sub, value, f"{attr.name}.{sub.name}")
            if not isinstance(obj, dict):
                obj = {}
                c[key] = obj
            if new is None:
                obj.pop(sub.name, None)
            else:
                obj[sub.name] = new
            return
        if op == "remove":
            if attr.multi_valued and value is not None and attr.type != "complex":
                # Remove the listed values of a multi-valued simple attribute.
                drop_simple = coerce(attr, value, attr.name)
                c[key] = [e for e in c.get(key) or [] if e not in drop_simple]
                return
            if attr.multi_valued and value is not None:
                # Not in RFC 7644 but sent by Entra ID: remove the listed values.
                drop = coerce(attr, value, attr.name)
                drop_values = {str(d.get("value", "")).lower() for d in drop}
                c[key] = [
                    e
                    for e in c.get(key) or []
                    if str(e.get("value", "")).lower() not in drop_values
                ]
                return
            c.pop(key, None)  # RFC 7644 §3.5.2.2: the attribute becomes unassigned
            return
        new = coerce(attr, value, attr.name)
        if new is None or new == []:
            if op == "replace":
                c.pop(key, None)
            return
        if attr.multi_valued:
            if op == "add":
                # RFC 7644 §3.5.2.1: values are added to the existing set.
                current = list(c.get(key) or [])
                current += [v for v in new if v not in current]
                c[key] = current
            else:
                c[key] = new  # RFC 7644 §3.5.2.3: the whole set is replaced
            if attr.type == "complex":
                _one_primary(c[key], [v for v in new if v.get("primary")])
        elif attr.type == "complex":
            # Sub-attributes not given are left unchanged (RFC 7644 §3.5.2.3).
            existing = c.get(key)
            merged = dict(existing) if isinstance(existing, dict) else {}
            merged.update(new)
            c[key] = merged
        else:
            c[key] = new

    def _apply_sub_of_all(self, op: str, target: _Target, sub: Attr, value: Any) -> None:
        # "emails.value": the sub-attribute of every value.
        elements: list[dict[str, Any]] = target.container.get(target.key) or []
        if op == "remove":
            for e in elements:
                e.pop(sub.name, None)
            target.container[target.key] = [e for e in elements if e]
            return
        new = coerce(sub, value, f"{target.key}.{sub.name}")
        if not elements:
            if new is not None:
                target.container[target.key] = [{sub.name: new}]
            return
        for e in elements:
            e[sub.name] = new

    def _apply_filtered(self, op: str, target: _Target, path: Path, value: Any, where: str) -> None:
        attr = target.attr
        assert attr is not None and path.value_filter is not None
        elements: list[dict[str, Any]] = list(target.container.get(target.key) or [])
        hits = [e for e in elements if matches(path.value_filter, e)]
        sub = None
        if path.sub_attribute:
            sub = attr.sub(path.sub_attribute)
            if sub is None:
                raise InvalidPath(
                    f"{path.text!r}: {attr.name!r} has no sub-attribute {path.sub_attribute!r}",
                    field=attr.name,
                )
            if sub.read_only:
                raise Mutability(
                    f"{attr.name}.{sub.name} is read-only and cannot be modified", field=attr.name
                )
        if op == "remove":
            if sub is not None:
                for e in hits:
                    e.pop(sub.name, None)
                elements = [e for e in elements if e]
            else:
                elements = [e for e in elements if not any(e is h for h in hits)]
            target.container[target.key] = elements
            return
        if sub is not None:
            patch_obj = {sub.name: coerce(sub, value, f"{attr.name}.{sub.name}")}
        else:
            coerced = coerce(attr, value, attr.name)
            if isinstance(coerced, list):
                if len(coerced) != 1:
                    raise InvalidValue(
                        f"{where}: expected one value for {path.text!r}", field=attr.name
                    )
                coerced = coerced[0]
            patch_obj = coerced or {}
        if not hits:
            # RFC 7644 §3.5.2.3 wants noTarget here; Entra ID instead expects
            # 'emails[type eq "work"].value' to create the work email, so a
            # filter made of `eq` terms creates the element it describes.
            terms = equality_terms(path.value_filter)
            if terms is None:
                raise NoTarget(f"{where}: no value of {attr.name!r} matches {path.text!r}")
            seed = coerce(attr, [terms], attr.name)
            element = dict(seed[0]) if seed else {}
            element.update({k: v for k, v in patch_obj.items() if v is not None})
            elements.append(element)
            hits = [element]
        else:
            for e in hits:
                if sub is None and op == "replace":
                    e.clear()  # RFC 7644 §3.5.2.3: matched values are replaced
                for k, v in patch_obj.items():
                    if v is None:
                        e.pop(k, None)
                    else:
                        e[k] = v
        target.container[target.key] = [e for e in elements if e]
        _one_primary(target.container[target.key], [h for h in hits if h.get("primary")])


def _one_primary(elements: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> None:
    """RFC 7644 §3.5.2: a value set primary makes the server set `primary` to false on
    any other value that had it (the one chosen last wins)."""
    if not chosen:
        return
    keep = chosen[-1]
    for e in elements:
        if e is not keep and e.get("primary") and e != keep:
            e["primary"] = False


def apply(rtype: ResourceType, doc: dict[str, Any], ops: Iterable[Operation]) -> dict[str, Any]:
    """The document after applying `ops` in order (the input is not modified)."""
    return DocumentPatcher(rtype, doc).apply(ops)


# -- groups: attributes patched, membership planned ---------------------------------------------


@dataclass
class GroupPlan:
    """What one group PATCH changes: attributes (the patched document) and members."""

    doc: dict[str, Any]
    clear_members: bool = False
    add_members: dict[str, groups_pb2.Member] = field(default_factory=dict)
    remove_members: set[str] = field(default_factory=set)

    def add(self, member: groups_pb2.Member) -> None:
        self.add_members[member.value] = member
        self.remove_members.discard(member.value)

    def remove(self, member_id: str) -> None:
        self.add_members.pop(member_id, None)
        if not self.clear_members:
            self.remove_members.add(member_id)

    @property
    def touches_members(self) -> bool:
        return self.clear_members or bool(self.add_members) or bool(self.remove_members)

    def clear(self) -> None:
        self.clear_members = True
        self.add_members.clear()
        self.remove_members.clear()


def group_document(group: groups_pb2.Group) -> dict[str, Any]:
    """A group's attribute document, without members."""
    doc: dict[str, Any] = {}
    if group.display_name:
        doc["displayName"] = group.display_name
    if group.external_id:
        doc["externalId"] = group.external_id
    doc.update(struct_dict(group.extensions))
    return doc


def member(item: Any, where: str) -> groups_pb2.Member:
    """A member from its JSON (`{"value": id, "type": ...}` or a bare id)."""
    if isinstance(item, str):
        item = {"value": item}
    if not isinstance(item, dict):
        raise InvalidValue(f"{where} must be an object with a 'value'", field="members")
    clean: dict[str, str] = {}
    for k, v in item.items():
        low = k.lower()
        if v is None or low == "display":  # display is read-only; "$ref": null (Entra)
            continue
        if low not in ("value", "type", "$ref"):
            raise InvalidValue(f"{where} has no sub-attribute {k!r}", field="members")
        if not isinstance(v, str):
            raise InvalidValue(f"{where}.{k} must be a string", field="members")
        clean[low] = v
    value = clean.get("value")
    if not value and clean.get("$ref"):
        # RFC 7643 §4.2: `$ref` is the member's URI; its last segment is the id.
        value = clean["$ref"].rstrip("/").rpartition("/")[2]
    if not value:
        raise InvalidValue(f"{where} needs a 'value' (the member's id)", field="members")
    m = groups_pb2.Member(value=value)
    mtype = clean.get("type")
    if mtype:
        if mtype.lower() not in _MEMBER_TYPES:
            raise InvalidValue(
                f"{where}.type must be 'User' or 'Group', not {mtype!r}", field="members"
            )
        m.type = _MEMBER_TYPES[mtype.lower()]
    return m


def _member_list(value: Any, where: str) -> list[groups_pb2.Member]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [member(raw, f"{where}[{i}]") for i, raw in enumerate(items)]


def _member_ids(f: common_pb2.Filter, text: str) -> list[str]:
    """Ids from `value eq "a" [or value eq "b" ...]`; anything else is refused."""
    items = list(getattr(f, "or").filters) if f.WhichOneof("node") == "or" else [f]
    ids = []
    for item in items:
        cmp = item.compare
        if not (
            item.WhichOneof("node") == "compare"
            and cmp.op == P.COMPARE_OP_EQ
            and cmp.path.attribute.lower() == "value"
            and not cmp.path.sub_attribute
            and cmp.value.WhichOneof("kind") == "string_value"
        ):
            raise InvalidPath(
                f"{text!r}: members can be selected only by id, e.g. "
                'members[value eq "2819c223-7f76-453a-919d-413861904646"]',
                field="members",
            )
        ids.append(cmp.value.string_value)
    return ids


def _is_members(path: Path, rtype: ResourceType) -> bool:
    return path.attribute.lower() == "members" and (
        not path.schema or path.schema.lower() == rtype.schema.id.lower()
    )


def plan_group(rtype: ResourceType, doc: dict[str, Any], ops: Iterable[Operation]) -> GroupPlan:
    """Splits a group PATCH into attribute changes and O(k) member changes.

    `doc` is the group's document without members."""
    patcher = DocumentPatcher(rtype, doc)
    plan = GroupPlan(doc=patcher.doc)
    for op in ops:
        if op.path is None:
            if op.op == "remove":
                raise NoTarget(f"{op.where}: 'remove' needs a path", field="path")
            if not isinstance(op.value, dict):
                raise InvalidValue(f"{op.where}: without a path, the value must be an object")
            rest = {}
            for key, value in op.value.items():
                if key.lower() == "members":
                    _member_op(plan, op.op, None, value, where=op.where)
                else:
                    rest[key] = value
            if rest:
                patcher.apply_one(op.op, None, rest, op.where)
            continue
        if _is_members(op.path, rtype):
            _member_op(plan, op.op, op.path, op.value, where=op.where)
        else:
            patcher.apply_one(op.op, op.path, op.value, op.where)
    return plan


def _member_op(plan: GroupPlan, op: str, path: Path | None, value: Any, *, where: str) -> None:
    text = path.text if path is not None else "members"
    if path is not None and path.sub_attribute:
        raise Mutability(
            f"{text!r}: a member's sub-attributes are immutable; remove and add the member instead",
            field="members",
        )
    if path is not None and path.value_filter is not None:
        if op != "remove":
            raise InvalidPath(
                f"{text!r}: members selected by a filter can only be removed; "
                "use 'add' with path 'members' to add members",
                field="members",
            )
        for member_id in _member_ids(path.value_filter, text):
            plan.remove(member_id)
        return
    if op == "add":
        for m in _member_list(value, f"{where}.value"):
            plan.add(m)
    elif op == "replace":
        # RFC 7644 §3.5.2.3: the member set is replaced as a whole.
        members = _member_list(value, f"{where}.value")
        plan.clear()
        for m in members:
            plan.add(m)
    elif value not in (None, [], {}):
        # Not in RFC 7644 but sent by Entra ID: remove the listed members.
        for m in _member_list(value, f"{where}.value"):
            plan.remove(m.value)
    else:
        plan.clear()  # RFC 7644 §3.5.2.2: remove without a filter empties the set
