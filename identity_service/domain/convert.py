"""Small conversions shared by the domain modules."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

from google.protobuf import timestamp_pb2

from ..errors import NotFound


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def new_id() -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix time in milliseconds, then random
    bits. New rows' ids then land at the end of the unique id indexes instead of on
    a random page of them: a batch of history records dirtied one page per record
    with random (v4) ids, and inserts into a million-row table paid for it. The
    time an id shows is the row's `meta.created`, which the API answers anyway."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (rand >> 62 & 0xFFF) << 64  # rand_a
        | 0b10 << 62  # variant
        | rand & (1 << 62) - 1  # rand_b
    )
    return str(uuid.UUID(int=value))


def check_id(value: str, what: str) -> str:
    """A canonical UUID string; NOT_FOUND for anything that cannot be an id."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no {what} with id {value[:80]!r} (ids are UUIDs)", field="id") from None
