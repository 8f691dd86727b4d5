"""The admin console as it runs: the real `identity-admin` and `scim-gateway`
processes against the real core of tests/conftest.py (SQLite and PostgreSQL), and a
small HTTP client that keeps the console's cookie."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from identity_service.storage.models import utcnow
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..support import VENV_BIN, Proc, ServiceThread, Visitor, free_port


def wait_http(port: int, proc: Proc, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.popen.poll() is None, proc.output()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not ready:\n{proc.output()}")


@pytest.fixture
def clock(identity_service: ServiceThread) -> Iterator[list[datetime]]:
    """The core's sign-in clock, as a one-element list the test moves (never slept)."""
    assert identity_service.service is not None
    admin = identity_service.service.admin
    now = [utcnow()]
    admin.clock = lambda: now[0]  # type: ignore[method-assign]
    yield now
    del admin.clock  # back to the class's wall clock


@dataclass(frozen=True)
class Stack:
    console_url: str
    gateway_url: str
    console: Proc


def start_console(target: str, tmp: Path, gateway_url: str, **env: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        [str(VENV_BIN / "identity-admin")],
        {
            "ADMIN_LISTEN": f"127.0.0.1:{port}",
            "ADMIN_IDENTITY_TARGET": target,
            "ADMIN_SCIM_BASE_URL": gateway_url,
            **env,
        },
        tmp / f"admin-{port}.log",
    )
    try:
        wait_http(port, proc, "/healthz")
    except BaseException:
        proc.stop()
        raise
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def stack(identity_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The console and a gateway (one worker each) in front of the shared core."""
    tmp = tmp_path_factory.mktemp("admin")
    gport = free_port()
    gateway = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {
            "SCIM_IDENTITY_TARGET": identity_target,
            "SCIM_LISTEN": f"127.0.0.1:{gport}",
            "SCIM_WORKERS": "1",
        },
        tmp / "gateway.log",
    )
    try:
        wait_http(gport, gateway, "/healthz")
        gateway_url = f"http://127.0.0.1:{gport}"
        console, url = start_console(identity_target, tmp, gateway_url)
        try:
            yield Stack(url, gateway_url, console)
        finally:
            console.stop()
    finally:
        gateway.stop()


@pytest.fixture
def visitor(stack: Stack) -> Visitor:
    return Visitor(stack.console_url)


@pytest.fixture
def admin_of(stack: Stack, client: IdentityClient, tenant: Tenant) -> Visitor:
    """The tenant's admin, signed in."""
    v = Visitor(stack.console_url)
    v.sign_in(client, tenant.name, subject="ada@example.com")
    return v
