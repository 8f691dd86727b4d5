"""Gateway settings, read from the environment once into a frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scim_identity_api.env import SecretSettingError, otlp_traces_configured, secret

_MIB = 1024 * 1024


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float = 0.0) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    value = _float(environ, name, default)
    if value <= 0:
        raise SettingsError(f"{name} must be a number > 0, got {value!r}")
    return value


def _allowed_hosts(environ: Mapping[str, str], listen: str) -> frozenset[str]:
    """SCIM_ALLOWED_HOSTS (comma-separated host or host:port), else the address the
    gateway listens on (for a wildcard address: localhost and the loopback
    addresses at its port). Behind a proxy or under another name, set
    SCIM_PUBLIC_URL (then the Host header is not used) or SCIM_ALLOWED_HOSTS."""
    raw = environ.get("SCIM_ALLOWED_HOSTS", "").strip()
    if raw:
        return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())
    host, _, port = listen.rpartition(":")
    hosts: tuple[str, ...] = (host.lower(),)
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - we compare, not bind
        hosts = ("localhost", "127.0.0.1", "[::1]")
    return frozenset(f"{h}:{port}" for h in hosts)


def _metrics_listen(environ: Mapping[str, str]) -> str:
    """SCIM_METRICS_LISTEN: host:port (an empty host: every interface), or "" (off)."""
    raw = environ.get("SCIM_METRICS_LISTEN", "").strip()
    if not raw:
        return METRICS_LISTEN
    _host, sep, port = raw.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise SettingsError(f"SCIM_METRICS_LISTEN must be host:port, got {raw!r}")
    return raw


def _log_format(environ: Mapping[str, str]) -> str:
    raw = environ.get("SCIM_LOG_FORMAT", "").strip().lower() or "json"
    if raw not in ("json", "text"):
        raise SettingsError(f"SCIM_LOG_FORMAT must be json or text, got {raw!r}")
    return raw


#: Members per ListMembers page of a streamed group (SCIM_MEMBER_PAGE_SIZE).
MEMBER_PAGE_SIZE = 5000
#: In-flight requests per worker (SCIM_MAX_CONCURRENCY).
MAX_CONCURRENCY = 128
#: SCIM_CLIENT_TIMEOUT_SECONDS: for the headers, then again for the body.
CLIENT_TIMEOUT_SECONDS = 20.0
#: SCIM_REQUEST_TIMEOUT_SECONDS
REQUEST_TIMEOUT_SECONDS = 10.0
#: SCIM_METRICS_LISTEN: off unless set, like the core's IDENTITY_METRICS_LISTEN (the
#: compose file sets 0.0.0.0:9465, reachable on the compose network only). The SCIM
#: port never answers /metrics.
METRICS_LISTEN = ""
#: Largest member page: the core's page sizes are int32.
MAX_MEMBER_PAGE_SIZE = 1_000_000


@dataclass(frozen=True, slots=True)
class Settings:
    #: host:port of the identity service.
    identity_target: str = "127.0.0.1:50051"
    #: host:port the gateway listens on.
    listen: str = "127.0.0.1:8080"
    workers: int = 2
    #: Largest request body accepted, in bytes (advertised as bulk.maxPayloadSize).
    max_payload_bytes: int = _MIB
    #: Most operations in one /Bulk request (advertised as bulk.maxOperations).
    max_bulk_operations: int = 1000
    #: Largest page a list returns (advertised as filter.maxResults).
    max_page_size: int = 1000
    #: Page size when the request gives no `count`.
    default_page_size: int = 100
    #: Base URL used in meta.location, e.g. "https://scim.example.com"; None
    #: derives it from each request.
    public_url: str | None = None
    #: Host[:port] values a request's Host may name when public_url is None
    #: (lower case); None: any (only for apps built in code: from_env always sets
    #: one, see there).
    allowed_hosts: frozenset[str] | None = None
    #: "json" (one object per line) or "text".
    log_format: str = "json"
    #: host:port of the Prometheus /metrics endpoint (gunicorn's master serves it,
    #: summed over the workers); "": not served (METRICS_LISTEN).
    metrics_listen: str = METRICS_LISTEN
    #: Trace each request and its core calls over OTLP: set when the environment names
    #: an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT; tracing.py).
    tracing: bool = False
    #: The gateway's service credential for a core that requires one (never shown in repr).
    identity_token: str = field(default="", repr=False)
    #: PEM files for TLS to the core: the CA that signed its certificate, and the
    #: gateway's client certificate and key (mTLS). Empty CA and cert: plaintext.
    identity_tls_ca_file: str = ""
    identity_tls_cert_file: str = ""
    identity_tls_key_file: str = ""
    #: Requests per second per tenant, per worker (token bucket); 0: no limit.
    rate_limit_per_second: float = 0.0
    #: Requests a tenant may make at once; 0: the rate rounded up (at least 1).
    rate_limit_burst: int = 0
    #: A group with more members than this is sent streamed, this many members per
    #: ListMembers page (the worker holds one page); 0: never stream.
    member_page_size: int = MEMBER_PAGE_SIZE
    #: Requests a worker answers at once; past it 503 with Retry-After.
    max_concurrency: int = MAX_CONCURRENCY
    #: Seconds a client has to send a request's headers, and then its body;
    #: past either the connection is closed (408 for a late body).
    client_timeout_seconds: float = CLIENT_TIMEOUT_SECONDS
    #: Seconds from a request's arrival by which it is answered; its core calls
    #: carry the deadline (the core commits nothing it cannot answer in time).
    request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS
    #: Seconds a worker keeps the core's built-in attribute catalogue before fetching
    #: it again (it changes only with the core's release).
    schema_ttl_seconds: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        public = environ.get("SCIM_PUBLIC_URL", "").strip().rstrip("/")
        max_page = _int(environ, "SCIM_MAX_PAGE_SIZE", 1000, 1)
        default_page = _int(environ, "SCIM_DEFAULT_PAGE_SIZE", 100, 1)
        if default_page > max_page:
            raise SettingsError("SCIM_DEFAULT_PAGE_SIZE must not exceed SCIM_MAX_PAGE_SIZE")
        cert = environ.get("SCIM_IDENTITY_TLS_CERT_FILE", "").strip()
        key = environ.get("SCIM_IDENTITY_TLS_KEY_FILE", "").strip()
        if bool(cert) != bool(key):
            raise SettingsError(
                "SCIM_IDENTITY_TLS_CERT_FILE and SCIM_IDENTITY_TLS_KEY_FILE must be set together"
            )
        try:
            token = secret(environ, "SCIM_IDENTITY_TOKEN")
        except SecretSettingError as exc:
            raise SettingsError(str(exc)) from None
        listen = environ.get("SCIM_LISTEN", "").strip() or "127.0.0.1:8080"
        return cls(
            allowed_hosts=_allowed_hosts(environ, listen),
            identity_token=token,
            identity_tls_ca_file=environ.get("SCIM_IDENTITY_TLS_CA_FILE", "").strip(),
            identity_tls_cert_file=cert,
            identity_tls_key_file=key,
            rate_limit_per_second=_float(environ, "SCIM_RATE_LIMIT_PER_SECOND"),
            rate_limit_burst=_int(environ, "SCIM_RATE_LIMIT_BURST", 0, 0),
            max_concurrency=_int(environ, "SCIM_MAX_CONCURRENCY", MAX_CONCURRENCY, 1),
            request_timeout_seconds=_positive(
                environ, "SCIM_REQUEST_TIMEOUT_SECONDS", REQUEST_TIMEOUT_SECONDS
            ),
            client_timeout_seconds=_positive(
                environ, "SCIM_CLIENT_TIMEOUT_SECONDS", CLIENT_TIMEOUT_SECONDS
            ),
            member_page_size=min(
                _int(environ, "SCIM_MEMBER_PAGE_SIZE", MEMBER_PAGE_SIZE, 0), MAX_MEMBER_PAGE_SIZE
            ),
            schema_ttl_seconds=_float(environ, "SCIM_SCHEMA_TTL_SECONDS", 300.0),
            identity_target=environ.get("SCIM_IDENTITY_TARGET", "").strip() or "127.0.0.1:50051",
            log_format=_log_format(environ),
            metrics_listen=_metrics_listen(environ),
            tracing=otlp_traces_configured(environ),
            listen=listen,
            workers=_int(environ, "SCIM_WORKERS", 2, 1),
            max_payload_bytes=_int(environ, "SCIM_MAX_PAYLOAD_BYTES", _MIB, 1024),
            max_bulk_operations=_int(environ, "SCIM_MAX_BULK_OPERATIONS", 1000, 1),
            max_page_size=max_page,
            default_page_size=default_page,
            public_url=public or None,
        )
