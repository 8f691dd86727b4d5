"""Deadlines that cancel (issue #15): an error answer means nothing was committed,
and every write answered 2xx is there. Real processes, SQLite and PostgreSQL.

The write lock is held past the requests' deadline (SCIM_REQUEST_TIMEOUT_SECONDS=2):
on SQLite another process holds `BEGIN IMMEDIATE`; on PostgreSQL another session
holds the tenant's row (every write of a tenant updates its revision). Writes sent
meanwhile are answered 504; when the lock goes, the core finds their deadline
passed before it commits and rolls them back. Storage and the change stream are
read afterwards: nothing of an error answer is in either, everything of a 2xx is.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..support import (
    free_port,
    http_request,
    start_gateway_process,
    start_identity_process,
    writes_held,
)

pytestmark = pytest.mark.e2e

DEADLINE = 2


def tenant_writes_held(database_url: str, tenant: Tenant) -> AbstractContextManager[None]:
    """The tenant's writes blocked (every write updates its row's revision)."""
    return writes_held(
        database_url, "SELECT pk FROM tenants WHERE id = %s FOR UPDATE", (tenant.id,)
    )


def _events(admin: IdentityClient, tenant: Tenant, since: int) -> list[Any]:
    """The tenant's change events after revision `since`, up to the current one."""
    last = admin.get_revision(tenant.id).revision
    out: list[Any] = []
    if last <= since:
        return out
    for event in admin.watch(tenant.id, since=since, heartbeat_seconds=1):
        if event.revision:
            out.append(event)
            if event.revision >= last:
                break
    return out


def test_an_error_answer_committed_nothing(database_url: str, tmp_path: Path) -> None:
    core, target = start_identity_process(database_url, tmp_path)
    gateway, port = start_gateway_process(
        target, tmp_path, SCIM_WORKERS="1", SCIM_REQUEST_TIMEOUT_SECONDS=str(DEADLINE)
    )
    try:
        with IdentityClient(target) as admin:
            tenant = admin.create_tenant(f"deadline-{free_port()}")
            token = admin.issue_token(tenant.id).secret
            base = f"/scim/v2/{tenant.name}"

            def send(method: str, path: str, body: Any = None) -> tuple[str, str, int]:
                data = json.dumps(body).encode() if body is not None else None
                status, _, _ = http_request(port, method, base + path, token=token, body=data)
                return method, path, status

            kept = [send("POST", "/Users", {"userName": f"kept-{i}"}) for i in range(2)]
            assert [s for *_, s in kept] == [201, 201]
            users = {u.user_name: u for u in admin.list_users(tenant.id).users}
            since = admin.get_revision(tenant.id).revision

            with tenant_writes_held(database_url, tenant), ThreadPoolExecutor(10) as pool:
                held = [
                    *(
                        pool.submit(send, "POST", "/Users", {"userName": f"held-{i}"})
                        for i in range(8)
                    ),
                    pool.submit(
                        send,
                        "PUT",
                        f"/Users/{users['kept-0'].meta.id}",
                        {"userName": "kept-0", "title": "changed"},
                    ),
                    pool.submit(send, "DELETE", f"/Users/{users['kept-1'].meta.id}"),
                ]
                # The lock is held until every request was answered (past its deadline).
                answers = [f.result(timeout=60) for f in held]
            errors = [a for a in answers if a[2] >= 500]
            assert errors, answers  # the lock really made them miss the deadline
            assert {a[2] for a in errors} <= {503, 504}, answers

            # Writes after the lock went succeed; they also queue behind whatever the
            # core still held of the earlier ones, which it has decided by then.
            after = [send("POST", "/Users", {"userName": f"after-{i}"}) for i in range(3)]
            assert [s for *_, s in after] == [201, 201, 201]

            stored = {u.user_name: u for u in admin.list_users(tenant.id, count=100).users}
            events = _events(admin, tenant, since)
            touched = {e.resource_id for e in events} | {
                e.user.user_name for e in events if e.HasField("user")
            }
            # Per request: an error left no trace, a 2xx left its change.
            posted = [a for a in answers if a[0] == "POST"]
            names = [f"held-{i}" for i in range(8)]
            for (_, _, status), name in zip(posted, names, strict=True):
                if status >= 500:
                    assert name not in stored, (name, status)
                    assert name not in touched, (name, status)
                else:
                    assert status == 201 and name in stored and name in touched
            put, delete = answers[8], answers[9]
            kept0, kept1 = users["kept-0"], users["kept-1"]
            if put[2] >= 500:
                assert stored["kept-0"].meta.version == kept0.meta.version
                assert kept0.meta.id not in {e.resource_id for e in events}
            else:
                assert stored["kept-0"].title == "changed"
            if delete[2] >= 500:
                assert "kept-1" in stored
                assert kept1.meta.id not in {e.resource_id for e in events}
            else:
                assert "kept-1" not in stored
            for i in range(3):
                assert f"after-{i}" in stored and f"after-{i}" in touched
    finally:
        gateway.stop()
        core.stop()
