"""Mirror a tenant's users into a local SQLite table and keep it current.

    python clients/examples/mirror_users.py --target 127.0.0.1:50051 --tenant demo --db mirror.db

The first run lists every user (the list reports the revision it reflects),
then watches from that revision: the Kubernetes list-then-watch pattern, so
nothing changes unseen between the two. The checkpoint lives in the same
database, so a restart resumes where the last run stopped. If the events after
the checkpoint were compacted (OUT_OF_RANGE), it lists again.

Events can repeat after a crash (delivery is at least once), so applying one is
idempotent: an upsert guarded by the user's version, or a delete.
Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys

from scim_identity_client import (
    IdentityClient,
    OutOfRange,
    SqliteCheckpoint,
    WatchIterator,
    event_name,
)
from scim_identity_client.types import ChangeEvent, EventType, User

log = logging.getLogger("mirror_users")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    display_name TEXT,
    active INTEGER NOT NULL,
    version INTEGER NOT NULL,
    revision INTEGER NOT NULL
)
"""


def upsert(conn: sqlite3.Connection, user: User, revision: int) -> None:
    # An older version never overwrites a newer one: replays after a list are harmless.
    conn.execute(
        "INSERT INTO users (id, user_name, display_name, active, version, revision) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET user_name = excluded.user_name, "
        "display_name = excluded.display_name, active = excluded.active, "
        "version = excluded.version, revision = excluded.revision "
        "WHERE excluded.version >= users.version",
        (
            user.meta.id,
            user.user_name,
            user.display_name or None,
            int(user.active),
            user.meta.version,
            revision,
        ),
    )


def apply(conn: sqlite3.Connection, ev: ChangeEvent) -> None:
    if ev.WhichOneof("resource") != "user":
        return  # role assignments also concern users; this mirror keeps users only
    with conn:
        if ev.type == EventType.EVENT_TYPE_USER_DELETED:
            conn.execute("DELETE FROM users WHERE id = ?", (ev.user.meta.id,))
        else:
            upsert(conn, ev.user, ev.revision)
    log.info("revision %d: %s %s", ev.revision, event_name(ev.type), ev.user.user_name)


def full_sync(client: IdentityClient, conn: sqlite3.Connection, tenant_id: str) -> int:
    """Replaces the table with a fresh listing; returns the revision to watch from."""
    since: int | None = None
    with conn:
        conn.execute("DELETE FROM users")
        cursor = ""
        while True:
            page = client.list_users(tenant_id, cursor=cursor, count=500)
            # Each page reflects its own snapshot: watching from the first (oldest)
            # revision replays whatever changed while we paged, and upserts converge.
            since = page.revision if since is None else min(since, page.revision)
            for user in page.users:
                upsert(conn, user, page.revision)
            cursor = page.next_cursor
            if not cursor:
                break
    n = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    log.info("listed %d users at revision %d", n, since or 0)
    return since or 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=os.environ.get("IDENTITY_TARGET", "127.0.0.1:50051"))
    p.add_argument("--tenant", default="demo", help="tenant name or id")
    p.add_argument("--db", default="mirror.db", help="SQLite file for the mirror")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    conn = sqlite3.connect(args.db)
    conn.execute(SCHEMA)
    stop = False
    current: WatchIterator | None = None

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True
        if current is not None:
            current.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    options = [("grpc.max_reconnect_backoff_ms", 5000), ("grpc.initial_reconnect_backoff_ms", 200)]
    # A secured core: the same variables as identityctl (IDENTITY_TOKEN or
    # IDENTITY_TOKEN_FILE, IDENTITY_TLS_*).
    with IdentityClient.from_env(target=args.target, options=options) as client:
        tenant_id = client.get_tenant(args.tenant).id
        checkpoint = SqliteCheckpoint(conn, f"mirror_users:{tenant_id}")
        while not stop:
            since = checkpoint.load()
            if since is None:
                since = full_sync(client, conn, tenant_id)
                checkpoint.save(since)
            current = client.watch(
                tenant_id, since=since, checkpoint=checkpoint, resource_types=["User"]
            )
            try:
                for ev in current:
                    apply(conn, ev)
            except OutOfRange as exc:
                log.warning("%s; listing again", exc)
                checkpoint.clear()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
