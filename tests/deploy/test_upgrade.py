"""Upgrades: every migration runs forward on a database made and filled by the
previous release's schema, on both databases, and the service then serves the old
data. Each step is checked from its predecessor (0001 -> 0002 -> ... -> head)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from identity.v1 import users_pb2
from identity_client import IdentityClient
from identity_service.settings import Settings
from identity_service.storage import migrate
from identity_service.storage.db import Database

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


def test_each_migration_upgrades_a_filled_database(empty_db: str, tmp_path: Path) -> None:
    revs = revisions()
    assert revs[0] == "0001" and len(revs) >= 2
    db = Database(Settings(database_url=empty_db))
    tenant_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        with db.engine.connect() as conn:
            command.upgrade(migrate.config(conn), revs[0])
            conn.commit()
        # Data as the first release wrote it (no columns from later migrations).
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, display_name, active, revision, "
                    "compacted_through, settings, created, last_modified) VALUES "
                    "(:id, 'old', 'Old', :t, 0, 0, '{}', :now, :now)"
                ),
                {"id": tenant_id, "now": now.replace(tzinfo=None), "t": True},
            )
            tpk = conn.execute(
                text("SELECT pk FROM tenants WHERE id = :id"), {"id": tenant_id}
            ).scalar_one()
            body = users_pb2.User(user_name="legacy@example.com", active=True).SerializeToString()
            conn.execute(
                text(
                    "INSERT INTO users (id, tenant_pk, version, created, last_modified, user_name, "
                    "user_name_key, active, doc, body) VALUES (:id, :t, 1, :now, :now, "
                    ":name, :name, :a, :doc, :body)"
                ),
                {
                    "id": user_id,
                    "t": tpk,
                    "now": now.replace(tzinfo=None),
                    "a": True,
                    "name": "legacy@example.com",
                    "doc": '{"userName": "legacy@example.com"}',
                    "body": body,
                },
            )
        for rev in revs[1:]:
            with db.engine.connect() as conn:
                command.upgrade(migrate.config(conn), rev)
                conn.commit()
        assert migrate.is_current(db)
    finally:
        db.close()
    proc, target = start_identity_process(empty_db, tmp_path)
    try:
        with IdentityClient(target) as client:
            user = client.get_user(tenant_id, user_id)
            assert user.user_name == "legacy@example.com" and user.managed_by == "scim"
            user.title = "upgraded"
            assert client.replace_user(tenant_id, user).meta.version == 2
    finally:
        proc.stop()
