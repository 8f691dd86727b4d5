"""Where a subscriber keeps the last revision it handled, so it resumes after a restart.

    checkpoint = FileCheckpoint("billing-sync.revision")
    for event in client.watch(tenant_id, checkpoint=checkpoint):
        handle(event)          # saved once you ask for the next event

A revision is saved only after the caller has finished with its event (when it
asks for the next one) or from a heartbeat, so a crash repeats at most the event
being handled: delivery is at least once; de-duplicate by revision or make the
handler idempotent.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Checkpoint(Protocol):
    """Stores one revision. `load()` is None before the first `save()`."""

    def load(self) -> int | None: ...

    def save(self, revision: int) -> None: ...


class MemoryCheckpoint:
    """A checkpoint that lasts as long as the process (tests, one-off scripts)."""

    def __init__(self, revision: int | None = None) -> None:
        self.revision = revision

    def load(self) -> int | None:
        return self.revision

    def save(self, revision: int) -> None:
        self.revision = revision

    def clear(self) -> None:
        self.revision = None


class FileCheckpoint:
    """The revision as text in a file, replaced atomically: a crash mid-save leaves
    the previous revision, never a torn file."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync

    def load(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{self.path} does not hold a revision: {text[:40]!r}") from None

    def save(self, revision: int) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(f"{revision}\n")
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self.fsync:
            # The rename itself is durable only once the directory is synced.
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def clear(self) -> None:
        """Forgets the revision (the next run starts over, e.g. after OUT_OF_RANGE)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SqliteCheckpoint:
    """One row per consumer in a table of a SQLite database; give it the database
    your consumer already writes so the checkpoint lives beside the data.

    `save` commits. Passing a `sqlite3.Connection` shares it (use it from one
    thread at a time, as sqlite3 requires); a path opens a private connection.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | sqlite3.Connection,
        name: str = "default",
        *,
        table: str = "identity_checkpoints",
    ) -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"not a plain table name: {table!r}")
        if isinstance(database, sqlite3.Connection):
            self.conn = database
        else:
            # The watch iterator may save from its caller's thread; one lock serialises use.
            self.conn = sqlite3.connect(database, check_same_thread=False)
        self.name = name
        self.table = table
        self._lock = threading.Lock()
        with self._lock, self.conn:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                "(name TEXT PRIMARY KEY, revision INTEGER NOT NULL)"
            )

    def load(self) -> int | None:
        with self._lock:
            row = self.conn.execute(
                f"SELECT revision FROM {self.table} WHERE name = ?",  # noqa: S608 - checked identifier
                (self.name,),
            ).fetchone()
        return None if row is None else int(row[0])

    def save(self, revision: int) -> None:
        with self._lock, self.conn:
            self.conn.execute(
                f"INSERT INTO {self.table} (name, revision) VALUES (?, ?) "  # noqa: S608 - checked identifier
                "ON CONFLICT(name) DO UPDATE SET revision = excluded.revision",
                (self.name, revision),
            )

    def clear(self) -> None:
        """Forgets the revision (the next run starts over, e.g. after OUT_OF_RANGE)."""
        with self._lock, self.conn:
            self.conn.execute(
                f"DELETE FROM {self.table} WHERE name = ?",  # noqa: S608 - checked identifier
                (self.name,),
            )
