"""Upgrades: every migration runs forward on a database made and filled by the
previous release's schema, on both databases, and the service then serves the old
data. Each step is checked from its predecessor (0001 -> 0002 -> ... -> head)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from identity_service.settings import Settings
from identity_service.storage import migrate
from identity_service.storage.db import Database
from scim_identity_api.v1 import users_pb2
from scim_identity_client import IdentityClient

from ..support import start_identity_process, throwaway_pg_database

pytestmark = pytest.mark.e2e


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
    else:
        with throwaway_pg_database("identity_upgrade") as url:
            yield url


USERS = (
    "legacy@example.com",
    "older@example.com",
    # Distinct under the first releases' lower() keys; 0005's PRECIS keys collide
    # them (the older keeps the key) or refuse the name (a zero-width space).
    "Straße@example.com",
    "STRASSE@example.com",
    "cafe\u0301@example.com",
    "zero\u200bwidth@example.com",
)


def _check_0002(conn: Connection, tenant_pk: int) -> None:
    # Existing users were written by SCIM: the new column says so.
    managed = conn.execute(
        text("SELECT managed_by FROM users WHERE tenant_pk = :t"), {"t": tenant_pk}
    ).scalars()
    assert list(managed) == ["scim"] * len(USERS)


def _check_0003(conn: Connection, tenant_pk: int) -> None:
    if conn.dialect.name != "postgresql":
        return  # a PostgreSQL storage parameter; nothing to do on SQLite
    options = conn.execute(
        text("SELECT reloptions FROM pg_class WHERE relname = 'tenants'")
    ).scalar_one()
    assert "fillfactor=50" in (options or []), options


def _check_0004(conn: Connection, tenant_pk: int) -> None:
    # The counts an unfiltered list reports as totalResults are backfilled from
    # the rows already there (without it an upgraded tenant reports 0).
    counts = conn.execute(
        text("SELECT user_count, group_count FROM tenants WHERE pk = :t"), {"t": tenant_pk}
    ).one()
    assert tuple(counts) == (len(USERS), 1), counts
    # A tenant written without the counts (as by a replica of the previous release
    # during a rolling upgrade) starts at 0, and a count is never NULL.
    columns = {c["name"]: c for c in inspect(conn).get_columns("tenants")}
    assert not columns["user_count"]["nullable"] and not columns["group_count"]["nullable"]
    other = str(uuid.uuid4())
    now = datetime.now(UTC).replace(tzinfo=None)
    with conn.begin_nested() if conn.in_transaction() else conn.begin():
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, display_name, active, revision, "
                "compacted_through, settings, created, last_modified) VALUES "
                "(:id, :name, 'New', :t, 0, 0, '{}', :now, :now)"
            ),
            {"id": other, "name": f"new-{other[:8]}", "now": now, "t": True},
        )
    fresh = conn.execute(
        text("SELECT user_count, group_count FROM tenants WHERE id = :id"), {"id": other}
    ).one()
    assert tuple(fresh) == (0, 0), fresh
    indexes = {
        table: {ix["name"] for ix in inspect(conn).get_indexes(table)}
        for table in ("users", "groups", "group_members")
    }
    assert "ix_users_tenant_pk" in indexes["users"], indexes
    assert "ix_groups_tenant_pk" in indexes["groups"], indexes
    assert "ix_group_members_group_pk_pk" in indexes["group_members"], indexes


def _check_0005(conn: Connection, tenant_pk: int) -> None:
    # userName keys are the PRECIS mapping now; of names that collide under it the
    # oldest keeps the key, the others (and refused names) are kept apart.
    keys = dict(
        conn.execute(
            text("SELECT user_name, user_name_key FROM users WHERE tenant_pk = :t ORDER BY pk"),
            {"t": tenant_pk},
        ).all()
    )
    assert keys["legacy@example.com"] == "legacy@example.com"
    assert keys["Straße@example.com"] == "strasse@example.com"
    assert keys["STRASSE@example.com"].startswith("strasse@example.com\ufffd")
    assert keys["cafe\u0301@example.com"] == "caf\u00e9@example.com"
    assert keys["zero\u200bwidth@example.com"].startswith("zero\u200bwidth@example.com\ufffd")
    assert len(set(keys.values())) == len(keys)


def _check_0006(conn: Connection, tenant_pk: int) -> None:
    # operations.actor exists, empty for any record so far (SCIM requests). The sign-in tables
    # start empty and refuse a secret twice.
    actors = conn.execute(
        text("SELECT actor FROM operations WHERE tenant_pk = :t"), {"t": tenant_pk}
    ).scalars()
    assert set(actors) <= {""}
    for table in ("admin_links", "admin_sessions"):
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        uniques = {tuple(u["column_names"]) for u in inspect(conn).get_unique_constraints(table)}
        assert ("secret_hash",) in uniques, uniques


def _check_0007(conn: Connection, tenant_pk: int) -> None:
    # The history's request-id lookup is on an index of the tenant's records.
    indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("operations")}
    assert indexes.get("ix_operations_tenant_request") == ["tenant_pk", "request_id"], indexes


#: What each step must have done to the data the previous release left. A new
#: migration needs an entry here (the test refuses a step it cannot check).
STEP_CHECKS: dict[str, Callable[[Connection, int], None]] = {
    "0002": _check_0002,
    "0003": _check_0003,
    "0004": _check_0004,
    "0005": _check_0005,
    "0006": _check_0006,
    "0007": _check_0007,
}


def test_each_migration_upgrades_a_filled_database(empty_db: str, tmp_path: Path) -> None:
    revs = revisions()
    assert revs[0] == "0001" and len(revs) >= 2
    assert set(revs[1:]) == set(STEP_CHECKS), "every migration step needs a check here"
    db = Database(Settings(database_url=empty_db))
    tenant_id, user_ids, group_id = str(uuid.uuid4()), [], str(uuid.uuid4())
    try:
        with db.engine.connect() as conn:
            command.upgrade(migrate.config(conn), revs[0])
            conn.commit()
        # Data as the first release wrote it (no columns from later migrations).
        now = datetime.now(UTC).replace(tzinfo=None)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, display_name, active, revision, "
                    "compacted_through, settings, created, last_modified) VALUES "
                    "(:id, 'old', 'Old', :t, 0, 0, '{}', :now, :now)"
                ),
                {"id": tenant_id, "now": now, "t": True},
            )
            tpk = conn.execute(
                text("SELECT pk FROM tenants WHERE id = :id"), {"id": tenant_id}
            ).scalar_one()
            for name in USERS:
                user_ids.append(str(uuid.uuid4()))
                body = users_pb2.User(user_name=name, active=True).SerializeToString()
                conn.execute(
                    text(
                        "INSERT INTO users (id, tenant_pk, version, created, last_modified, "
                        "user_name, user_name_key, active, doc, body) VALUES (:id, :t, 1, :now, "
                        ":now, :name, :key, :a, :doc, :body)"
                    ),
                    {
                        "id": user_ids[-1],
                        "t": tpk,
                        "now": now,
                        "a": True,
                        "name": name,
                        "key": name.lower(),
                        "doc": json.dumps({"userName": name}),
                        "body": body,
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO groups (id, tenant_pk, version, created, last_modified, "
                    "display_name, display_name_key, member_count, doc) VALUES "
                    "(:id, :t, 1, :now, :now, 'Old team', 'old team', 0, '{}')"
                ),
                {"id": group_id, "t": tpk, "now": now},
            )
        # Each step from its predecessor, checked before the next one runs.
        for rev in revs[1:]:
            with db.engine.connect() as conn:
                command.upgrade(migrate.config(conn), rev)
                conn.commit()
            with db.engine.connect() as conn:
                STEP_CHECKS[rev](conn, tpk)
        assert migrate.is_current(db)
    finally:
        db.close()
    proc, target = start_identity_process(empty_db, tmp_path)
    try:
        with IdentityClient(target) as client:
            # The upgraded tenant's unfiltered lists report their real totals.
            # count=0: the total alone, which an unfiltered list reads from the
            # tenant's kept count (a short page would give its own length).
            assert client.list_users(tenant_id, count=0).total_results == len(USERS)
            assert client.list_groups(tenant_id, count=0).total_results == 1
            users = client.list_users(tenant_id)
            assert users.total_results == len(USERS)
            assert sorted(u.user_name for u in users.users) == sorted(USERS)
            groups = client.list_groups(tenant_id)
            assert groups.total_results == 1
            assert [g.display_name for g in groups.groups] == ["Old team"]
            user = client.get_user(tenant_id, user_ids[0])
            assert user.user_name == USERS[0] and user.managed_by == "scim"
            user.title = "upgraded"
            assert client.replace_user(tenant_id, user).meta.version == 2
            # Later writes keep the backfilled counts exact.
            client.delete_user(tenant_id, user_ids[1])
            assert client.list_users(tenant_id, count=0).total_results == len(USERS) - 1
    finally:
        proc.stop()
