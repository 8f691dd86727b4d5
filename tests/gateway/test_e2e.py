"""End to end: the real `scim-gateway` (gunicorn, 2 workers) in front of the real
`identity-service`, over real HTTP."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest

from scim_identity_client import IdentityClient

from ..support import VENV_BIN, Proc, free_port, start_identity_process

pytestmark = pytest.mark.e2e

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request with http.client; returns status, lower-cased headers, JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/scim+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return (
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            json.loads(raw) if raw else None,
        )
    finally:
        conn.close()


def wait_http_ready(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Polls /readyz until it answers 200 (it does once the core is SERVING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"scim-gateway exited:\n{proc.output()}")
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gateway on port {port} not ready after {timeout}s:\n{proc.output()}")


def test_gateway_process_serves_scim_over_http(tmp_path: Path, fresh_database_url: str) -> None:
    # The real processes (gunicorn workers, the core) on SQLite and PostgreSQL.
    core, target = start_identity_process(fresh_database_url, tmp_path)
    port = free_port()
    gateway = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {
            "SCIM_IDENTITY_TARGET": target,
            "SCIM_LISTEN": f"127.0.0.1:{port}",
            "SCIM_WORKERS": "2",
        },
        tmp_path / "gateway.log",
    )
    try:
        with IdentityClient(target) as admin:
            tenant = admin.create_tenant("e2e")
            token = admin.issue_token(tenant.id).secret
        base = "/scim/v2/e2e"
        wait_http_ready(port, gateway)

        status, headers, user = request(
            port, "POST", f"{base}/Users", token, {"userName": "ada@example.com", "active": True}
        )
        assert status == 201, user
        assert headers["content-type"] == "application/scim+json"
        location = f"{base}/Users/{user['id']}"
        assert headers["location"] == f"http://127.0.0.1:{port}{location}"

        # Several requests, so both workers (each with its own channel) answer.
        for _ in range(6):
            status, headers, got = request(port, "GET", location, token)
            assert status == 200 and got["userName"] == "ada@example.com"
            assert headers["etag"] == got["meta"]["version"]

        status, _, patched = request(
            port,
            "PATCH",
            location,
            token,
            {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]},
        )
        assert status == 200 and patched["active"] is False

        status, _, body = request(port, "DELETE", location, token)
        assert status == 204 and body is None
        status, _, err = request(port, "GET", location, token)
        assert status == 404 and err["status"] == "404"
        status, headers, err = request(port, "GET", f"{base}/Users", "wrong-token")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    finally:
        assert gateway.stop() == 0, gateway.output()
        core.stop()
    # Every line the gateway wrote, gunicorn's and uvicorn's own included (start,
    # workers booting, shutdown), is one JSON object like its access lines.
    lines = gateway.output().splitlines()
    assert any('"gunicorn.error"' in line for line in lines), lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        assert "color_message" not in entry
