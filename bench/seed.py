"""Bulk seeding of benchmark users: the rows `identity_service.domain.users.create` writes, in bulk.

    .venv/bin/python -m bench.seed [--backend sqlite|postgresql|both]   # the equivalence check

`users.create` costs a few milliseconds per user (policy checks, a uniqueness SELECT,
one INSERT per table, a re-read, a revision UPDATE); 1,000,000 users that way take
hours. `add_users` builds the same rows with the core's own row helpers
(`users.stored_form`, `users._columns`, `users._value_rows`, `users._assemble` for the
event's user, the ChangeEvent stamped as `events.emit` stamps it) and writes them per
batch of BATCH users in one transaction: explicit user pks (the user_values rows need
them); every value converted by the bind processor SQLAlchemy would apply, then the
compiled `insert()` through the DBAPI's executemany on SQLite and `COPY ... FROM STDIN`
on PostgreSQL; then the tenant's revision counter moved past the batch's events (and the
PostgreSQL sequences past the explicit pks at the end). About 4,000 users/s per backend
on the benchmark machine, mostly the core's own Python row building.

`check_equivalence` seeds a few users both ways into two tenants of a fresh database and
compares the users and user_values rows (as read and as stored), `users.get`,
`users.list_users` and the event log (everything but ids, timestamps and the tenant's
own id / revision offset); the gateway benchmark runs it first on every backend, and
`python -m bench.seed` on its own (`--time N` also times seeding N users).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from .loadgen import external_id, user_name

if TYPE_CHECKING:
    from identity_service.storage.db import Database
    from scim_identity_api.v1 import users_pb2

ROOT = Path(__file__).resolve().parent.parent
#: Users per transaction.
BATCH = 5_000


def log(msg: str) -> None:
    print(f"[bench.seed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class UserIds(Sequence[str]):
    """User ids in creation order, 16 bytes each (1,000,000 ids: 16 MB, not 90)."""

    def __init__(self, raw: bytes = b"") -> None:
        self._raw = bytearray(raw)

    def append(self, uid: str) -> None:
        self._raw += uuid.UUID(uid).bytes

    def extend(self, other: UserIds) -> None:
        self._raw += other._raw

    def __len__(self) -> int:
        return len(self._raw) // 16

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return str(uuid.UUID(bytes=bytes(self._raw[16 * i : 16 * i + 16])))

    def __reduce__(self) -> tuple[Any, ...]:
        return (UserIds, (bytes(self._raw),))


def seed_user(i: int) -> users_pb2.User:
    """Seeded user number i, as an IdP would send it: userName, externalId, name, title,
    one work email."""
    from scim_identity_api.v1 import users_pb2

    name = user_name(i)
    return users_pb2.User(
        user_name=name,
        external_id=external_id(i),
        display_name=f"User {i}",
        name=users_pb2.Name(given_name="User", family_name=str(i)),
        title="Engineer",
        active=True,
        emails=[users_pb2.MultiValue(value=f"{name}@example.com", type="work", primary=True)],
    )


# -- tenants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    id: str
    pk: int
    name: str
    token: str


def create_tenant(url: str, name: str) -> Tenant:
    """Migrates the database (idempotent), creates the tenant and one API token, both
    with the core's own code (events written)."""
    from identity_service.context import SYSTEM
    from identity_service.domain import tenants
    from identity_service.storage import migrate
    from scim_identity_api.v1 import tenants_pb2

    db = _database(url)
    try:
        migrate.upgrade(db)
        with db.write() as s:
            tenant = tenants.create(s, name, f"Benchmark {name}", SYSTEM)
            issued = tenants.issue_token(
                s, tenants_pb2.IssueTokenRequest(tenant=tenants_pb2.TenantRef(id=tenant.id)), SYSTEM
            )
        with db.read() as s:
            pk = tenants.by_id(s, tenant.id).pk
    finally:
        db.close()
    return Tenant(tenant.id, pk, name, issued.secret)


def _database(url: str) -> Database:
    from identity_service.settings import Settings
    from identity_service.storage.db import Database

    return Database(Settings(database_url=url))


# -- the bulk path ---------------------------------------------------------------------------


