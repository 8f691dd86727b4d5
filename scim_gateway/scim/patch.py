"""SCIM PATCH (RFC 7644 §3.5.2): the path grammar, and the request as the
contract's typed operations.

    PATH = attrPath / valuePath [subAttr]

The gateway only parses: `patch_operations` turns a PatchOp body into
identity.v1.PatchOperation messages (op; the path as an AttributePath plus the
value filter as the filter tree; the value as JSON), and one PatchUser or
PatchGroup call applies all of them in the core, atomically, under the
resource's row lock (identity_service.patching). No read before the write, no
retry: concurrent PATCHes of one resource are serialised by the core.

Malformed syntax raises a 400 `ScimError` here (`invalidSyntax`, `invalidPath`,
`invalidValue`); what an operation means for the stored resource (`noTarget`,
`mutability`, an unknown attribute) the core answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2

from scim_identity_api.v1 import common_pb2

from ..errors import ScimError, invalid_path, invalid_syntax, invalid_value
from .filter import MAX_FILTER_LENGTH, Node, Parser, split_attr_path
from .filter import to_proto as filter_proto
from .schemas import PATCH_OP

OPS = ("add", "remove", "replace")


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


# -- the contract's typed operations --------------------------------------------------------

_PROTO_OPS = {
    "add": common_pb2.PATCH_OP_ADD,
    "remove": common_pb2.PATCH_OP_REMOVE,
    "replace": common_pb2.PATCH_OP_REPLACE,
}


def _path_proto(path: PatchPath) -> common_pb2.PatchPath:
    out = common_pb2.PatchPath(
        path=common_pb2.AttributePath(
            schema=path.schema, attribute=path.attribute, sub_attribute=path.sub_attribute
        )
    )
    if path.value_filter is not None:
        out.value_filter.CopyFrom(filter_proto(path.value_filter))
    return out


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _value_proto(value: Any) -> struct_pb2.Value:
    if not _finite(value):
        raise invalid_value("a PATCH 'value' must be a JSON value with finite numbers")
    try:
        return json_format.ParseDict(value, struct_pb2.Value())
    except (json_format.ParseError, ValueError, TypeError, OverflowError):
        raise invalid_value("a PATCH 'value' must be a JSON value with finite numbers") from None


def _op_proto(
    op: str, path: PatchPath | None, value: Any, has_value: bool
) -> common_pb2.PatchOperation:
    out = common_pb2.PatchOperation(op=_PROTO_OPS[op])
    if path is not None:
        out.path.CopyFrom(_path_proto(path))
    if has_value:
        out.value.CopyFrom(_value_proto(value))
    return out


def _is_path_key(key: str, value: Any) -> bool:
    """Whether a key of a path-less value is a PATCH path rather than an attribute
    name or a schema URN (Entra ID sends "name.givenName",
    'emails[type eq "work"].value' and "urn:...:User:department" as keys)."""
    if key.lower().startswith("urn:"):
        # A URN with an object (or null) is a whole extension, or core attributes
        # nested under their schema; with any other value, a qualified attribute.
        return not (isinstance(value, dict) or value is None)
    return "[" in key or "." in key


def to_proto(ops: list[Operation]) -> list[common_pb2.PatchOperation]:
    """The contract's operations for a parsed PATCH (the core applies them).

    SCIM path syntax stays here: the keys of a path-less value that are paths
    become operations of their own, in their place in the order."""
    out: list[common_pb2.PatchOperation] = []
    for op in ops:
        if op.path is not None or not isinstance(op.value, dict):
            out.append(_op_proto(op.op, op.path, op.value, op.has_value))
            continue
        plain: dict[str, Any] = {}
        for key, value in op.value.items():
            if not _is_path_key(key, value):
                plain[key] = value
                continue
            if plain:
                out.append(_op_proto(op.op, None, plain, True))
                plain = {}
            out.append(_op_proto(op.op, parse_path(key), value, True))
        if plain or not op.value:
            out.append(_op_proto(op.op, None, plain, True))
    return out


def patch_operations(body: Any) -> list[common_pb2.PatchOperation]:
    """A PatchOp request body as the contract's operations; 400 if malformed."""
    return to_proto(parse_operations(body))


__all__ = [
    "Operation",
    "PatchPath",
    "parse_operations",
    "parse_path",
    "patch_operations",
    "to_proto",
]
