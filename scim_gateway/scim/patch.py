"""SCIM PATCH (RFC 7644 §3.5.2): the path grammar and the operations.

    PATH = attrPath / valuePath [subAttr]

Users are patched in memory: the operations are applied in order to the
user's normalized document (see `mapping`), and the result is written back with
one optimistic replace. Groups never load their member list: `plan_group_patch`
turns the operations into one `UpdateGroup` (attribute changes plus
add/remove/clear of members), so a membership change costs O(change).

Every malformed input raises a 400 `ScimError` (`invalidPath`, `invalidValue`,
`invalidSyntax`, `noTarget`, `mutability`); nothing else escapes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from identity.v1 import groups_pb2

from ..errors import (
    ScimError,
    invalid_path,
    invalid_syntax,
    invalid_value,
    mutability,
    no_target,
)
from .filter import (
    CORE_USER,
    ENTERPRISE_USER,
    MAX_FILTER_LENGTH,
    Compare,
    Node,
    Or,
    Parser,
    equality_terms,
    matches,
    split_attr_path,
)
from .mapping import coerce, known_extension, member_to_proto, mentions_custom
from .schemas import PATCH_OP, Attr, ResourceType

OPS = ("add", "remove", "replace")
# Common and read-only attributes a path-less value may carry (Okta sends the
# group's `id` with a rename); ignored there, refused as an explicit path.
_READ_ONLY_NAMES = frozenset({"id", "meta", "schemas", "groups"})
_IGNORED_NAMES = frozenset({"password"})
_CORE_PREFIX = "urn:ietf:params:scim:schemas:core:"
_CORE_SCHEMAS = frozenset(
    {"urn:ietf:params:scim:schemas:core:2.0:user", "urn:ietf:params:scim:schemas:core:2.0:group"}
)


@dataclass(frozen=True, slots=True)
class PatchPath:
    """`attribute[filter].sub_attribute`, all parts but `attribute` optional.

    `attribute` is "" for a path naming a whole extension schema.
    """

    schema: str
    attribute: str
    value_filter: Node | None = None
    sub_attribute: str = ""
    text: str = ""


def parse_path(text: str) -> PatchPath:
    """Parses a PATCH path; 400 invalidPath when malformed."""
    if not isinstance(text, str):
        raise invalid_path("'path' must be a string")
    stripped = text.strip()
    if not stripped:
        raise invalid_path("'path' is empty")
    if len(stripped) > MAX_FILTER_LENGTH:
        raise invalid_path(f"'path' is longer than {MAX_FILTER_LENGTH} characters")
    try:
        stripped.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_path("'path' is not valid UTF-8 text") from None
    p = Parser(stripped, _path_error)
    tok = p.next()
    if tok.kind != "word":
        raise _path_error(f"{stripped!r} does not start with an attribute name")
    attr = split_attr_path(tok.text, _path_error, allow_schema_only=True)
    value_filter: Node | None = None
    sub = attr.sub_attribute
    if p.at_punct("["):
        if not attr.attribute:
            raise _path_error(f"{stripped!r}: a schema cannot take a value filter")
        if sub:
            raise _path_error(f"{stripped!r}: a sub-attribute cannot take a value filter")
        p.next()
        value_filter = p.or_expr(in_brackets=True)
        p.expect_punct("]")
        if p.at_punct("."):
            p.next()
            name = p.next()
            if name.kind != "word" or "." in name.text or ":" in name.text:
                raise _path_error(f"{stripped!r}: expected a sub-attribute name after ']'.")
            sub = split_attr_path(name.text, _path_error).attribute
    end = p.peek()
    if end.kind != "end":
        raise _path_error(f"{stripped!r}: unexpected {end.text!r} at position {end.pos + 1}")
    return PatchPath(attr.schema, attr.attribute, value_filter, sub, stripped)


def _path_error(detail: str) -> ScimError:
    return invalid_path(f"invalid PATCH path: {detail}")


# -- request parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    op: str  # add | remove | replace
    path: PatchPath | None
    value: Any
    has_value: bool
    index: int


def _ci(obj: dict[str, Any], name: str) -> tuple[bool, Any]:
    if name in obj:
        return True, obj[name]
    low = name.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return True, v
    return False, None


def parse_operations(body: Any) -> list[Operation]:
    """The operations of a PatchOp request (RFC 7644 §3.5.2); 400 if malformed."""
    if not isinstance(body, dict):
        raise invalid_syntax("a PATCH body must be a JSON object")
    has, schemas = _ci(body, "schemas")
    if has and (
        not isinstance(schemas, list) or PATCH_OP.lower() not in [str(s).lower() for s in schemas]
    ):
        raise invalid_syntax(f"a PATCH request's 'schemas' must contain {PATCH_OP!r}")
    has, raw_ops = _ci(body, "Operations")
    if not has or not isinstance(raw_ops, list) or not raw_ops:
        raise invalid_syntax("a PATCH request needs a non-empty 'Operations' array")
    ops: list[Operation] = []
    for i, raw in enumerate(raw_ops):
        where = f"Operations[{i}]"
        if not isinstance(raw, dict):
            raise invalid_syntax(f"{where} must be an object")
        _, op = _ci(raw, "op")
        if not isinstance(op, str) or op.lower() not in OPS:
            raise invalid_syntax(f"{where}.op must be 'add', 'remove' or 'replace', not {op!r}")
        has_path, path_text = _ci(raw, "path")
        path = None
        if has_path and path_text is not None and path_text != "":
            if not isinstance(path_text, str):
                raise invalid_path(f"{where}.path must be a string")
            path = parse_path(path_text)
        has_value, value = _ci(raw, "value")
        op = op.lower()
        if op in ("add", "replace") and not has_value:
            raise invalid_value(f"{where}: '{op}' needs a 'value'")
        ops.append(Operation(op, path, value, has_value, i))
    return ops


# -- applying to a document ---------------------------------------------------------------------


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


class DocumentPatcher:
    """Applies operations to a normalized document of one resource type."""

    def __init__(self, rtype: ResourceType, doc: dict[str, Any]) -> None:
        self.rtype = rtype
        self.doc = copy.deepcopy(doc)

    def apply(self, ops: list[Operation]) -> dict[str, Any]:
        for op in ops:
            self.apply_one(op.op, op.path, op.value, f"Operations[{op.index}]")
        return self.doc

    def apply_one(self, op: str, path: PatchPath | None, value: Any, where: str) -> None:
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
            raise no_target(f"{where}: 'remove' needs a 'path'")
        if not isinstance(value, dict):
            raise invalid_value(f"{where}: without a 'path', 'value' must be an object")
        for key, sub_value in value.items():
            low = key.lower()
            if low in _READ_ONLY_NAMES or low in _IGNORED_NAMES:
                continue  # RFC 7643 §2.2: read-only values provided are ignored
            if low == self.rtype.schema.id.lower() and isinstance(sub_value, dict):
                # Core attributes nested under their own schema URN, as on POST.
                self._apply_pathless(op, sub_value, where)
                continue
            if low.startswith("urn:") and (isinstance(sub_value, dict) or sub_value is None):
                ext = self._extension_key(key)
                if ext is not None:
                    self._apply_whole_extension(
                        op, _Target(self.doc, ext, None, whole=True), sub_value, where
                    )
                    continue
            # Entra ID sends paths as keys: "name.givenName",
            # 'emails[type eq "work"].value', "urn:...:User:department".
            self.apply_one(op, parse_path(key), sub_value, where)

    def _extension_key(self, key: str) -> str | None:
        """The doc key of a whole-extension URN (known or custom), else None."""
        known = known_extension(self.rtype, key)
        if known is not None:
            return known
        low = key.lower()
        if low == self.rtype.schema.id.lower():
            return None
        for s in (self.rtype.schema, *self.rtype.extensions):
            if low.startswith(s.id.lower() + ":"):
                return None  # a schema-qualified attribute path
        # Another schema's URN with an object value: a custom extension.
        return _find_key(self.doc, key) or key

    # -- resolution ------------------------------------------------------------------

    def _resolve(self, path: PatchPath) -> _Target | None:
        schema = path.schema
        core = self.rtype.schema
        if not schema or schema.lower() == core.id.lower():
            if not path.attribute:
                raise invalid_path(f"{path.text!r} names a schema, not an attribute")
            low = path.attribute.lower()
            if low in _IGNORED_NAMES and self.rtype.name == "User":
                return None
            if low in _READ_ONLY_NAMES:
                raise mutability(f"{path.attribute!r} is read-only and cannot be modified")
            if low == "externalid":
                return _Target(self.doc, "externalId", Attr("externalId", case_exact=True))
            attr = core.attr(path.attribute)
            if attr is None:
                raise invalid_path(
                    f"{path.text!r}: {path.attribute!r} is not an attribute of "
                    f"{self.rtype.name} resources"
                )
            if attr.read_only:
                raise mutability(f"{attr.name!r} is read-only and cannot be modified")
            return _Target(self.doc, attr.name, attr)
        known = known_extension(self.rtype, schema)
        if known is not None:
            ext_schema = next(e for e in self.rtype.extensions if e.id == known)
            if not path.attribute:
                return _Target(self.doc, known, None, whole=True)
            attr = ext_schema.attr(path.attribute)
            if attr is None:
                raise invalid_path(f"{path.text!r}: no attribute {path.attribute!r} in {known}")
            if attr.read_only:
                raise mutability(f"{attr.name!r} is read-only and cannot be modified")
            container = self.doc.get(known)
            if not isinstance(container, dict):
                container = {}
                self.doc[known] = container
            return _Target(container, attr.name, attr)
        if path.attribute and path.value_filter is None and not path.sub_attribute:
            # A declared extension's URN as the path, in any letter case.
            whole = known_extension(self.rtype, f"{schema}:{path.attribute}")
            if whole is not None:
                return _Target(self.doc, whole, None, whole=True)
        if schema.lower() in _CORE_SCHEMAS or schema.lower().startswith(_CORE_PREFIX):
            raise invalid_path(f"{path.text!r} is not a path of a {self.rtype.name}")
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
        if op == "remove":
            target.container.pop(key, None)
            return
        if value is None:
            target.container.pop(key, None)
            return
        if not isinstance(value, dict):
            raise invalid_value(f"{where}: the value for {key!r} must be an object")
        if key in [e.id for e in self.rtype.extensions]:
            for sub_key, sub_value in value.items():
                self.apply_one(
                    op, PatchPath(key, sub_key, text=f"{key}:{sub_key}"), sub_value, where
                )
            return
        current = target.container.get(key)
        merged = dict(current) if isinstance(current, dict) else {}
        # add and replace both merge at the object level (RFC 7644 §3.5.2.1/3).
        merged.update(value)
        target.container[key] = merged

    # -- opaque (custom extension) attributes ---------------------------------------------

    def _apply_opaque(
        self, op: str, target: _Target, path: PatchPath, value: Any, where: str
    ) -> None:
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
                raise no_target(f"{where}: no value of {path.text!r} matches the filter")
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

    def _apply_attr(
        self, op: str, target: _Target, path: PatchPath, value: Any, where: str
    ) -> None:
        attr = target.attr
        assert attr is not None
        c, key = target.container, target.key
        name = path.text
        if path.value_filter is not None:
            if not (attr.multi_valued and attr.type == "complex"):
                raise invalid_path(f"{name!r}: only multi-valued attributes take a value filter")
            self._apply_filtered(op, target, path, value, where)
            return
        if path.sub_attribute:
            sub = attr.sub(path.sub_attribute)
            if attr.type != "complex" or sub is None:
                raise invalid_path(
                    f"{name!r}: {attr.name!r} has no sub-attribute {path.sub_attribute!r}"
                )
            if sub.read_only:
                raise mutability(f"{attr.name}.{sub.name} is read-only and cannot be modified")
            if attr.multi_valued:
                self._apply_sub_of_all(op, target, sub, value, where)
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
                # Not in RFC 7644 but sent by Entra ID: remove listed values.
                drop = coerce(attr, value, attr.name)
                drop_values = {str(d.get("value", "")).lower() for d in drop}
                kept = [
                    e
                    for e in c.get(key) or []
                    if str(e.get("value", "")).lower() not in drop_values
                ]
                c[key] = kept
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

    def _apply_sub_of_all(
        self, op: str, target: _Target, sub: Attr, value: Any, where: str
    ) -> None:
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

    def _apply_filtered(
        self, op: str, target: _Target, path: PatchPath, value: Any, where: str
    ) -> None:
        attr = target.attr
        assert attr is not None and path.value_filter is not None
        elements: list[dict[str, Any]] = list(target.container.get(target.key) or [])
        hits = [e for e in elements if matches(path.value_filter, e)]
        sub = None
        if path.sub_attribute:
            sub = attr.sub(path.sub_attribute)
            if sub is None:
                raise invalid_path(
                    f"{path.text!r}: {attr.name!r} has no sub-attribute {path.sub_attribute!r}"
                )
            if sub.read_only:
                raise mutability(f"{attr.name}.{sub.name} is read-only and cannot be modified")
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
            new_sub = coerce(sub, value, f"{attr.name}.{sub.name}")
            patch_obj = {sub.name: new_sub}
        else:
            coerced = coerce(attr, value, attr.name)
            if isinstance(coerced, list):
                if len(coerced) != 1:
                    raise invalid_value(f"{where}: expected one value for {path.text!r}")
                coerced = coerced[0]
            patch_obj = coerced or {}
        if not hits:
            # RFC 7644 §3.5.2.3 wants noTarget here; Entra ID instead expects
            # 'emails[type eq "work"].value' to create the work email, so a
            # filter made of `eq` terms creates the element it describes.
            terms = equality_terms(path.value_filter)
            if terms is None:
                raise no_target(f"{where}: no value of {attr.name!r} matches {path.text!r}")
            seed = coerce(attr, [terms], attr.name)
            element = dict(seed[0]) if seed else {}
            element.update({k: v for k, v in patch_obj.items() if v is not None})
            elements.append(element)
            hits = [element]
        else:
            for e in hits:
                if sub is None and op == "replace":
                    # RFC 7644 §3.5.2.3: matched values are replaced.
                    e.clear()
                for k, v in patch_obj.items():
                    if v is None:
                        e.pop(k, None)
                    else:
                        e[k] = v
        target.container[target.key] = [e for e in elements if e]
        _one_primary(target.container[target.key], [h for h in hits if h.get("primary")])


def _one_primary(elements: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> None:
    """RFC 7644 §3.5.2: setting one value primary clears it on the others."""
    if not chosen:
        return
    keep = chosen[-1]
    for e in elements:
        if e is not keep and e.get("primary") and e != keep:
            e["primary"] = False
    for e in elements:
        if e.get("primary") is False:
            del e["primary"]


def _path_is_custom(path: PatchPath) -> bool:
    schema = path.schema.lower()
    if schema == ENTERPRISE_USER.lower():
        return False
    if schema and schema != CORE_USER.lower():
        return True
    return bool(path.attribute) and mentions_custom({path.attribute: None})


def ops_mention_custom(ops: list[Operation]) -> bool:
    """Whether User PATCH operations name anything outside the built-in schemas
    (so the tenant's own schemas are needed to apply them)."""
    for op in ops:
        if op.path is not None:
            if _path_is_custom(op.path):
                return True
            continue
        if not isinstance(op.value, dict):
            continue
        for key, value in op.value.items():
            if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
                continue
            low = key.lower()
            if low == CORE_USER.lower():
                if isinstance(value, dict) and mentions_custom(value):
                    return True
                continue
            if low.startswith("urn:") and (isinstance(value, dict) or value is None):
                if mentions_custom({key: value}):
                    return True
                continue
            try:
                path = parse_path(key)
            except ScimError:
                continue  # applying the operation refuses it
            if _path_is_custom(path):
                return True
    return False


def apply_patch(rtype: ResourceType, doc: dict[str, Any], ops: list[Operation]) -> dict[str, Any]:
    """The document after applying `ops` in order (the input is not modified)."""
    return DocumentPatcher(rtype, doc).apply(ops)


# -- groups: one UpdateGroup per PATCH ----------------------------------------------------------


@dataclass
class GroupPlan:
    """What one group PATCH changes: attributes (via the patched doc) and members."""

    doc: dict[str, Any]
    clear_members: bool = False
    add_members: dict[str, groups_pb2.Member] = field(default_factory=dict)
    remove_members: set[str] = field(default_factory=set)
    touches_members: bool = False

    def add(self, member: groups_pb2.Member) -> None:
        self.add_members[member.value] = member
        self.remove_members.discard(member.value)
        self.touches_members = True

    def remove(self, member_id: str) -> None:
        self.add_members.pop(member_id, None)
        if not self.clear_members:
            self.remove_members.add(member_id)
        self.touches_members = True

    def clear(self) -> None:
        self.clear_members = True
        self.add_members.clear()
        self.remove_members.clear()
        self.touches_members = True


def _member_list(value: Any, where: str) -> list[groups_pb2.Member]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, raw in enumerate(items):
        w = f"{where}[{i}]"
        item = {"value": raw} if isinstance(raw, str) else raw
        if not isinstance(item, dict):
            raise invalid_value(f"{w} must be an object with a 'value'")
        clean: dict[str, Any] = {}
        for k, v in item.items():
            low = k.lower()
            if v is None or low == "display":  # display is read-only; "$ref": null (Entra)
                continue
            if low not in ("value", "type", "$ref"):
                raise invalid_value(f"{w} has no sub-attribute {k!r}")
            if not isinstance(v, str):
                raise invalid_value(f"{w}.{k} must be a string")
            clean[low if low != "$ref" else "$ref"] = v
        out.append(member_to_proto(clean, w))
    return out


def _member_ids(node: Node, text: str) -> list[str]:
    """Ids from `value eq "a" [or value eq "b" ...]`; anything else is refused."""
    items = node.items if isinstance(node, Or) else (node,)
    ids = []
    for item in items:
        if not (
            isinstance(item, Compare)
            and item.op == "eq"
            and item.path.attribute.lower() == "value"
            and not item.path.sub_attribute
            and isinstance(item.value, str)
        ):
            raise invalid_path(
                f"{text!r}: members can be selected only by id, e.g. "
                'members[value eq "2819c223-7f76-453a-919d-413861904646"]'
            )
        ids.append(item.value)
    return ids


def _is_members(path: PatchPath, rtype: ResourceType) -> bool:
    return path.attribute.lower() == "members" and (
        not path.schema or path.schema.lower() == rtype.schema.id.lower()
    )


def plan_group_patch(rtype: ResourceType, doc: dict[str, Any], ops: list[Operation]) -> GroupPlan:
    """Splits a group PATCH into attribute changes and O(k) member changes.

    `doc` is the group's normalized document without members.
    """
    patcher = DocumentPatcher(rtype, doc)
    plan = GroupPlan(doc=patcher.doc)
    for op in ops:
        where = f"Operations[{op.index}]"
        if op.path is None:
            if op.op == "remove":
                raise no_target(f"{where}: 'remove' needs a 'path'")
            if not isinstance(op.value, dict):
                raise invalid_value(f"{where}: without a 'path', 'value' must be an object")
            rest = {}
            for key, value in op.value.items():
                if key.lower() == "members":
                    _member_op(plan, op.op, None, value, where=where, text="members")
                else:
                    rest[key] = value
            if rest:
                patcher.apply_one(op.op, None, rest, where)
            continue
        if _is_members(op.path, rtype):
            _member_op(plan, op.op, op.path, op.value, where=where, text=op.path.text)
        else:
            patcher.apply_one(op.op, op.path, op.value, where)
    return plan


def _member_op(
    plan: GroupPlan,
    op: str,
    path: PatchPath | None,
    value: Any,
    *,
    where: str,
    text: str,
) -> None:
    if path is not None and path.sub_attribute:
        raise mutability(
            f"{text!r}: a member's sub-attributes are immutable; remove and add the member instead"
        )
    if path is not None and path.value_filter is not None:
        if op != "remove":
            raise invalid_path(
                f"{text!r}: members selected by a filter can only be removed; "
                "use 'add' with path 'members' to add members"
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


__all__ = [
    "DocumentPatcher",
    "GroupPlan",
    "Operation",
    "PatchPath",
    "apply_patch",
    "ops_mention_custom",
    "parse_operations",
    "parse_path",
    "plan_group_patch",
]
