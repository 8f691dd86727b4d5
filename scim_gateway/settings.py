"""Gateway settings, read from the environment once into a frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scim_identity_api.env import SecretSettingError, secret

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


def _log_format(environ: Mapping[str, str]) -> str:
    raw = environ.get("SCIM_LOG_FORMAT", "").strip().lower() or "json"
    if raw not in ("json", "text"):
        raise SettingsError(f"SCIM_LOG_FORMAT must be json or text, got {raw!r}")
    return raw


#: Members per ListMembers page of a streamed group (SCIM_MEMBER_PAGE_SIZE).
MEMBER_PAGE_SIZE = 5000
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
    #: "json" (one object per line) or "text".
    log_format: str = "json"
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
        return cls(
            identity_token=token,
            identity_tls_ca_file=environ.get("SCIM_IDENTITY_TLS_CA_FILE", "").strip(),
            identity_tls_cert_file=cert,
            identity_tls_key_file=key,
            rate_limit_per_second=_float(environ, "SCIM_RATE_LIMIT_PER_SECOND"),
            rate_limit_burst=_int(environ, "SCIM_RATE_LIMIT_BURST", 0, 0),
            member_page_size=min(
                _int(environ, "SCIM_MEMBER_PAGE_SIZE", MEMBER_PAGE_SIZE, 0), MAX_MEMBER_PAGE_SIZE
            ),
            schema_ttl_seconds=_float(environ, "SCIM_SCHEMA_TTL_SECONDS", 300.0),
            identity_target=environ.get("SCIM_IDENTITY_TARGET", "").strip() or "127.0.0.1:50051",
            log_format=_log_format(environ),
            listen=environ.get("SCIM_LISTEN", "").strip() or "127.0.0.1:8080",
            workers=_int(environ, "SCIM_WORKERS", 2, 1),
            max_payload_bytes=_int(environ, "SCIM_MAX_PAYLOAD_BYTES", _MIB, 1024),
            max_bulk_operations=_int(environ, "SCIM_MAX_BULK_OPERATIONS", 1000, 1),
            max_page_size=max_page,
            default_page_size=default_page,
            public_url=public or None,
        )
