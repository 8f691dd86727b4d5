"""First-start secrets for a deployment: `identity-service init-credentials ROOT`.

A one-shot init container runs this before anything else (docker-compose.yml), so a
stack is secured the first time it starts, with nothing to copy by hand and no secret
in the compose file. Under ROOT, one directory per consumer (compose mounts each as
its own volume, so a container sees only its own secret):

    database/password        PostgreSQL's password (POSTGRES_PASSWORD_FILE, and the
                             core's IDENTITY_DATABASE_PASSWORD_FILE); mode 0444, as the
                             PostgreSQL image reads it as its own user
    core/credentials.json    the core's IDENTITY_CREDENTIALS_FILE: names, roles and
                             SHA-256 hashes only (auth.py)
    admin/token              an `admin` credential, for identityctl
    gateway/token            the SCIM gateway's `gateway` credential
    subscriber/token         the example subscriber's `subscriber` credential

Secrets that exist are kept (a restart changes nothing); missing ones are generated
(`secrets.token_urlsafe`, 256 bits) and written atomically, mode 0400.
credentials.json is rebuilt from the token files on every run, so removing a token
file and running again rotates that credential. Secrets are never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from .auth import hash_secret

#: (directory, role) of each generated service credential.
SERVICE_CREDENTIALS = (("admin", "admin"), ("gateway", "gateway"), ("subscriber", "subscriber"))
SECRET_MODE = 0o400
#: PostgreSQL's image reads its password file as the postgres user, not ours.
DATABASE_PASSWORD_MODE = 0o444


def _write_new(path: Path, content: str, mode: int) -> None:
    """Writes `path` whole or not at all (a crash leaves no half-written secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _secret_file(path: Path, mode: int) -> tuple[str, bool]:
    """The secret in `path`, generated first when the file does not exist; and
    whether it was generated now."""
    if path.exists():
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
        if not value:
            raise SystemExit(f"init-credentials: {path} is empty; remove it to regenerate")
        return value, False
    value = secrets.token_urlsafe(32)
    _write_new(path, value, mode)
    return value, True


def init_credentials(root: Path, subscriber_tenants: Sequence[str] = ()) -> list[str]:
    """Makes sure every secret under `root` exists; returns one line per file saying
    whether it was generated or kept (never the secret)."""
    report: list[str] = []
    _, made = _secret_file(root / "database" / "password", DATABASE_PASSWORD_MODE)
    report.append(f"{root / 'database' / 'password'}: {'generated' if made else 'kept'}")
    entries: list[dict[str, object]] = []
    for directory, role in SERVICE_CREDENTIALS:
        path = root / directory / "token"
        value, made = _secret_file(path, SECRET_MODE)
        report.append(f"{path}: {'generated' if made else 'kept'}")
        entry: dict[str, object] = {
            "name": directory,
            "secret_sha256": hash_secret(value),
            "role": role,
        }
        if role == "subscriber" and subscriber_tenants:
            entry["tenants"] = list(subscriber_tenants)
        entries.append(entry)
    creds = root / "core" / "credentials.json"
    _write_new(creds, json.dumps(entries, indent=2) + "\n", 0o444)
    report.append(f"{creds}: written ({len(entries)} credentials, hashes only)")
    return report
