"""Engines, sessions and the thread pool that runs database work for the asyncio server.

Data functions take a Session and never commit; the RPC boundary opens the
transaction (`with db.write() as s:`) so a call is all-or-nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from .events import WRITTEN
from .settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


def normalise_url(url: str) -> str:
    """postgresql://... uses psycopg 3; other URLs pass through."""
    u = make_url(url)
    if u.drivername in {"postgresql", "postgres"}:
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_engine(url: str, *, immediate: bool, connections: int) -> Engine:
    # As many connections as threads that may read at once (and the event loop),
    # so a quick read on the loop never waits for a connection.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=connections,
        max_overflow=connections,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (SQLAlchemy's recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the database lock up front: a deferred transaction that
        # upgrades to a writer can fail with SQLITE_BUSY instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


#: session.info key: the Connection of the session's transaction (see prepared.py).
CONNECTION = "identity.connection"


def _keep_connection(session: Session, _transaction: Any, connection: Any) -> None:
    # Prepared statements run on the transaction's connection without asking the
    # session for it each time (a walk through its state machine per statement).
    session.info[CONNECTION] = connection


def _drop_connection(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(CONNECTION, None)


class NeedsSession(Exception):
    """A quick read met something other than a prepared statement."""


class _QuickConnection:
    """What prepared.Prepared uses of a Connection: the dialect and the DBAPI connection."""

    __slots__ = ("connection", "dialect", "fairy")

    def __init__(self, fairy: Any, dialect: Any) -> None:
        self.fairy = fairy  # held: the pool takes the connection back when it goes
        self.connection = fairy.dbapi_connection
        self.dialect = dialect


class QuickRead:
    """Stands in for a read Session in `Database.quick()`: runs prepared statements
    (prepared.py) and nothing else. Anything else raises NeedsSession, and the
    caller runs the read again in a real Session."""

    __slots__ = ("info",)

    def __init__(self, conn: _QuickConnection) -> None:
        self.info = {CONNECTION: conn}

    def flush(self) -> None:
        """Nothing is ever pending."""

    def __getattr__(self, name: str) -> Any:
        raise NeedsSession(name)


class Database:
    """Write and read session factories over one database, plus the worker threads."""

    def __init__(self, settings: Settings) -> None:
        self.url = normalise_url(settings.database_url)
        u = make_url(self.url)
        self.dialect = u.get_backend_name()
        if self.dialect == "sqlite":
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            threads = settings.db_threads + settings.watch_db_threads + 2
            self.engine = _sqlite_engine(self.url, immediate=True, connections=threads)
            self._read_engine = _sqlite_engine(self.url, immediate=False, connections=threads)
        else:
            self.engine = create_engine(
                self.url,
                # An unreachable server must fail fast (UNAVAILABLE), never hang a call.
                connect_args={"connect_timeout": 5},
                pool_timeout=10,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_pool_size,
                pool_pre_ping=True,
                pool_recycle=1800,
            )
            # Lists read their rows and the tenant revision from one snapshot.
            self._read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="db")
        #: Reads of a few rows by index (a user by id, the IdP's `userName eq`) run on
        #: the event loop itself on SQLite: a WAL reader never waits for a lock and the
        #: read takes microseconds, while the hand-off to a pool thread and back (and
        #: the threads' contention for the interpreter lock) cost 0.2-0.5 ms of CPU per
        #: call. On PostgreSQL every read is a network round trip: always the pool.
        self.inline_quick_reads = self.dialect == "sqlite"
        self._quick: _QuickConnection | None = None
        #: Quick reads that needed a real Session after all (see quick()).
        self.quick_fallbacks = 0
        #: Called (on a database thread) after each commit that wrote events,
        #: with {tenant_id: last revision}. The change streams wake on it.
        self.commit_listeners: list[Callable[[dict[str, int]], None]] = []
        event.listen(self._writer, "after_commit", self._after_commit)
        event.listen(self._writer, "after_rollback", self._after_rollback)
        for maker in (self._writer, self._reader):
            event.listen(maker, "after_begin", _keep_connection)
            event.listen(maker, "after_transaction_end", _drop_connection)

    def _after_commit(self, session: Session) -> None:
        written = session.info.pop(WRITTEN, None)
        if written:
            for listener in self.commit_listeners:
                listener(written)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(WRITTEN, None)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        if self._write_lock is None:
            with self._writer.begin() as session:
                yield session
            return
        # SQLite has one writer at a time. Threads of this process queue here, in
        # order, rather than in SQLite's busy handler, which sleeps in growing steps
        # (up to 100 ms) and made write latency spiky under concurrency. Other
        # processes (a second replica, `identity-service migrate`) still meet the
        # busy timeout.
        with self._write_lock, self._writer.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader.begin() as session:
            yield session

    @contextlib.contextmanager
    def quick(self) -> Iterator[Session]:
        """A read transaction for the quick reads (`inline_quick_reads`), on the
        event loop's thread only: one connection held for it, a plain BEGIN and
        COMMIT, no Session. A Session's bookkeeping costs ~90 µs a call, ten times
        what SQLite takes to answer the call's few indexed reads. It runs only
        prepared statements; anything else raises NeedsSession (see read_quick)."""
        conn = self._quick
        if conn is None:
            conn = self._quick = _QuickConnection(
                self._read_engine.raw_connection(), self._read_engine.dialect
            )
        raw = conn.connection
        dbapi = conn.dialect.loaded_dbapi
        try:
            if raw.in_transaction:  # left open by a failure to end one: end it now
                raw.execute("ROLLBACK")
            raw.execute("BEGIN")
        except dbapi.Error as err:
            raise DBAPIError.instance("BEGIN", (), err, dbapi.Error, dialect=conn.dialect) from err
        try:
            yield cast(Session, QuickRead(conn))
        except BaseException:
            with contextlib.suppress(dbapi.Error):
                raw.execute("ROLLBACK")
            raise
        try:
            raw.execute("COMMIT")
        except dbapi.Error as err:
            raise DBAPIError.instance("COMMIT", (), err, dbapi.Error, dialect=conn.dialect) from err

    def read_quick(self, fn: Callable[[Session], T]) -> T:
        """`fn` in a quick read. When it needs more than prepared statements it
        raises NeedsSession (counted in `quick_fallbacks`): the caller runs it again
        in a read Session, off the event loop."""
        try:
            with self.quick() as q:
                return fn(q)
        except NeedsSession:
            self.quick_fallbacks += 1
            raise

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs blocking database work on the pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._quick is not None:
            self._quick.fairy.close()
            self._quick = None
        self.engine.dispose()
        self._read_engine.dispose()
