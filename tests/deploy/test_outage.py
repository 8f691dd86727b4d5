"""A database outage: while PostgreSQL is down, SCIM requests get 503 with
Retry-After (quickly, never a hang or a 500) and health says NOT_SERVING; when it
returns, both services recover on their own and no accepted write is lost."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_client import IdentityClient

from ..support import VENV_BIN, PgCluster, Proc, free_port, start_identity_process

pytestmark = pytest.mark.e2e


def scim(
    port: int, method: str, path: str, token: str, body: object = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def health(target: str) -> int | None:
    with grpc.insecure_channel(target) as ch:
        try:
            return int(
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(), timeout=3)
                .status
            )
        except grpc.RpcError:
            return None


def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    c = PgCluster().init()
    c.start()
    yield c
    c.destroy()


def test_postgres_outage_and_recovery(cluster: PgCluster, tmp_path: Path) -> None:
    core, target = start_identity_process(cluster.url, tmp_path)
    port = free_port()
    gateway = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {"SCIM_IDENTITY_TARGET": target, "SCIM_LISTEN": f"127.0.0.1:{port}", "SCIM_WORKERS": "1"},
        tmp_path / "gateway.log",
    )
    try:
        with IdentityClient(target) as client:
            client.create_tenant("acme")
            token = client.issue_token("acme").secret
        until(lambda: scim(port, "GET", "/readyz", token)[0] == 200, 30, "gateway ready")
        status, _, body = scim(port, "POST", "/scim/v2/acme/Users", token, {"userName": "before@x"})
        assert status == 201, body
        user_id = json.loads(body)["id"]

        cluster.stop()
        started = time.monotonic()
        status, headers, body = scim(port, "GET", f"/scim/v2/acme/Users/{user_id}", token)
        assert time.monotonic() - started < 15, "a request hung during the outage"
        assert status == 503, body
        assert headers.get("retry-after"), headers
        assert json.loads(body)["status"] == "503"
        status, _, _ = scim(port, "POST", "/scim/v2/acme/Users", token, {"userName": "during@x"})
        assert status == 503
        until(
            lambda: health(target) == health_pb2.HealthCheckResponse.NOT_SERVING, 20, "NOT_SERVING"
        )
        assert scim(port, "GET", "/readyz", token)[0] == 503

        cluster.start()
        until(lambda: health(target) == health_pb2.HealthCheckResponse.SERVING, 30, "SERVING again")
        until(
            lambda: scim(port, "GET", f"/scim/v2/acme/Users/{user_id}", token)[0] == 200,
            30,
            "SCIM back",
        )
        status, _, body = scim(
            port, "GET", '/scim/v2/acme/Users?filter=userName+eq+"before@x"', token
        )
        assert status == 200 and json.loads(body)["totalResults"] == 1
        assert core.popen.poll() is None and gateway.popen.poll() is None  # no restart
        assert "Traceback" not in gateway.output()
    finally:
        gateway.stop()
        core.stop()
