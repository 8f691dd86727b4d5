"""PostgreSQL's pooled connections: one that sat idle is pinged before use and
replaced when its server process is gone; one used a moment ago goes out unpinged
(a round trip saved per call), and if its server went away in between, that one
call fails as any call during an outage does and the next one gets a new connection.
Both for Session reads (on the pool threads) and for quick reads (asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from identity_service import db as db_module
from identity_service.db import Database
from identity_service.prepared import Prepared
from identity_service.settings import Settings

_PID = Prepared(select(func.pg_backend_pid().label("pid")))


@pytest.fixture
def database(pg_database: str) -> Iterator[Database]:
    d = Database(Settings(database_url=pg_database, db_pool_size=2))
    yield d
    d.close()


def _terminate(db: Database, pid: int) -> None:
    """Ends server process `pid`, from a connection of its own (not the pool's)."""
    url = make_url(db.url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def _session_pid(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _quick_pid(s: Session) -> int:
    return int(_PID.first(s, {}).pid)


def test_an_idle_connection_is_pinged_and_replaced(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _session_pid(database)
    assert _session_pid(database) == first  # the pool hands the same one out again
    _terminate(database, first)
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 0.0)  # every connection "idle"
    second = _session_pid(database)
    assert second != first

    async def quick() -> tuple[int, int]:
        try:
            a = await database.read_quick(_quick_pid)
            _terminate(database, a)
            return a, await database.read_quick(_quick_pid)
        finally:
            await database.close_quick()

    a, b = asyncio.run(quick())
    assert b != a


def test_a_connection_used_a_moment_ago_is_not_pinged(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 3600.0)
    first = _session_pid(database)
    _terminate(database, first)
    with pytest.raises(OperationalError):  # UNAVAILABLE at the RPC boundary
        _session_pid(database)
    assert _session_pid(database) != first  # the pool dropped the dead one

    async def quick() -> tuple[int, int]:
        try:
            a = await database.read_quick(_quick_pid)
            _terminate(database, a)
            with pytest.raises(OperationalError):
                await database.read_quick(_quick_pid)
            return a, await database.read_quick(_quick_pid)
        finally:
            await database.close_quick()

    a, b = asyncio.run(quick())
    assert b != a