@dataclass
class _Batch:
    users: list[dict[str, Any]]
    values: list[dict[str, Any]]
    events: list[dict[str, Any]]
    ids: list[str]


def _build(
    tenant_id: str, tenant_pk: int, numbers: Sequence[int], first_pk: int, first_revision: int
) -> _Batch:
    """The rows `users.create` writes for seed_user(i), i in numbers (SYSTEM actor)."""
    from types import SimpleNamespace

    from google.protobuf import timestamp_pb2

    from identity_service.context import SYSTEM
    from identity_service.domain import users
    from identity_service.domain.convert import new_id
    from identity_service.storage import events
    from identity_service.storage.models import utcnow
    from scim_identity_api.v1 import changes_pb2

    now = utcnow()
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(now)
    actor = SYSTEM.actor()
    # users.create: "local" for an admin, "scim" for everyone else (SYSTEM included).
    managed_by = "local" if SYSTEM.actor_kind == "admin" else "scim"
    out = _Batch([], [], [], [])
    for k, i in enumerate(numbers):
        u = users.stored_form(seed_user(i))
        cols = users._columns(u)
        pk = first_pk + k
        uid = new_id()
        out.users.append(
            {
                "pk": pk,
                "id": uid,
                "tenant_pk": tenant_pk,
                "version": 1,
                "created": now,
                "last_modified": now,
                "managed_by": managed_by,
                **cols,
            }
        )
        out.values.extend(
            dict(zip(users._VALUE_COLUMNS, r, strict=True))
            for r in users._value_rows(u, pk, tenant_pk)
        )
        # users._insert: result = get(...) = _assemble over the row just written.
        row = SimpleNamespace(
            pk=pk,
            id=uid,
            version=1,
            created=now,
            last_modified=now,
            active=cols["active"],
            body=cols["body"],
            managed_by=managed_by,
        )
        (result,) = users._assemble([row], {}, {}, tenant_id)
        ev = events.event(changes_pb2.EVENT_TYPE_USER_CREATED, "User", uid, user=result)
        # events.emit
        ev.revision = first_revision + k
        ev.tenant_id = tenant_id
        ev.time.CopyFrom(ts)
        ev.actor.CopyFrom(actor)
        ev.request_id = SYSTEM.request_id
        out.events.append(
            {
                "tenant_pk": tenant_pk,
                "revision": ev.revision,
                "type": ev.type,
                "resource_type": ev.resource_type,
                "time": now,
                "payload": ev.SerializeToString(),
            }
        )
        out.ids.append(uid)
    return out


