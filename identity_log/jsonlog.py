"""JSON log lines, one object per line, as the identity service and the SCIM gateway
write them (and any internal service may: `configure("json")`).

Each line has `time`, `level`, `logger` and `message`, then the record's `extra`
fields. Both services write an access line for every call they answer; building a
LogRecord for it costs several times the line itself (the record's attributes, the
handler chain, the formatter's walk over the record: about 20 µs against 4 µs on an
idle machine, more under load), so `AccessLog` writes those lines directly while
logging is set up as `configure("json")` leaves it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

try:
    import orjson

    def _dumps(obj: dict[str, Any]) -> str:
        return orjson.dumps(obj, default=str).decode()

except ImportError:  # the client distribution alone (clients/pyproject.toml): grpcio only
    import json

    def _dumps(obj: dict[str, Any]) -> str:
        return json.dumps(obj, default=str, separators=(",", ":"), ensure_ascii=False)


#: LogRecord attributes that are not the caller's structured fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _line(
    when: datetime, level: str, logger: str, message: str, fields: Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """One line's object: the same keys, in the same order, for both ways of writing."""
    out: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    out.update(fields)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = _line(
            datetime.fromtimestamp(record.created, UTC),
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            (
                (k, v)
                for k, v in record.__dict__.items()
                if k not in _STANDARD and not k.startswith("_")
            ),
        )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _dumps(out)


# (the ignore below) generic in typeshed only, not at run time
class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JsonFormatter lines on a stream (stderr unless given), and `write_info` for
    the lines AccessLog writes without a record."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def write_info(self, logger: str, message: str, fields: dict[str, Any]) -> None:
        """The line JsonFormatter makes of an INFO record of `logger` whose message is
        `message` and whose extra is `fields`, written as emit() writes it."""
        out = _line(datetime.now(UTC), "info", logger, message, fields.items())
        line = _dumps(out) + self.terminator
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            try:
                self.stream.write(line)
                self.flush()
            except Exception:  # as emit(): a broken stream never fails the caller
                self.handleError(logging.makeLogRecord({"msg": message}))


class AccessLog:
    """INFO lines on the logger `name`, one per call a service answers.

    While logging is as `configure("json")` left it (one JsonHandler on the root,
    no filters, no handlers on the way up), a line is written directly: the same
    line the formatter would make of the record. Any other setup (a text format,
    more handlers, tests capturing records) gets an ordinary `logger.info` record."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def _direct(self) -> JsonHandler | None:
        logger = self.logger
        while logger.parent is not None:  # every logger up to the root
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        if logger.filters or len(logger.handlers) != 1:
            return None
        handler = logger.handlers[0]
        if (
            type(handler) is not JsonHandler
            or type(handler.formatter) is not JsonFormatter
            or handler.filters
            or handler.level > logging.INFO
        ):
            return None
        return handler

    def write(self, message: str, fields: dict[str, Any]) -> None:
        """One line: `message` (already formatted), with `fields` as its keys."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct()
        if handler is None:
            self.logger.info("%s", message, extra=fields)
        else:
            handler.write_info(self.logger.name, message, fields)


def lean_records() -> None:
    """Every call writes an access line: skip what building a LogRecord would gather
    that no line shows (the caller's file and line, the thread's name), as the
    logging documentation's "Optimization" section describes. Not the process id:
    gunicorn's own log format shows it."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure(fmt: str, level: str = "INFO") -> logging.Handler:
    """One handler on the root logger, on stderr: JSON lines (`fmt` "json") or text
    for a terminal; `level` for the root. Answers the handler."""
    lean_records()
    handler: logging.Handler
    if fmt == "json":
        handler = JsonHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
