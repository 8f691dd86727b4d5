"""Selects that every request runs, compiled once and run on the DBAPI cursor.

SQLAlchemy spends far longer preparing and wrapping a small statement than the
database spends answering it (about 60-100 µs against under 10 µs for an
indexed lookup on SQLite). The handful of statements on the hot read path (the
bearer check, the tenant, a user by id or by an indexed attribute, a user's
groups and roles) are compiled once per dialect to SQL text and run on the
session's own DBAPI connection, inside its transaction. Results go through the
same result processors SQLAlchemy would apply (UTC datetimes, booleans, JSON),
so they equal what `session.execute` returns; tests/core/test_bearer_calls.py checks
that on both databases.

Only plain bound parameters (`bindparam("name")`), no expanding IN lists.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import JSON, CompoundSelect, Select, Table, bindparam, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.functions import FunctionElement

from .db import CONNECTION, QuickRead, Reader, dbapi_error

#: A select, or a DML statement with RETURNING (its rows are what it returns).
Statement = Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]] | UpdateBase


class json_rows(FunctionElement[Any]):
    """An aggregate: one JSON array of its arguments per row, all in one JSON array
    (NULL, or `[]` on SQLite, over no rows; in no particular order). Lets a
    statement carry a row's few related rows (a user's groups and roles) in one
    column, so that the read is one statement: one round trip to PostgreSQL."""

    type = JSON()
    inherit_cache = True
    name = "json_rows"


@compiles(json_rows)
def _json_rows(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


@compiles(json_rows, "postgresql")
def _json_rows_pg(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


def _connection(session: Reader) -> Connection:
    if isinstance(session, QuickRead):
        quick: Connection = session.info[CONNECTION]  # duck-typed: see db._QuickConnection
        return quick
    # What session.execute does first: pending ORM changes must be visible.
    session.flush()
    conn: Connection = session.info.get(CONNECTION) or session.connection()
    return conn


def _on_cursor(
    conn: Connection, sql: str, args: Any, *, many: bool = False, fetch: bool = True
) -> list[Any]:
    """Runs `sql` on the connection's DBAPI cursor (executemany when `many`); the rows
    it answers (none for `many`, or without `fetch`: a statement that answers none)."""
    cursor = conn.connection.cursor()
    # The engine's cursor events, as SQLAlchemy fires them for its own statements:
    # listened to only when tracing is on (tracing.trace_sql), else an empty check.
    dispatch = conn.dispatch
    observed = bool(dispatch.before_cursor_execute)
    if observed:
        dispatch.before_cursor_execute(conn, cursor, sql, args, None, many)
    try:
        if many:
            cursor.executemany(sql, args)
            return []
        cursor.execute(sql, args)
        if not fetch:
            return []
        return cursor.fetchall()  # type: ignore[return-value]  # a list, on both drivers
    except conn.dialect.loaded_dbapi.Error as err:
        raise dbapi_error(sql, err, conn.dialect, args) from err
    finally:
        if observed:
            dispatch.after_cursor_execute(conn, cursor, sql, args, None, many)
        cursor.close()


class _Compiled:
    __slots__ = ("binds", "converted", "defaults", "names", "positional", "row", "sql")

    def __init__(self, stmt: Statement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        # Parameters the compiler added itself (e.g. SQLite's OFFSET 0 after a LIMIT).
        self.defaults = {k: v for k, v in compiled.params.items() if v is not None}
        self.positional = dialect.paramstyle in ("qmark", "format", "numeric")
        self.names = tuple(compiled.positiontup or ()) if self.positional else ()
        #: (parameter, processor) of the parameters whose type converts the value
        #: (datetimes, JSON documents, booleans), as SQLAlchemy's execute would.
        self.binds: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(
            (name, cast(Callable[[Any], Any], process))  # one value each: no tuple types
            for name, process in compiled._bind_processors.items()
        )
        columns = list(
            stmt.exported_columns if isinstance(stmt, UpdateBase) else stmt.selected_columns
        )
        processors: list[Callable[[Any], Any] | None] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]
        #: (position, processor) of the columns that have one (most have none).
        self.converted = tuple((i, p) for i, p in enumerate(processors) if p is not None)
        # (the ignore below) field names known only at run time
        self.row = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]


class Prepared:
    """One select (or DML statement); `run(session, params)` answers its rows as named
    tuples, `execute(session, params)` runs one that answers none."""

    def __init__(self, stmt: Statement) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        c = self._compiled.get(dialect.name)
        if c is None:
            c = self._compiled[dialect.name] = _Compiled(self.stmt, dialect)
        return c

    def _args(self, c: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**c.defaults, **params} if c.defaults else params
        if c.binds:
            values = dict(values)
            for name, process in c.binds:
                if name in values:
                    # None too, as SQLAlchemy does: a JSON column stores it as `null`.
                    values[name] = process(values[name])
        return tuple(values[n] for n in c.names) if c.positional else values

    def execute(self, session: Session, params: Mapping[str, Any]) -> None:
        """Runs a statement that answers no rows (an UPDATE or DELETE)."""
        conn = _connection(session)
        c = self._for(conn.dialect)
        _on_cursor(conn, c.sql, self._args(c, params), fetch=False)

    def run(self, session: Reader, params: Mapping[str, Any]) -> list[Any]:
        conn = _connection(session)
        c = self._for(conn.dialect)
        raw = _on_cursor(conn, c.sql, self._args(c, params))
        make = c.row._make  # type: ignore[attr-defined]  # a namedtuple class
        converted = c.converted
        if not converted:
            return [make(r) for r in raw]
        rows = []
        for r in raw:
            row = list(r)
            for i, p in converted:
                v = row[i]
                if v is not None:
                    row[i] = p(v)
            rows.append(make(row))
        return rows

    def first(self, session: Reader, params: Mapping[str, Any]) -> Any | None:
        rows = self.run(session, params)
        return rows[0] if rows else None


class PreparedInsert:
    """One INSERT of `columns`, compiled once per dialect, run as one executemany of
    value tuples on the session's DBAPI connection. The values go through the bind
    processors SQLAlchemy would apply (so a stored datetime reads back the same).
    For the history's batches: SQLAlchemy's executemany builds a parameter dict per
    row and processes it, several times the cost of the insert itself."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self._insert = Prepared(insert(table).values({c: bindparam(c) for c in self.columns}))
        #: Per dialect: each column's bind processor (or None), and the statement's
        #: parameter order as column positions (None for a dialect that takes dicts).
        self._layout: dict[str, tuple[tuple[Any, ...], tuple[int, ...] | None]] = {}

    def run(self, session: Session, rows: Sequence[Sequence[Any]]) -> None:
        """Inserts `rows`, each a value per column, in `columns` order."""
        if not rows:
            return
        conn = _connection(session)
        c = self._insert._for(conn.dialect)
        layout = self._layout.get(conn.dialect.name)
        if layout is None:
            # The statement's own bind processors (Prepared), by column position.
            by_name = dict(c.binds)
            layout = self._layout[conn.dialect.name] = (
                tuple(by_name.get(col) for col in self.columns),
                tuple(self.columns.index(n) for n in c.names) if c.positional else None,
            )
        procs, order = layout
        # None too, as SQLAlchemy does: a JSON column stores it as `null`.
        processed = [
            tuple(v if p is None else p(v) for p, v in zip(procs, r, strict=True)) for r in rows
        ]
        if order is not None:
            args: list[Any] = [tuple(r[i] for i in order) for r in processed]
        else:
            args = [dict(zip(self.columns, r, strict=True)) for r in processed]
        _on_cursor(conn, c.sql, args, many=True)