def _insert_rows(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """rows into table through the DBAPI connection, each value converted by the bind
    processor SQLAlchemy itself would apply to it (UTCDateTime, JSON, Boolean, ...), so
    the stored values are the ones an `insert()` stores; without SQLAlchemy's per-row
    parameter handling, which costs more than the database here. SQLite: the compiled
    `insert()` with executemany; PostgreSQL: COPY."""
    from sqlalchemy import insert

    stmt = insert(table).compile(dialect=conn.dialect, column_keys=list(rows[0]))
    # In table order; positional on SQLite (qmark), so the same order for both.
    cols = [c.key for c in table.c if c.key in rows[0]]
    if len(cols) != len(rows[0]) or (stmt.positiontup is not None and stmt.positiontup != cols):
        raise RuntimeError(f"unexpected columns {stmt.positiontup} for {list(rows[0])}")
    procs = [(c, table.c[c].type._cached_bind_processor(conn.dialect)) for c in cols]
    # A batch's rows share their timestamps: convert each distinct one once.
    stamps = {c for c in cols if isinstance(rows[0][c], datetime)}
    memo: dict[tuple[str, object], object] = {}

    def convert(c: str, p: Any, v: object) -> object:
        if p is None:
            return v
        if c not in stamps:
            return p(v)
        key = (c, v)
        if key not in memo:
            memo[key] = p(v)
        return memo[key]

    params = [tuple(convert(c, p, r[c]) for c, p in procs) for r in rows]
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        names = ", ".join(_quote(c) for c in cols)
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as cp:
            for row in params:
                cp.write_row(row)
        return
    cur = raw.cursor()
    try:
        cur.executemany(str(stmt), params)
    finally:
        cur.close()


def _quote(col: str) -> str:
    return f'"{col}"' if col in {"primary", "type", "time"} else col


def _write(db: Database, batch: _Batch, tenant_pk: int, last_revision: int) -> None:
    from sqlalchemy import update

    from identity_service.storage.models import EventRow, TenantRow, UserRow, UserValueRow

    with db.write() as s:
        conn = s.connection()
        for table, rows in (
            (UserRow.__table__, batch.users),
            (UserValueRow.__table__, batch.values),
            (EventRow.__table__, batch.events),
        ):
            if rows:
                _insert_rows(conn, table, rows)
        conn.execute(
            update(TenantRow)
            .where(TenantRow.pk == tenant_pk)
            .values(revision=last_revision, user_count=TenantRow.user_count + len(batch.users))
        )


_SETVAL = (
    "SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
    "(SELECT COALESCE(MAX(pk), 0) + 1 FROM {table}), false)"
)


def _fix_sequences(db: Database) -> None:
    """PostgreSQL: serial sequences past the explicit pks (the service's next insert
    must not collide)."""
    from sqlalchemy import text

    if db.dialect != "postgresql":
        return
    with db.write() as s:
        for table in ("users", "user_values", "events"):
            s.execute(text(_SETVAL.format(table=table)))


def vacuum_analyze(
    url: str, tables: tuple[str, ...] = ("users", "user_values", "events", "tenants", "operations")
) -> None:
    """PostgreSQL: VACUUM ANALYZE the seeded tables, as autovacuum would after a bulk
    load (it is off on the benchmark machine): planner statistics and the visibility map
    a fresh 1M-row table otherwise lacks. SQLite: nothing (the service runs no ANALYZE)."""
    import psycopg

    if not url.startswith("postgresql"):
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM ANALYZE {table}")


def add_users(
    url: str,
    tenant: Tenant,
    first: int,
    count: int,
    *,
    progress: Callable[[str], None] | None = log,
) -> UserIds:
    """Adds users seed_user(first) .. seed_user(first + count - 1) to the tenant, as
    `users.create` would; returns their ids in order. The services must not be running
    (pks and revisions are taken as max + 1)."""
    from sqlalchemy import func, select

    from identity_service.storage.models import TenantRow, UserRow

    db = _database(url)
    ids = UserIds()
    try:
        with db.read() as s:
            next_pk = int(s.execute(select(func.coalesce(func.max(UserRow.pk), 0))).scalar_one())
            next_pk += 1
            revision = int(
                s.execute(select(TenantRow.revision).where(TenantRow.pk == tenant.pk)).scalar_one()
            )
        started = last = time.perf_counter()
        done = 0
        # One writer thread: batch k is written (the database works, the GIL is free)
        # while batch k + 1 is built; batches commit in order.
        with ThreadPoolExecutor(1, thread_name_prefix="seed-writer") as writer:
            pending: Future[None] | None = None
            for lo in range(first, first + count, BATCH):
                numbers = range(lo, min(first + count, lo + BATCH))
                batch = _build(tenant.id, tenant.pk, numbers, next_pk, revision + 1)
                revision += len(numbers)
                next_pk += len(numbers)
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write, db, batch, tenant.pk, revision)
                for uid in batch.ids:
                    ids.append(uid)
                done += len(numbers)
                now = time.perf_counter()
                if progress is not None and now - last > 15:
                    last = now
                    progress(f"  {done:,}/{count:,} users ({done / (now - started):,.0f}/s)")
            if pending is not None:
                pending.result()
        if progress is not None:
            took = time.perf_counter() - started
            progress(f"  {count:,}/{count:,} users ({count / took if took else 0:,.0f}/s)")
        _fix_sequences(db)
    finally:
        db.close()
    return ids


# -- the equivalence check -------------------------------------------------------------------


def _normalised_user(u: Any) -> bytes:
    """A users_pb2.User without what differs between two creations (id, timestamps,
    tenant)."""
    from scim_identity_api.v1 import users_pb2

    c = users_pb2.User()
    c.CopyFrom(u)
    c.meta.ClearField("id")
    c.meta.ClearField("created")
    c.meta.ClearField("last_modified")
    c.ClearField("tenant_id")
    return bytes(c.SerializeToString(deterministic=True))


