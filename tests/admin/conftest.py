"""The admin console as it runs: the real `identity-admin` and `scim-gateway`
processes against the real core of tests/conftest.py (SQLite and PostgreSQL), and a
small HTTP client that keeps the console's cookie."""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from identity_service.storage.models import utcnow
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant
from scim_identity_client.urls import admin_sign_in_url

from ..support import VENV_BIN, Proc, ServiceThread, free_port

COOKIE = "identity_admin_session"


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


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', self.body)
        assert m, self.body
        return m.group(1)


@dataclass
class Visitor:
    """A browser without a browser: keeps the console's cookie, follows nothing."""

    base: str
    cookie: str = ""
    history: list[Page] = field(default_factory=list)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Page:
        parts = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        page = Page(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode())
        conn.close()
        m = re.match(rf"{COOKIE}=([^;]*)", page.headers.get("set-cookie", ""))
        if m:
            self.cookie = m.group(1)
        self.history.append(page)
        return page

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Page:
        return self.request("POST", path, form)

    def sign_in(self, client: IdentityClient, tenant: str | None, **kw: object) -> Page:
        link = client.create_admin_link(tenant, **kw)  # type: ignore[arg-type]
        url = urllib.parse.urlsplit(admin_sign_in_url(self.base, link.secret))
        page = self.get(f"{url.path}?{url.query}")
        assert page.status == 200 and self.cookie, page.body
        return page


@pytest.fixture
def visitor(stack: Stack) -> Visitor:
    return Visitor(stack.console_url)


@pytest.fixture
def admin_of(stack: Stack, client: IdentityClient, tenant: Tenant) -> Visitor:
    """The tenant's admin, signed in."""
    v = Visitor(stack.console_url)
    v.sign_in(client, tenant.name, subject="ada@example.com")
    return v
