"""PostgreSQL's pooled connections: one that sat idle is pinged before use and
replaced when its server process is gone; one used a moment ago goes out unpinged
(a round trip saved per call), and if its server went away in between, that one
call fails as any call during an outage does and the next one gets a new connection.
Both for Session reads (on the pool threads) and for quick reads (asyncio)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from identity_service.settings import Settings
from identity_service.storage import db as db_module
from identity_service.storage.db import Database
from identity_service.storage.prepared import Prepared
from scim_identity_api.v1 import users_pb2
from scim_identity_client import IdentityClient, IdentityError

from ..support import ServiceThread, eventually, free_port, throwaway_pg_database

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
    database: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
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
    # The dead quick-read connection was dropped, not reset (which fails, and logs).
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_an_unreachable_server_is_an_operational_error_for_quick_reads_too() -> None:
    """UNAVAILABLE at the RPC boundary (not INTERNAL): the pool's checkout does not
    wrap the driver's error by itself."""
    db = Database(Settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"))

    async def quick() -> None:
        try:
            await db.read_quick(_quick_pid)
        finally:
            await db.close_quick()

    try:
        with pytest.raises(OperationalError):
            asyncio.run(quick())
        with pytest.raises(OperationalError):
            _session_pid(db)
    finally:
        db.close()


def _waiting_on_a_lock(url: str) -> bool:
    """Whether a backend of this database waits on a lock (PostgreSQL says so)."""
    with psycopg.connect(url, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_stopping_the_service_lets_a_quick_read_in_flight_end() -> None:
    """A quick read waits on a lock while the service stops: the stop closes the
    quick reads' connections only after it ended, so none is left in its transaction."""
    # A database of its own: the probes below look at every connection to it, and
    # the shared test service's stream feeds read in transactions of their own.
    with throwaway_pg_database("identity_stop") as pg_database:
        _stop_with_a_read_in_flight(pg_database)


def _stop_with_a_read_in_flight(pg_database: str) -> None:
    service = ServiceThread(Settings(database_url=pg_database, listen="127.0.0.1:0"))
    target = service.start()
    url = make_url(pg_database).set(drivername="postgresql").render_as_string(False)
    blocker = psycopg.connect(url)
    try:
        with IdentityClient(target) as client:
            tenant = client.create_tenant("shutdown-" + str(time.monotonic_ns()))
            user = client.create_user(tenant.id, users_pb2.User(user_name="held"))
            client.get_user(tenant.id, user.meta.id)  # the quick pool exists
            blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            ended: list[object] = []

            def read() -> None:
                try:  # answered after the lock goes, or cut off by the stop
                    ended.append(client.get_user(tenant.id, user.meta.id))
                except IdentityError as exc:
                    ended.append(exc)

            reader = threading.Thread(target=read)
            reader.start()
            eventually(lambda: _waiting_on_a_lock(url), 30, "the read to wait on the lock")
            stopper = threading.Thread(target=service.stop)
            stopper.start()
            # The stop (grace 0) cuts the call off at once...
            reader.join(30)
            assert len(ended) == 1 and isinstance(ended[0], IdentityError), ended
            assert ended[0].code == grpc.StatusCode.UNAVAILABLE, ended
            blocker.rollback()  # the read's query can end now, if it still runs
            stopper.join(30)
            assert not stopper.is_alive()
        with psycopg.connect(url, autocommit=True) as probe:
            left = probe.execute(
                "SELECT state, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state LIKE 'idle in transaction%'"
            ).fetchall()
        # The stop closed the quick reads' connections only after the read ended.
        assert left == []
    finally:
        blocker.close()
        if service.thread.is_alive():
            service.stop()