def _normalised_event(payload: bytes, revision_base: int) -> bytes:
    from scim_identity_api.v1 import changes_pb2

    ev = changes_pb2.ChangeEvent.FromString(payload)
    ev.ClearField("resource_id")
    ev.ClearField("time")
    ev.ClearField("tenant_id")
    ev.revision -= revision_base
    user = _normalised_user(ev.user)
    ev.ClearField("user")
    return bytes(ev.SerializeToString(deterministic=True)) + b"|" + user


def _mask(value: object) -> str:
    """A stored timestamp's shape: its text with every digit replaced."""
    return re.sub(r"[0-9]", "9", str(value))


def _text(value: object) -> object:
    """A stored JSON value: SQLite gives its text, psycopg the parsed value."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _snapshot(db: Database, tenant: Tenant) -> dict[str, list[Any]]:
    """What two tenants seeded alike must share."""
    from sqlalchemy import select, text

    from identity_service.domain import tenants, users
    from identity_service.settings import Settings
    from identity_service.storage.models import EventRow, TenantRow, UserRow, UserValueRow
    from scim_identity_api.v1 import common_pb2, users_pb2

    skip = {"pk", "id", "tenant_pk", "created", "last_modified"}
    with db.read() as s:
        row = tenants.by_id(s, tenant.id)
        user_rows = s.execute(
            select(UserRow.__table__).where(UserRow.tenant_pk == tenant.pk).order_by(UserRow.pk)
        ).all()
        ids = [r.id for r in user_rows]
        pks = {r.pk: k for k, r in enumerate(user_rows)}
        value_rows = s.execute(
            select(UserValueRow.__table__)
            .where(UserValueRow.tenant_pk == tenant.pk)
            .order_by(UserValueRow.pk)
        ).all()
        base = int(
            s.execute(
                select(EventRow.revision)
                .where(EventRow.tenant_pk == tenant.pk, EventRow.resource_type == "User")
                .order_by(EventRow.revision)
            ).first()[0]
        )
        event_rows = s.execute(
            select(EventRow.revision, EventRow.type, EventRow.resource_type, EventRow.payload)
            .where(EventRow.tenant_pk == tenant.pk, EventRow.revision >= base)
            .order_by(EventRow.revision)
        ).all()
        got = [_normalised_user(users.get(s, row, uid)) for uid in ids]
        listed = users.list_users(
            s,
            row,
            users_pb2.ListUsersRequest(
                tenant_id=tenant.id, page=common_pb2.Page(count=len(ids) + 10)
            ),
            Settings(),
        )
        revision = int(
            s.execute(select(TenantRow.revision).where(TenantRow.pk == tenant.pk)).scalar_one()
        )
        # As stored, before SQLAlchemy's result processing (text(): untyped columns):
        # datetimes with their digits masked, JSON as its text, NULL as None.
        raw_users = s.execute(
            text(
                "SELECT created, last_modified, active, doc, body FROM users "
                "WHERE tenant_pk = :t ORDER BY pk"
            ),
            {"t": tenant.pk},
        ).all()
        raw_values = s.execute(
            text(
                'SELECT value, value_key, type, "primary", display, extra FROM user_values '
                "WHERE tenant_pk = :t ORDER BY pk"
            ),
            {"t": tenant.pk},
        ).all()
        raw_events = s.execute(
            text("SELECT time FROM events WHERE tenant_pk = :t AND revision >= :b ORDER BY pk"),
            {"t": tenant.pk, "b": base},
        ).all()
    return {
        "stored users": [
            (_mask(r[0]), _mask(r[1]), r[2], _text(r[3]), bytes(r[4])) for r in raw_users
        ],
        "stored user_values": [(*r[:5], _text(r[5])) for r in raw_values],
        "stored events": [_mask(r[0]) for r in raw_events],
        "users rows": [{k: v for k, v in r._mapping.items() if k not in skip} for r in user_rows],
        "user_values rows": [
            {
                **{k: v for k, v in r._mapping.items() if k not in {"pk", "tenant_pk", "user_pk"}},
                "user": pks[r.user_pk],
            }
            for r in value_rows
        ],
        "users.get": got,
        "ListUsers": [_normalised_user(u) for u in listed.users]
        + [listed.total_results, listed.start_index, listed.revision - base],
        "events": [
            (r.revision - base, r.type, r.resource_type, _normalised_event(r.payload, base))
            for r in event_rows
        ],
        "tenant revision": [revision - base],
    }


def check_equivalence(url: str, n: int = 5) -> None:
    """Seeds users 0..n-1 with `users.create` into one tenant and with `add_users` into
    another; raises unless every row, read and event matches (ids and times aside)."""
    from identity_service.context import SYSTEM
    from identity_service.domain import tenants, users

    slow = create_tenant(url, "seedcheck-create")
    fast = create_tenant(url, "seedcheck-bulk")
    db = _database(url)
    try:
        with db.write() as s:
            row = tenants.by_id(s, slow.id)
            for i in range(n):
                users.create(s, row, seed_user(i), SYSTEM)
        add_users(url, fast, 0, n, progress=None)
        a, b = _snapshot(db, slow), _snapshot(db, fast)
    finally:
        db.close()
    for key in a:
        if a[key] != b[key]:
            k = next(
                (k for k, (x, y) in enumerate(zip(a[key], b[key], strict=False)) if x != y),
                min(len(a[key]), len(b[key])),
            )
            raise RuntimeError(
                f"bulk seeding differs from users.create in {key} (item {k} of "
                f"{len(a[key])} / {len(b[key])}):\n"
                f"  users.create: {a[key][k : k + 1]!r:.1500}\n"
                f"  bulk:         {b[key][k : k + 1]!r:.1500}"
            )
    if len(a["users rows"]) != n or len(a["events"]) != n:
        raise RuntimeError(f"equivalence check saw {len(a['users rows'])} users, expected {n}")


def check_seeded(url: str, tenant: Tenant, ids: UserIds, numbers: Sequence[int]) -> None:
    """After a bulk seed: the user count, the tenant's revision against its last event,
    and users.get of the given seeded users against seed_user(i)."""
    from sqlalchemy import func, select

    from identity_service.domain import tenants, users
    from identity_service.storage.models import EventRow, UserRow

    db = _database(url)
    try:
        with db.read() as s:
            row = tenants.by_id(s, tenant.id)
            count = s.execute(
                select(func.count()).select_from(UserRow).where(UserRow.tenant_pk == tenant.pk)
            ).scalar_one()
            last = s.execute(
                select(func.max(EventRow.revision)).where(EventRow.tenant_pk == tenant.pk)
            ).scalar_one()
            if count < len(ids) or last != row.revision:
                raise RuntimeError(
                    f"seeded tenant: {count} users for {len(ids)} ids, revision {row.revision}, "
                    f"last event {last}"
                )
            for i in numbers:
                got = users.get(s, row, ids[i])
                want = users.stored_form(seed_user(i))
                if (
                    got.user_name != want.user_name
                    or got.external_id != want.external_id
                    or list(got.emails) != list(want.emails)
                    or got.meta.version != 1
                ):
                    raise RuntimeError(f"seeded user {i} reads back as {got}")
    finally:
        db.close()


# -- python -m bench.seed --------------------------------------------------------------------


@contextlib.contextmanager
def _fresh(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
            yield f"sqlite:///{tmp}/identity.db"
        return
    from tests.support import throwaway_pg_database

    with throwaway_pg_database("identity_seedcheck") as url:
        yield url


def check_backend(backend: str, n: int = 5) -> None:
    with _fresh(backend) as url:
        check_equivalence(url, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--users", type=int, default=5, help="users seeded each way")
    parser.add_argument(
        "--time", type=int, default=0, metavar="N", help="also time seeding N users"
    )
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        check_backend(backend, args.users)
        log(f"{backend}: bulk seeding matches users.create ({args.users} users)")
        if args.time:
            with _fresh(backend) as url:
                tenant = create_tenant(url, "timing")
                t0 = time.perf_counter()
                ids = add_users(url, tenant, 0, args.time)
                took = time.perf_counter() - t0
                check_seeded(url, tenant, ids, [0, len(ids) // 2, len(ids) - 1])
                log(f"{backend}: {args.time:,} users in {took:.1f}s ({args.time / took:,.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
