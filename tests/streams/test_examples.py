"""The example subscribers in clients/examples/, run as scripts against a real server."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..support import ROOT
from .conftest import new_user, wait_until

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "clients" / "examples"


def _run(script: str, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(10)


def _mirrored(db: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, user_name, active FROM users").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _expected(client: IdentityClient, tenant_id: str) -> dict[str, tuple[str, int]]:
    users = client.list_users(tenant_id, count=1000).users
    return {u.meta.id: (u.user_name, int(u.active)) for u in users}


def test_mirror_users_lists_then_follows_and_resumes(
    identity_target: str, client: IdentityClient, tenant: Tenant, tmp_path: Path
) -> None:
    existing = [client.create_user(tenant.id, new_user(i)) for i in range(3)]
    db = tmp_path / "mirror.db"
    args = ("--target", identity_target, "--tenant", tenant.name, "--db", str(db))
    proc, out = _run("mirror_users.py", *args)
    try:
        wait_until(lambda: any("listed 3 users" in line for line in out), 15, "initial listing")
        client.delete_user(tenant.id, existing[0].meta.id)
        existing[1].active = False
        client.replace_user(tenant.id, existing[1])
        client.create_user(tenant.id, new_user("live"))
        wait_until(lambda: _mirrored(db) == _expected(client, tenant.id), 15, "mirror to follow")
    finally:
        assert _stop(proc) == 0, "".join(out)

    # Changes while the mirror is down arrive after its restart, with no new listing.
    client.create_user(tenant.id, new_user("while-down"))
    proc, out = _run("mirror_users.py", *args)
    try:
        wait_until(lambda: _mirrored(db) == _expected(client, tenant.id), 15, "mirror to resume")
        assert len(_mirrored(db)) == 4
    finally:
        assert _stop(proc) == 0, "".join(out)
    assert not any("listed" in line for line in out)


def _audit(lines: list[str]) -> list[str]:
    """The audit lines (stdout), without the script's own notes (stderr)."""
    return [line for line in lines if not line.startswith("audit_log:")]


def test_audit_log_prints_one_line_per_change(
    identity_target: str, client: IdentityClient, tenant: Tenant, tmp_path: Path
) -> None:
    cp = tmp_path / "audit.rev"
    args = ("--target", identity_target, "--tenant", tenant.id, "--from", "0")
    proc, out = _run("audit_log.py", *args, "--checkpoint", str(cp))
    try:
        u = client.create_user(tenant.id, new_user("audited"))
        client.delete_user(tenant.id, u.meta.id)
        wait_until(lambda: len(_audit(out)) >= 3, 15, "three audit lines")
    finally:
        assert _stop(proc) == 0, "".join(out)
    out = _audit(out)
    assert "rev=1 tenant.created" in out[0]
    assert f"rev=2 user.created User/{u.meta.id} {u.user_name!r}" in out[1]
    assert "rev=3 user.deleted" in out[2]
    assert all(" by=" in line and " req=" in line for line in out)
    assert cp.read_text().strip() in ("2", "3")
