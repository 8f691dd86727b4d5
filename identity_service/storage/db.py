"""Engines, sessions and the thread pool that runs database work for the asyncio server.

Data functions take a Session and never commit; the RPC boundary opens the
transaction (`with db.write() as s:`) so a call is all-or-nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import greenlet_spawn

from ..settings import Settings
from .memo import MEMO, Memo

#: Session.info key: {tenant_id: last revision written} (events.emit), for the
#: after-commit wake-ups (Database.commit_listeners).
WRITTEN = "identity_written_revisions"

P = ParamSpec("P")
T = TypeVar("T")


def normalise_url(url: str) -> str:
    """postgresql://... uses psycopg 3; other URLs pass through."""
    u = make_url(url)
    if u.drivername in {"postgresql", "postgres"}:
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


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
        # LIKE is case-sensitive, as on PostgreSQL: co/sw/ew on a caseExact attribute
        # (RFC 7643 §2.2) must not match other case; the filter compiler lowers both
        # sides itself where case does not matter (tests/core/test_filter_differential.py).
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()
        # SQLite's lower() folds ASCII only, so "É" never matched "é" in a filter on
        # an attribute read from the document; Python's, as the stored *_key
        # columns and PostgreSQL's lower() do (RFC 7644 §3.4.2.2, caseExact false).
        dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the database lock up front: a deferred transaction that
        # upgrades to a writer can fail with SQLITE_BUSY instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


#: A pooled PostgreSQL connection that sat idle this long is pinged before it is used.
PING_IDLE_SECONDS = 1.0
_IDLE_SINCE = "identity.idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, only for connections that sat idle in the pool
    (a restarted server, a proxy's or firewall's idle timeout). SQLAlchemy's
    `pool_pre_ping` pings before every checkout: a round trip per call, ~10 % of a
    PostgreSQL lookup's cost in the core. A connection used within the last second
    goes out unpinged; if the server went away in that second, the call's own
    statement fails (UNAVAILABLE, as any call during an outage) and the pool drops the
    connection when its reset fails."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            # As pool_pre_ping does: the pool replaces this connection and every
            # other one as old (the server most likely restarted) and tries again.
            raise InvalidatePoolError(f"idle connection is gone: {err}") from err


def dbapi_error(statement: str, err: Exception, dialect: Any, params: Any = ()) -> StatementError:
    """A driver error as SQLAlchemy would wrap it (a lost or busy database is then an
    OperationalError: UNAVAILABLE at the RPC boundary, not INTERNAL)."""
    dbapi = dialect.loaded_dbapi
    return DBAPIError.instance(statement, params, err, dbapi.Error, dialect=dialect)


