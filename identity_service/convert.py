"""Small conversions shared by the domain modules."""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf import timestamp_pb2

from .errors import NotFound


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def new_id() -> str:
    return str(uuid.uuid4())


def check_id(value: str, what: str) -> str:
    """A canonical UUID string; NOT_FOUND for anything that cannot be an id."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no {what} with id {value[:80]!r} (ids are UUIDs)", field="id") from None
