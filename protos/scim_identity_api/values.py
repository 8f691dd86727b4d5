"""How a JSON value is read against an attribute's type (RFC 7643 §2.3), for the
core, which applies PATCH, and the gateway, which reads POST and PUT bodies.

It lives beside the contract, as env.py does, because that is the one package both
depend on; it imports nothing of either, so the two read values by the same rules.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def type_name(value: Any) -> str:
    """The JSON type of a value, as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def shown(value: Any) -> str:
    """A value as an error message quotes it: strings verbatim, others by type."""
    return repr(value) if isinstance(value, str) else type_name(value)


def finite_number(value: Any) -> int | float | None:
    """A finite JSON number, or a string holding one (Entra ID sends numbers as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def is_datetime(text: str) -> bool:
    """An xsd:dateTime as SCIM uses it: an ISO 8601 date with a time part."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return "t" in text.lower()
