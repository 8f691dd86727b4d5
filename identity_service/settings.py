"""Configuration, read from the environment once into a frozen object passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{key} must be an integer, got {raw!r}") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SystemExit(f"{key} must be true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    #: SQLAlchemy URL: sqlite:///identity.db (default) or postgresql://...
    database_url: str = "sqlite:///identity.db"
    #: host:port the gRPC server binds; port 0 picks a free one.
    listen: str = "127.0.0.1:50051"
    #: Apply Alembic migrations at start (else run `identity-service migrate` first).
    migrate_on_start: bool = True
    #: Threads that run database work for the asyncio server.
    db_threads: int = 16
    #: Connection pool size (PostgreSQL).
    db_pool_size: int = 16
    #: Largest page a list may return.
    max_page_size: int = 1000
    #: Page size when the caller gives none.
    default_page_size: int = 100
    #: Members returned inline with a group; larger groups page via ListMembers.
    max_inline_members: int = 200_000
    #: Seconds between database health probes.
    health_interval: float = 2.0
    #: Seconds SIGTERM waits for in-flight calls.
    shutdown_grace: float = 10.0
    #: Extra fields for subsystems that read their own keys.
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            database_url=env.get("IDENTITY_DATABASE_URL", "").strip() or d.database_url,
            listen=env.get("IDENTITY_LISTEN", "").strip() or d.listen,
            migrate_on_start=_bool(env, "IDENTITY_MIGRATE_ON_START", True),
            db_threads=_int(env, "IDENTITY_DB_THREADS", d.db_threads),
            db_pool_size=_int(env, "IDENTITY_DB_POOL_SIZE", d.db_pool_size),
            max_page_size=_int(env, "IDENTITY_MAX_PAGE_SIZE", d.max_page_size),
            default_page_size=_int(env, "IDENTITY_DEFAULT_PAGE_SIZE", d.default_page_size),
            shutdown_grace=float(_int(env, "IDENTITY_SHUTDOWN_GRACE_SECONDS", 10)),
            extra={k: v for k, v in env.items() if k.startswith("IDENTITY_")},
        )
