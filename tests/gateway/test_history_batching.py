"""The gateway writes its operations history in the background, in batches: every
request's record arrives within a second without anyone flushing, a gracefully
stopped gateway writes what it still held, and records made while the core is
unreachable wait and are written once it is back. Real processes."""

from __future__ import annotations

import asyncio
import http.client
import time
from pathlib import Path

import pytest

from scim_gateway.history import OpInfo, Recorder
from scim_identity_api.v1 import history_pb2
from scim_identity_client import AsyncIdentityClient, IdentityClient

from ..support import VENV_BIN, Proc, eventually, free_port, start_identity_process

pytestmark = pytest.mark.e2e


def _get(port: int, path: str, token: str, rid: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "X-Request-Id": rid})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _gateway(target: str, tmp: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {"SCIM_IDENTITY_TARGET": target, "SCIM_LISTEN": f"127.0.0.1:{port}", "SCIM_WORKERS": "2"},
        tmp / f"gateway-{port}.log",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(port, "/healthz", "x", "probe") == 200:
                return proc, port
        except OSError:
            pass
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.1)


def _request_ids(client: IdentityClient, tenant_id: str) -> set[str]:
    ids: set[str] = set()
    token = ""
    while True:
        page = client.list_operations(tenant_id, page_size=1000, page_token=token)
        ids |= {o.request_id for o in page.operations}
        token = page.next_page_token
        if not token:
            return ids


def test_records_arrive_unflushed_and_a_stopped_gateway_loses_none(
    database_url: str, tmp_path: Path
) -> None:
    core, target = start_identity_process(database_url, tmp_path)
    try:
        with IdentityClient(target) as client:
            tenant = client.create_tenant(f"hist-{free_port()}")
            token = client.issue_token(tenant.id).secret
            gateway, port = _gateway(target, tmp_path)
            base = f"/scim/v2/{tenant.name}"
            try:
                first = {f"a-{i}" for i in range(20)}
                for rid in sorted(first):
                    assert _get(port, f"{base}/Users", token, rid) == 200
                eventually(lambda: first <= _request_ids(client, tenant.id), 5, "unflushed records")
                # Then stop the gateway at once after a burst: it writes what it held.
                burst = {f"b-{i}" for i in range(100)}
                for rid in sorted(burst):
                    assert _get(port, f"{base}/Users", token, rid) == 200
                gateway.popen.terminate()
                assert gateway.stop(timeout=30) == 0, gateway.output()
            finally:
                gateway.stop()
            assert burst <= _request_ids(client, tenant.id)
            assert "Traceback" not in gateway.output()
    finally:
        core.stop()


def test_records_wait_for_an_unreachable_core(database_url: str, tmp_path: Path) -> None:
    setup, setup_target = start_identity_process(database_url, tmp_path)
    try:
        with IdentityClient(setup_target) as admin:
            tenant = admin.create_tenant(f"wait-{free_port()}")
    finally:
        setup.stop()
    target = f"127.0.0.1:{free_port()}"

    class _Call:  # what the recorder reads of a request
        tenant_id = tenant.id
        token_id = "t"
        request_id = "while-down"
        secret = "scim_presented"

    # A recorder whose core is not there (yet), on an event loop as in a worker.
    async def run() -> None:
        async with AsyncIdentityClient(target, timeout=2) as gateway_client:
            recorder = Recorder(gateway_client, linger=0.05, max_backoff=0.5)
            recorder.record(
                _Call(),
                method="GET",
                info=OpInfo(history_pb2.OPERATION_KIND_SEARCH, "User"),
                status=200,
                error=None,
                duration_ms=1.0,
            )
            assert not await recorder.flush(timeout=1.0)  # nothing listens: kept, not lost
            core = Proc(
                [str(VENV_BIN / "identity-service")],
                {"IDENTITY_DATABASE_URL": database_url, "IDENTITY_LISTEN": target},
                tmp_path / "identity-late.log",
            )
            try:
                assert await recorder.flush(timeout=20), core.output()
                with IdentityClient(target) as client:
                    ops = client.list_operations(tenant.id).operations
                    assert [(o.request_id, o.status) for o in ops] == [("while-down", 200)]
            finally:
                await recorder.close()
                core.stop()

    asyncio.run(run())


def test_a_request_with_a_nul_in_its_path_costs_no_one_their_history(
    client: IdentityClient,
) -> None:
    """What the gateway queues is cleaned (NUL, lengths), so every record of a
    batch is valid; the core would drop an invalid one, not the batch."""
    a = client.create_tenant(f"nul-a-{free_port()}")
    b = client.create_tenant(f"nul-b-{free_port()}")

    class _Call:
        def __init__(self, tenant_id: str, rid: str) -> None:
            self.tenant_id, self.token_id, self.request_id = tenant_id, "t", rid
            self.secret = "scim_presented"

    async def run() -> None:
        async with AsyncIdentityClient(client.target) as gateway_client:
            recorder = Recorder(gateway_client, linger=5.0)  # one batch for all three
            for tenant_id, rid, resource in (
                (b.id, "b1", "u1"),
                (a.id, "a1", "x\x00y" * 50),
                (b.id, "b2", "u2"),
            ):
                recorder.record(
                    _Call(tenant_id, rid),
                    method="GET",
                    info=OpInfo(history_pb2.OPERATION_KIND_READ, "User", resource),
                    status=404,
                    error=None,
                    duration_ms=1.0,
                )
            assert await recorder.flush(timeout=20)
            await recorder.close()

    asyncio.run(run())
    assert sorted(o.request_id for o in client.list_operations(b.id).operations) == ["b1", "b2"]
    (kept,) = client.list_operations(a.id).operations
    assert kept.request_id == "a1" and "\x00" not in kept.resource_id
