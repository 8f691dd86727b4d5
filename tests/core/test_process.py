"""The operator interface end to end: the real `identity-service` process, its
health, and `identityctl` as a person would use it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_api.v1 import tenants_pb2, users_pb2
from scim_identity_client import CallContext, IdentityClient, PermissionDenied, Unauthenticated

from ..support import VENV_BIN, Proc, free_port, start_identity_process

pytestmark = pytest.mark.e2e


def ctl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "identityctl"), "--target", target, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_identityctl_tenant_and_token(database_url: str, tmp_path: Path) -> None:
    proc, target = start_identity_process(database_url, tmp_path)
    try:
        name = f"acme-{uuid.uuid4().hex[:6]}"
        created = ctl(target, "tenant", "create", name)
        assert created.returncode == 0, created.stderr
        tenant_id = created.stdout.strip()
        assert str(uuid.UUID(tenant_id)) == tenant_id
        assert name in ctl(target, "tenant", "list").stdout
        issued = ctl(target, "token", "issue", name)
        assert issued.returncode == 0, issued.stderr
        secret = issued.stdout.strip().splitlines()[-1]
        with IdentityClient(target) as client:
            assert client.authenticate(secret, tenant=name).tenant.id == tenant_id
        assert ctl(target, "token", "issue", tenant_id).returncode == 0  # by id too
        third = ctl(target, "token", "issue", name)
        assert third.returncode == 1 and "2 live tokens" in third.stderr
        dup = ctl(target, "tenant", "create", name)
        assert dup.returncode == 1 and "already exists" in dup.stderr
        for result in (third, dup, ctl(target, "tenant", "show", "no-such")):
            assert "Traceback" not in result.stderr
    finally:
        assert proc.stop() == 0  # SIGTERM is a clean exit


def test_identityctl_unreachable_service() -> None:
    r = ctl(f"127.0.0.1:{free_port()}", "--timeout", "1", "tenant", "list")
    assert r.returncode == 1
    assert "cannot reach the identity service" in r.stderr and "Traceback" not in r.stderr


def test_identityctl_reaches_a_service_that_starts_after_it(tmp_path: Path) -> None:
    # The command's first connection is cut short (as a TLS handshake is on a loaded
    # host, or a service not yet listening refuses it); the service comes up after:
    # the command waits for its channel, within --timeout, and succeeds.
    port = free_port()
    target = f"127.0.0.1:{port}"
    with socket.create_server(("127.0.0.1", port)) as cutter:
        cutter.settimeout(60)
        cmd = subprocess.Popen(
            [
                str(VENV_BIN / "identityctl"),
                "--target",
                target,
                "--timeout",
                "60",
                "tenant",
                "list",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = cutter.accept()  # its first attempt...
        conn.close()  # ...ends before any HTTP/2 frame
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {"IDENTITY_DATABASE_URL": f"sqlite:///{tmp_path / 'i.db'}", "IDENTITY_LISTEN": target},
        tmp_path / "identity.log",
    )
    try:
        _, err = cmd.communicate(timeout=90)
        assert cmd.returncode == 0, err
    finally:
        if cmd.poll() is None:
            cmd.kill()
        proc.stop()


def _health(target: str) -> int | None:
    with grpc.insecure_channel(target) as ch:
        try:
            return int(
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(), timeout=2)
                .status
            )
        except grpc.RpcError:
            return None


def test_health_is_not_serving_without_a_database(tmp_path: Path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {
            "IDENTITY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "IDENTITY_LISTEN": target,
        },
        tmp_path / "svc.log",
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = _health(target)
            if status is not None:
                break
            time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING, proc.output()
    finally:
        proc.stop()


def test_access_lines_name_the_call_its_tenant_and_token(database_url: str, tmp_path: Path) -> None:
    """Every call gets one JSON access line: the request id, the status, and for a
    bearer call the tenant and the token it authenticated (on a refusal too)."""
    proc, target = start_identity_process(database_url, tmp_path)
    try:
        with IdentityClient(target) as client:
            tenant = client.create_tenant(f"log-{uuid.uuid4().hex[:6]}")
            issued = client.issue_token(tenant.id, scope=tenants_pb2.TOKEN_SCOPE_READ_ONLY)
            ok = CallContext(request_id="req-ok", bearer=issued.secret)
            client.list_users("", count=1, ctx=ok)
            refused = CallContext(request_id="req-refused", bearer=issued.secret)
            with pytest.raises(PermissionDenied, match="read-only"):
                client.create_user("", users_pb2.User(user_name="x"), ctx=refused)
            unknown = CallContext(request_id="req-unknown", bearer="scim_nope")
            with pytest.raises(Unauthenticated):
                client.list_users("", ctx=unknown)
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(x) for x in proc.output().splitlines() if x.startswith("{")]
            by_id = {
                x.get("request_id"): x for x in lines if x.get("logger", "").endswith("access")
            }
            if {"req-ok", "req-refused", "req-unknown"} <= set(
                by_id
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        proc.stop()
    token = f"token:{issued.token.id}"
    assert by_id["req-ok"] | {"duration_ms": 0} == {
        "time": by_id["req-ok"]["time"],
        "level": "info",
        "logger": "identity_service.access",
        "message": "ListUsers OK",
        "operation": "ListUsers",
        "status": "OK",
        "duration_ms": 0,
        "request_id": "req-ok",
        "tenant": tenant.id,
        "actor": token,
    }
    refusal = by_id["req-refused"]
    assert (refusal["status"], refusal["tenant"], refusal["actor"]) == (
        "PERMISSION_DENIED",
        tenant.id,
        token,
    )
    assert (by_id["req-unknown"]["status"], by_id["req-unknown"]["actor"]) == (
        "UNAUTHENTICATED",
        "system",
    )
