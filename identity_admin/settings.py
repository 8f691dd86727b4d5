"""The console's settings: environment variables read once, into one frozen object."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scim_identity_api.env import SecretSettingError, secret


class SettingsError(ValueError):
    """A setting that cannot work; the message names it."""


def _loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    #: host:port the console binds.
    listen: str = "127.0.0.1:8081"
    workers: int = 1
    #: The identity service (core) the console calls.
    identity_target: str = "127.0.0.1:50051"
    #: The console's public URL (scheme and host, no path: its pages live at the root):
    #: sign-in links point here,
    #: and an https URL makes the session cookie Secure.
    public_url: str = "http://127.0.0.1:8081"
    #: The SCIM gateway's public URL (no /scim/v2), shown to admins for their IdP.
    scim_base_url: str = "http://127.0.0.1:8080"
    #: The console's service credential for a core that requires one (role admin):
    #: ADMIN_IDENTITY_TOKEN, or ADMIN_IDENTITY_TOKEN_FILE (scim_identity_api.env.secret).
    identity_token: str = field(default="", repr=False)
    identity_tls_ca_file: str = ""
    identity_tls_cert_file: str = ""
    identity_tls_key_file: str = ""
    #: Seconds between keep-alives on an idle Live stream: how soon a stream whose
    #: browser went is noticed and ended, and its session checked again.
    live_keepalive_seconds: float = 15.0

    @property
    def secure_cookies(self) -> bool:
        # Also when a console bound beyond loopback is reached by http on loopback (a
        # container's published port): browsers treat loopback http as secure and send
        # the cookie back there, and nowhere a network could see it.
        return self.public_url.startswith("https://") or not _loopback(self.listen)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        listen = env.get("ADMIN_LISTEN", "").strip() or "127.0.0.1:8081"
        public = env.get("ADMIN_PUBLIC_URL", "").strip().rstrip("/") or f"http://{listen}"
        parts = urlsplit(public)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError("ADMIN_PUBLIC_URL must be an http(s) URL")
        if parts.path.strip("/") or parts.query or parts.fragment:
            # Pages, redirects and the cookie's Path are at the root: serve the console
            # at a host of its own (a path prefix would break every link).
            raise SettingsError("ADMIN_PUBLIC_URL must be a scheme and host only, no path")
        if parts.scheme == "http" and not (_loopback(listen) or _loopback(parts.netloc)):
            # Session cookies must not cross a network in the clear.
            raise SettingsError(
                "ADMIN_PUBLIC_URL must be https:// unless the console is reached on a "
                "loopback address (terminate TLS in front of the console)"
            )
        scim = env.get("ADMIN_SCIM_BASE_URL", "").strip().rstrip("/") or "http://127.0.0.1:8080"
        if urlsplit(scim).scheme not in ("http", "https"):
            raise SettingsError("ADMIN_SCIM_BASE_URL must be an http(s) URL")
        cert = env.get("ADMIN_IDENTITY_TLS_CERT_FILE", "").strip()
        key = env.get("ADMIN_IDENTITY_TLS_KEY_FILE", "").strip()
        if bool(cert) != bool(key):
            raise SettingsError(
                "ADMIN_IDENTITY_TLS_CERT_FILE and ADMIN_IDENTITY_TLS_KEY_FILE must be set together"
            )
        try:
            # As the gateway's SCIM_IDENTITY_TOKEN: the value, or ADMIN_IDENTITY_TOKEN_FILE.
            token = secret(env, "ADMIN_IDENTITY_TOKEN")
        except SecretSettingError as exc:
            raise SettingsError(str(exc)) from None
        try:
            workers = int(env.get("ADMIN_WORKERS", "1") or 1)
        except ValueError:
            raise SettingsError("ADMIN_WORKERS must be a whole number") from None
        if workers < 1:
            raise SettingsError("ADMIN_WORKERS must be at least 1")
        try:
            keepalive = float(env.get("ADMIN_LIVE_KEEPALIVE_SECONDS", "15") or 15)
        except ValueError:
            raise SettingsError("ADMIN_LIVE_KEEPALIVE_SECONDS must be a number") from None
        if not 0.1 <= keepalive <= 300:
            raise SettingsError("ADMIN_LIVE_KEEPALIVE_SECONDS must be from 0.1 to 300")
        return cls(
            listen=listen,
            workers=workers,
            identity_target=env.get("ADMIN_IDENTITY_TARGET", "").strip() or "127.0.0.1:50051",
            public_url=public,
            scim_base_url=scim,
            identity_token=token,
            identity_tls_ca_file=env.get("ADMIN_IDENTITY_TLS_CA_FILE", "").strip(),
            identity_tls_cert_file=cert,
            identity_tls_key_file=key,
            live_keepalive_seconds=keepalive,
        )
