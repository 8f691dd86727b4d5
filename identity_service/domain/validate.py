"""Input checks every write applies to the messages it stores.

- NUL characters: PostgreSQL text cannot hold them (the write would fail deep in the
  driver), and no identity attribute needs one.
- Nesting of free-form JSON (extensions): protobuf decoders refuse messages nested
  deeper than 100 levels, so a deeper value could be stored but never read back.
"""

from __future__ import annotations

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from ..errors import InvalidValue

#: JSON levels allowed inside an extension value (each costs two protobuf levels).
MAX_JSON_DEPTH = 24


def _value(v: struct_pb2.Value, where: str, depth: int) -> None:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        if "\x00" in v.string_value:
            raise InvalidValue(f"{where} contains a NUL character", field=where)
    elif kind == "struct_value":
        _struct(v.struct_value, where, depth + 1)
    elif kind == "list_value":
        if depth + 1 > MAX_JSON_DEPTH:
            raise InvalidValue(
                f"{where} is nested deeper than {MAX_JSON_DEPTH} levels", field=where
            )
        for item in v.list_value.values:
            _value(item, where, depth + 1)


def _struct(s: struct_pb2.Struct, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidValue(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels", field=where)
    for key, v in s.fields.items():
        if "\x00" in key:
            raise InvalidValue(f"{where} has a key with a NUL character", field=where)
        _value(v, f"{where}.{key}" if depth < 3 else where, depth)


def check_message(msg: Message, where: str = "") -> None:
    """Refuses NUL characters anywhere in `msg` and over-deep JSON in its Structs."""
    if isinstance(msg, struct_pb2.Struct):
        _struct(msg, where or "extensions", 1)
        return
    for fd, value in msg.ListFields():
        name = f"{where}.{fd.json_name}" if where else fd.json_name
        if fd.type == fd.TYPE_STRING:
            items = value if fd.is_repeated else [value]
            if any("\x00" in s for s in items):
                raise InvalidValue(f"{name} contains a NUL character", field=name)
        elif fd.type == fd.TYPE_MESSAGE:
            if fd.is_repeated:
                for item in value:
                    check_message(item, name)
            else:
                check_message(value, name)


def check_expected_version(expected: int) -> None:
    if expected < 0:
        raise InvalidValue(
            "expected_version must be 0 (no check) or the version to compare", field="version"
        )
