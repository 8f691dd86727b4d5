"""Configuration, read from the environment once into a frozen object passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from scim_identity_api.env import SecretSettingError, otlp_traces_configured, secret


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


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    for c in choices:
        if raw.lower() == c.lower():
            return c
    raise SystemExit(f"{key} must be one of {', '.join(choices)}, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    #: SQLAlchemy URL: sqlite:///identity.db (default) or postgresql://...; it may hold
    #: the database password, so it is never shown in repr.
    database_url: str = field(default="sqlite:///identity.db", repr=False)
    #: host:port the gRPC server binds; port 0 picks a free one.
    listen: str = "127.0.0.1:50051"
    #: Apply Alembic migrations at start (else run `identity-service migrate` first).
    migrate_on_start: bool = True
    #: Seconds `identity-service migrate` waits for the database to answer (0: fail at
    #: once, as before; docker-compose.yml sets 120).
    migrate_wait_seconds: int = 0
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
    #: Events older than this many seconds are compacted away; 0 keeps them forever.
    event_retention_seconds: int = 7 * 24 * 3600
    #: Operations-history records older than this many seconds are deleted; 0 keeps them.
    history_retention_seconds: int = 90 * 24 * 3600
    #: How long an admin console session lasts after its sign-in, in seconds.
    admin_session_seconds: int = 8 * 3600
    #: Seconds between compaction runs.
    compaction_interval_seconds: int = 300
    #: Seconds between heartbeats on an idle Watch stream (a request may ask for another).
    watch_heartbeat_seconds: int = 5
    #: Milliseconds between safety-net polls of the event log while streams are open.
    watch_poll_interval_ms: int = 1000
    #: Events a subscriber may have waiting before it is disconnected as too slow.
    watch_queue_events: int = 4096
    #: Bytes of events a subscriber may have waiting before it is disconnected as too slow.
    watch_queue_bytes: int = 16 * 1024 * 1024
    #: Most events in one WatchResponse for subscribers that ask for batches.
    watch_batch_events: int = 1000
    #: Most bytes of events in one WatchResponse (an event larger than this goes alone).
    watch_batch_bytes: int = 1024 * 1024
    #: Milliseconds a tenant's feed waits after a delivery before reading the log
    #: again, so that commits in between reach each subscriber as one message.
    watch_batch_window_ms: int = 20
    #: The most of the event loop's time, in percent, that delivering a tenant's events
    #: to its subscribers may take while the tenant is written to continuously (the
    #: feed waits longer between reads, so each message carries more). Default 10 on a
    #: process that takes writes, 50 on a stream replica (IDENTITY_ROLE=streams).
    watch_loop_share_percent: int = 10
    #: The longest, in milliseconds (0 to 1000), the loop share may make a tenant's
    #: feed wait between reads (and so delay an event). With many subscribers one
    #: delivery round costs more; past this ceiling the streams take a larger share
    #: rather than every subscriber a longer delay. The batch window is waited anyway.
    watch_max_delay_ms: int = 100
    #: Events read per database query when replaying or tailing.
    watch_page_size: int = 500
    #: Threads that read the event log for streams (kept apart from the writers' threads).
    watch_db_threads: int = 4
    #: "all" (every RPC) or "streams" (a stream replica: Watch, GetRevision and reads
    #: only, no migrations, no compaction; see auth.STREAM_REPLICA_METHODS).
    role: str = "all"
    #: "json" (one object per line) or "text".
    log_format: str = "json"
    log_level: str = "INFO"
    #: host:port of the Prometheus /metrics endpoint; empty: not served.
    metrics_listen: str = ""
    #: PEM certificate chain and private key: serve TLS when both are set.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: PEM CA bundle: require client certificates signed by it (mTLS). Needs TLS.
    tls_client_ca_file: str = ""
    #: JSON list of service credentials; when set every call (but health and
    #: reflection) must present one as `authorization: Bearer <secret>`.
    credentials_file: str = ""
    #: `identity-service healthcheck` over TLS: the CA to verify the server with
    #: (default: the server's own certificate file, right for a self-signed one), the
    #: name to expect in its certificate, and a client certificate when mTLS is on.
    healthcheck_ca_file: str = ""
    healthcheck_server_name: str = "localhost"
    healthcheck_cert_file: str = ""
    healthcheck_key_file: str = ""
    #: Export OpenTelemetry traces over OTLP (tracing.py): set when the environment
    #: names an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT); the
    #: exporter reads the rest of the standard OTEL_* variables itself.
    tracing: bool = False
    #: Extra fields for subsystems that read their own keys.
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        cert, key, client_ca, creds = _security(env)
        try:
            database_url = _database_url(env) or d.database_url
        except SecretSettingError as exc:
            raise SystemExit(str(exc)) from None
        return cls(
            database_url=database_url,
            listen=env.get("IDENTITY_LISTEN", "").strip() or d.listen,
            role=_choice(env, "IDENTITY_ROLE", ("all", "streams"), d.role),
            log_format=_choice(env, "IDENTITY_LOG_FORMAT", ("json", "text"), d.log_format),
            log_level=_choice(
                env, "IDENTITY_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), d.log_level
            ),
            metrics_listen=env.get("IDENTITY_METRICS_LISTEN", "").strip(),
            migrate_on_start=_bool(env, "IDENTITY_MIGRATE_ON_START", True),
            migrate_wait_seconds=_int(env, "IDENTITY_MIGRATE_WAIT_SECONDS", d.migrate_wait_seconds),
            db_threads=_int(env, "IDENTITY_DB_THREADS", d.db_threads),
            db_pool_size=_int(env, "IDENTITY_DB_POOL_SIZE", d.db_pool_size),
            max_page_size=_int(env, "IDENTITY_MAX_PAGE_SIZE", d.max_page_size),
            default_page_size=_int(env, "IDENTITY_DEFAULT_PAGE_SIZE", d.default_page_size),
            shutdown_grace=float(_int(env, "IDENTITY_SHUTDOWN_GRACE_SECONDS", 10)),
            event_retention_seconds=_int(
                env, "IDENTITY_EVENT_RETENTION_SECONDS", d.event_retention_seconds
            ),
            history_retention_seconds=_int(
                env, "IDENTITY_HISTORY_RETENTION_SECONDS", d.history_retention_seconds
            ),
            compaction_interval_seconds=_int(
                env, "IDENTITY_COMPACTION_INTERVAL_SECONDS", d.compaction_interval_seconds
            ),
            admin_session_seconds=_int(
                env, "IDENTITY_ADMIN_SESSION_SECONDS", d.admin_session_seconds
            ),
            watch_heartbeat_seconds=_int(
                env, "IDENTITY_WATCH_HEARTBEAT_SECONDS", d.watch_heartbeat_seconds
            ),
            watch_poll_interval_ms=_int(
                env, "IDENTITY_WATCH_POLL_INTERVAL_MS", d.watch_poll_interval_ms
            ),
            watch_queue_events=_int(env, "IDENTITY_WATCH_QUEUE_EVENTS", d.watch_queue_events),
            watch_queue_bytes=_int(env, "IDENTITY_WATCH_QUEUE_BYTES", d.watch_queue_bytes),
            watch_batch_events=_int(env, "IDENTITY_WATCH_BATCH_EVENTS", d.watch_batch_events),
            watch_batch_bytes=_int(env, "IDENTITY_WATCH_BATCH_BYTES", d.watch_batch_bytes),
            watch_batch_window_ms=_int(
                env, "IDENTITY_WATCH_BATCH_WINDOW_MS", d.watch_batch_window_ms
            ),
            watch_loop_share_percent=_int(
                env,
                "IDENTITY_WATCH_LOOP_SHARE_PERCENT",
                50
                if _choice(env, "IDENTITY_ROLE", ("all", "streams"), d.role) == "streams"
                # A replica has no writers to leave time to, but its subscribers must
                # each receive (and decode) every message it sends.
                else d.watch_loop_share_percent,
            ),
            watch_max_delay_ms=_int(env, "IDENTITY_WATCH_MAX_DELAY_MS", d.watch_max_delay_ms),
            watch_page_size=_int(env, "IDENTITY_WATCH_PAGE_SIZE", d.watch_page_size),
            watch_db_threads=_int(env, "IDENTITY_WATCH_DB_THREADS", d.watch_db_threads),
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=client_ca,
            credentials_file=creds,
            tracing=otlp_traces_configured(env),
            healthcheck_ca_file=env.get("IDENTITY_HEALTHCHECK_CA_FILE", "").strip(),
            healthcheck_server_name=env.get("IDENTITY_HEALTHCHECK_SERVER_NAME", "").strip()
            or d.healthcheck_server_name,
            healthcheck_cert_file=env.get("IDENTITY_HEALTHCHECK_CERT_FILE", "").strip(),
            healthcheck_key_file=env.get("IDENTITY_HEALTHCHECK_KEY_FILE", "").strip(),
            extra={k: v for k, v in env.items() if k.startswith("IDENTITY_")},
        )


def _database_url(env: Mapping[str, str]) -> str:
    """IDENTITY_DATABASE_URL (or _FILE), with IDENTITY_DATABASE_PASSWORD (or _FILE) put
    in as its password: compose keeps the URL in plain sight and the password in the
    file PostgreSQL itself reads (POSTGRES_PASSWORD_FILE)."""
    url = secret(env, "IDENTITY_DATABASE_URL")
    password = secret(env, "IDENTITY_DATABASE_PASSWORD")
    if not password:
        return url
    parts = urlsplit(url)
    if not url or not parts.scheme.startswith("postgresql") or not parts.hostname:
        raise SystemExit("IDENTITY_DATABASE_PASSWORD needs a postgresql:// IDENTITY_DATABASE_URL")
    user, _, host = parts.netloc.rpartition("@")
    if not user or ":" in user:
        raise SystemExit(
            "IDENTITY_DATABASE_PASSWORD needs IDENTITY_DATABASE_URL with a user and no password"
        )
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _security(env: Mapping[str, str]) -> tuple[str, str, str, str]:
    """TLS files and the credentials file, checked for settings that cannot work."""
    cert = env.get("IDENTITY_TLS_CERT_FILE", "").strip()
    key = env.get("IDENTITY_TLS_KEY_FILE", "").strip()
    client_ca = env.get("IDENTITY_TLS_CLIENT_CA_FILE", "").strip()
    creds = env.get("IDENTITY_CREDENTIALS_FILE", "").strip()
    if bool(cert) != bool(key):
        raise SystemExit("IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE must be set together")
    if client_ca and not cert:
        raise SystemExit("IDENTITY_TLS_CLIENT_CA_FILE needs IDENTITY_TLS_CERT_FILE and _KEY_FILE")
    return cert, key, client_ca, creds
