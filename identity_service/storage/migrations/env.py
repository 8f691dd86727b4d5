"""Alembic environment. `identity-service migrate` (and the start-up migration) pass
their connection in, and run under PostgreSQL's advisory lock (migrate.upgrade). The
`alembic` command (alembic.ini at the repository root: `alembic current`, `history`,
`downgrade -1`, ...) connects to the database the service's settings name
(IDENTITY_DATABASE_URL and friends, *_FILE variants included)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from identity_service.storage.models import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


passed = context.config.attributes.get("connection")
if passed is not None:
    run(passed)
elif context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them online")
else:
    from identity_service.settings import Settings
    from identity_service.storage.db import Database

    db = Database(Settings.from_env())
    try:
        with db.engine.connect() as conn:
            run(conn)
            conn.commit()
    finally:
        db.close()