def _checkout(engine: Engine) -> Any:
    """A pooled DBAPI connection. Unlike Engine.connect, raw_connection does not wrap
    the driver's errors: an unreachable server must still be an OperationalError
    (UNAVAILABLE at the RPC boundary), not INTERNAL."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as err:
        raise dbapi_error("connect", err, engine.dialect) from err


#: session.info key: the Connection of the session's transaction (see prepared.py).
CONNECTION = "identity.connection"


def _keep_connection(session: Session, _transaction: Any, connection: Any) -> None:
    # Prepared statements run on the transaction's connection without asking the
    # session for it each time (a walk through its state machine per statement).
    session.info[CONNECTION] = connection


def _drop_connection(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(CONNECTION, None)


class _QuickConnection:
    """What prepared.Prepared uses of a Connection: the dialect and the DBAPI connection."""

    __slots__ = ("connection", "dialect", "dispatch", "fairy", "info")

    def __init__(self, fairy: Any, engine: Engine) -> None:
        self.fairy = fairy  # held: the pool takes the connection back when it goes
        self.connection = fairy.dbapi_connection
        self.dialect = engine.dialect
        # The engine's cursor events (tracing.trace_sql listens when tracing is on).
        self.dispatch = engine.dispatch
        self.info: dict[str, Any] = {}


class QuickRead:
    """A quick read's handle (`Database.read_quick`): what prepared statements
    (prepared.py) and the Database's memo need of a transaction, and nothing else.
    Not a Session: a function that takes a `Reader` (a Session or a QuickRead) may run
    prepared statements only, and mypy holds it to that, since a QuickRead has no
    `execute`, `connection` or ORM methods. The servicers choose a quick read before
    it starts (only reads whose every statement is prepared), so it never falls back."""

    __slots__ = ("info",)

    def __init__(self, conn: _QuickConnection, memo: Memo) -> None:
        self.info: dict[str, Any] = {CONNECTION: conn, MEMO: memo}


#: What a read made only of prepared statements runs on: a Session (inside any
#: transaction) or a quick read's handle.
Reader = Session | QuickRead


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
                pool_recycle=1800,
            )
            _ping_when_idle(self.engine)
            # Lists read their rows and the tenant revision from one snapshot.
            self._read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._pool_size = settings.db_pool_size
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        #: What this database's calls remember between them (paging, policies).
        self.memo = Memo()
        self._writer = sessionmaker(self.engine, expire_on_commit=False, info={MEMO: self.memo})
        self._reader = sessionmaker(
            self._read_engine, expire_on_commit=False, info={MEMO: self.memo}
        )
        self._pool = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="db")
        #: Reads of a few rows by index (a user by id, the IdP's `userName eq`) run on
        #: the event loop itself, without a Session (see read_quick). On SQLite they
        #: block it for the microseconds a WAL reader takes (it never waits for a
        #: lock); on PostgreSQL they await the server's answers on the loop through
        #: psycopg's asyncio connection, and other calls go on meanwhile.
        self.inline_quick_reads = self.dialect == "sqlite"
        self._quick: _QuickConnection | None = None
        self._quick_engine: AsyncEngine | None = None
        self._engine_hooks: list[Callable[[Engine], None]] = []
        #: Quick reads awaiting PostgreSQL now (close_quick lets them end first).
        self._awaiting = 0
        #: Quick reads run so far (the tests check which calls take them).
        self.quick_reads = 0
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
    def quick(self) -> Iterator[QuickRead]:
        """A read transaction for the quick reads (`inline_quick_reads`), on the
        event loop's thread only: one connection held for it, a plain BEGIN and
        COMMIT, no Session. A Session's bookkeeping costs ~90 µs a call, ten times
        what SQLite takes to answer the call's few indexed reads. It runs only
        prepared statements (see QuickRead)."""
        conn = self._quick
        if conn is None:
            conn = self._quick = _QuickConnection(_checkout(self._read_engine), self._read_engine)
        raw = conn.connection
        dbapi = conn.dialect.loaded_dbapi
        try:
            if raw.in_transaction:  # left open by a failure to end one: end it now
                raw.execute("ROLLBACK")
            raw.execute("BEGIN")
        except dbapi.Error as err:
            raise dbapi_error("BEGIN", err, conn.dialect) from err
        try:
            yield QuickRead(conn, self.memo)
        except BaseException:
            with contextlib.suppress(dbapi.Error):
                raw.execute("ROLLBACK")
            raise
        try:
            raw.execute("COMMIT")
        except dbapi.Error as err:
            raise dbapi_error("COMMIT", err, conn.dialect) from err

    async def read_quick(self, fn: Callable[[QuickRead], T]) -> T:
        """`fn` in a quick read: prepared statements (prepared.py) on the event loop,
        no Session and no pool thread. A Session's bookkeeping costs ~90 µs a call,
        and the hand-off to a pool thread and back, with the threads' contention for
        the interpreter lock, 0.2-0.5 ms of CPU. `fn` takes a QuickRead, so it can run
        prepared statements only.

        On SQLite they run between a BEGIN and a COMMIT (one snapshot, and free: the
        database is in this process). On PostgreSQL each statement is its own
        snapshot, with no BEGIN or COMMIT (two round trips fewer of a lookup's four):
        so a quick read is written as statements that each answer something whole
        (the bearer and its tenant; a user with its groups and roles), the tenant's
        first. A revision read with the tenant is then never newer than the rows read
        after it, so a client that lists and then watches from that revision misses
        nothing (it may see again a change the list showed)."""
        self.quick_reads += 1
        if self.inline_quick_reads:
            with self.quick() as q:
                return fn(q)
        self._awaiting += 1
        try:
            return cast(
                T, await greenlet_spawn(self._read_awaiting, self._quick_pool(), fn, self.memo)
            )
        finally:
            self._awaiting -= 1

    def _quick_pool(self) -> Engine:
        """PostgreSQL: the engine of the quick reads' asyncio connections (psycopg's
        AsyncConnection), made on first use on the server's event loop. Half the
        pool size (and as many overflow): a quick read holds its connection only
        while the loop awaits a few indexed answers."""
        if self._quick_engine is None:
            url = make_url(self.url).set(drivername="postgresql+psycopg_async")
            half = max(1, self._pool_size // 2)
            self._quick_engine = create_async_engine(
                url,
                connect_args={"connect_timeout": 5},
                pool_timeout=10,
                pool_size=half,
                max_overflow=half,
                pool_recycle=1800,
                # Each statement its own snapshot, with no BEGIN and COMMIT round
                # trips around it (see read_quick).
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
            )
            _ping_when_idle(self._quick_engine.sync_engine)
            for hook in self._engine_hooks:
                hook(self._quick_engine.sync_engine)
        return self._quick_engine.sync_engine

    def observe(self, hook: Callable[[Engine], None]) -> None:
        """Calls `hook` with every engine this database runs statements on, now and
        when one is made later (tracing.trace_sql listens to their cursor events)."""
        self._engine_hooks.append(hook)
        engines = [self.engine]
        if self._read_engine is not self.engine and self.dialect == "sqlite":
            engines.append(self._read_engine)  # PostgreSQL's shares the engine's events
        if self._quick_engine is not None:
            engines.append(self._quick_engine.sync_engine)
        for engine in engines:
            hook(engine)

    @staticmethod
    def _read_awaiting(engine: Engine, fn: Callable[[QuickRead], T], memo: Memo) -> T:
        """Runs in a greenlet (greenlet_spawn): the adapted connection's calls look
        blocking to `fn` and the prepared statements, and await on the event loop."""
        fairy = _checkout(engine)
        try:
            # Autocommit: no transaction to end (see read_quick).
            return fn(QuickRead(_QuickConnection(fairy, engine), memo))
        except DBAPIError as err:
            orig: Any = err.orig
            if engine.dialect.is_disconnect(orig, fairy.dbapi_connection, None):
                fairy.invalidate(orig)  # dropped, not reset (a reset would fail)
            raise
        finally:
            fairy.close()  # back to the pool (nothing to reset: no transaction is open)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs blocking database work on the pool, off the event loop."""
        loop = asyncio.get_running_loop()
        # In the caller's context (its trace span, when tracing is on); run_in_executor
        # alone would run `fn` in the pool thread's empty one.
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(
            self._pool, functools.partial(ctx.run, fn, *args, **kwargs)
        )

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _pools(self) -> list[Any]:
        pools: list[Any] = [self.engine.pool]
        if self._quick_engine is not None:
            pools.append(self._quick_engine.sync_engine.pool)
        return pools

    def connections_in_use(self) -> int:
        """Connections checked out of the pools (the quick reads' included)."""
        return sum(p.checkedout() for p in self._pools())

    def pool_size(self) -> int:
        return sum(p.size() for p in self._pools())

    async def close_quick(self, timeout: float = 5.0) -> None:
        """Closes the quick reads' asyncio connections (on the loop that made them),
        once the reads in flight have ended (at most `timeout` seconds): a
        connection still checked out would be left in its transaction."""
        if self._quick_engine is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._awaiting and loop.time() < deadline:
            await asyncio.sleep(0.01)
        engine, self._quick_engine = self._quick_engine, None
        await engine.dispose()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._quick is not None:
            self._quick.fairy.close()
            self._quick = None
        self.engine.dispose()
        self._read_engine.dispose()
