"""Migrations: `identity-service migrate` builds the schema the models describe,
on both databases, and running it again changes nothing."""

from __future__ import annotations

import subprocess

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from identity_service.storage import migrate
from identity_service.storage.db import normalise_url
from identity_service.storage.models import Base

from ..support import VENV_BIN, throwaway_pg_database


def _check(url: str) -> None:
    for _ in range(2):  # the second run is a no-op
        out = subprocess.run(
            [str(VENV_BIN / "identity-service"), "migrate"],
            env={"IDENTITY_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert f"database at revision {migrate.head()}" in out.stdout
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrate_sqlite(tmp_path: object) -> None:
    _check(f"sqlite:///{tmp_path}/m.db")


def test_migrate_postgresql() -> None:
    with throwaway_pg_database("identity_migrate") as url:
        _check(url)
        engine = create_engine(normalise_url(url))
        with engine.connect() as conn:
            options = conn.execute(
                text("SELECT reloptions FROM pg_class WHERE relname = 'tenants'")
            ).scalar_one()
        engine.dispose()
        assert "fillfactor=50" in options  # revision bumps stay HOT (migration 0003)


def test_migrate_reports_unreachable_database() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "identity-service"), "migrate"],
        env={
            "IDENTITY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "OperationalError" in out.stderr
