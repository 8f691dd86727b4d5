"""The access lines both services write for every call (identity_log.jsonlog)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from identity_log import jsonlog

FIELDS = {"operation": "ListUsers", "status": "OK", "duration_ms": 1.25, "tenant": "t-1"}


@pytest.fixture
def root_handler() -> Iterator[io.StringIO]:
    """The root logger as `jsonlog.configure("json")` leaves it, on a buffer. (In the
    test's body: pytest adds its capturing handler to the root at each phase.)"""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    jsonlog.configure("json")
    root.handlers[0].setStream(out)
    yield out
    root.handlers[:], root.level = saved


def _only_ours() -> None:
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if type(h) is jsonlog.JsonHandler]


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_direct_line_is_the_formatters_line(root_handler: io.StringIO) -> None:
    _only_ours()
    access = jsonlog.AccessLog("test.access.direct")
    assert access._direct() is not None  # the fast path is the one under test
    access.write("ListUsers OK", dict(FIELDS))
    logging.getLogger("test.access.direct").info("%s %s", "ListUsers", "OK", extra=FIELDS)
    direct, formatted = _lines(root_handler)
    assert set(direct) == set(formatted)
    assert {k: v for k, v in direct.items() if k != "time"} == {
        k: v for k, v in formatted.items() if k != "time"
    }
    assert direct["message"] == "ListUsers OK" and direct["level"] == "info"


def test_other_setups_get_ordinary_records(root_handler: io.StringIO) -> None:
    _only_ours()
    name = "test.access.captured"
    access = jsonlog.AccessLog(name)
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    capture = Capture()
    logging.getLogger(name).addHandler(capture)
    try:
        assert access._direct() is None
        access.write("ListUsers OK", dict(FIELDS))
    finally:
        logging.getLogger(name).removeHandler(capture)
    assert len(seen) == 1 and seen[0].getMessage() == "ListUsers OK"
    assert seen[0].__dict__["tenant"] == "t-1"
    # ... and the root's handler still wrote its line.
    assert _lines(root_handler)[0]["tenant"] == "t-1"


def test_a_filter_or_a_level_is_respected(root_handler: io.StringIO) -> None:
    _only_ours()
    name = "test.access.filtered"
    access = jsonlog.AccessLog(name)
    logger = logging.getLogger(name)
    logger.addFilter(lambda record: False)
    try:
        access.write("dropped", dict(FIELDS))
    finally:
        logger.filters.clear()
    logger.setLevel(logging.WARNING)
    try:
        access.write("below the level", dict(FIELDS))
    finally:
        logger.setLevel(logging.NOTSET)
    assert root_handler.getvalue() == ""
