"""Alembic migrations, applied at start or by `identity-service migrate`.

Several replicas may start at once over one PostgreSQL: the upgrade runs under
an advisory lock so exactly one applies it and the others wait.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from .db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
#: Arbitrary constant naming this service's advisory lock.
ADVISORY_LOCK_KEY = 0x1D_5C1A

log = logging.getLogger("identity_service.migrate")


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str | None:
    """The newest revision of the migrations this code ships: read from their files
    once per process (the health check asks every few seconds, and reading them
    executes every migration module: ~20 ms of CPU each time)."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(db: Database) -> bool:
    return current(db) == head()


def upgrade(db: Database, target: str = "head") -> None:
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(config(conn), target)
            conn.commit()
        finally:
            if db.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()


def wait_for_database(
    db: Database,
    seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Connects until the database answers, waiting between attempts with exponential
    backoff (0.25 s doubling to 5 s) for at most `seconds` in all; returns the attempts
    made. A first start of PostgreSQL's image restarts its server once after
    initialising, so "healthy once" does not mean "reachable now"; the last error is
    raised when time runs out. Only connection failures are retried."""
    deadline = clock() + seconds
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        try:
            with db.engine.connect():
                return attempt
        except OperationalError as exc:
            left = deadline - clock()
            if left <= 0:
                raise
            log.warning(
                "waiting for the database (attempt %d, %.0f s left): %s",
                attempt,
                left,
                unreachable_reason(exc),
            )
            sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


def unreachable_reason(exc: OperationalError) -> str:
    """The driver's first line about a failed connection (no traceback, no URL)."""
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
