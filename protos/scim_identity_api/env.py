"""Settings every component reads from the environment the same way: secrets (`NAME`,
or the contents of the file `NAME_FILE`) and whether traces go to an OTLP endpoint.

Every component (the identity service, the SCIM gateway, identityctl and the example
subscribers) reads its secret settings through `secret()`, so each has a `*_FILE`
variant that works the same way: the convention of container secrets (Docker and
Kubernetes mount them as files; the official PostgreSQL image reads
`POSTGRES_PASSWORD_FILE` likewise). It lives here, beside the contract, because that
is the one package every component already depends on and it imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping


class SecretSettingError(ValueError):
    """A secret setting is given twice, or its file cannot be read."""


def secret(env: Mapping[str, str], name: str) -> str:
    """The value of `name`, or the contents of the file named by `name`_FILE (trailing
    line breaks removed, as `echo secret > file` leaves one); "" when neither is set.
    Both set is an error rather than a silent choice."""
    value = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return value
    if value:
        raise SecretSettingError(f"set {name} or {name}_FILE, not both")
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        # The path, never the contents, and no traceback.
        raise SecretSettingError(f"{name}_FILE {path}: {type(exc).__name__}") from None
    content = content.rstrip("\r\n")
    if not content:
        raise SecretSettingError(f"{name}_FILE {path} is empty")
    return content


def otlp_traces_configured(env: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables name an OTLP endpoint for traces
    (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and the
    SDK is not disabled (`OTEL_SDK_DISABLED=true`). The exporter reads the rest of the
    `OTEL_*` variables itself; nothing of opentelemetry is imported here."""
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )
    return bool(endpoint) and env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
