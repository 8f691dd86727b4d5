"""The admin console as it runs: the real `identity-admin` and `scim-gateway`
processes against the real core of tests/conftest.py (SQLite and PostgreSQL), and a
small HTTP client that keeps the console's cookie."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from identity_admin.app import COOKIE
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


# -- the JSON admin API ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def message(self) -> str:
        body = self.json
        assert set(body) == {"error"} and set(body["error"]) == {"status", "message"}, body
        assert body["error"]["status"] == self.status, body
        return str(body["error"]["message"])


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")


@dataclass
class ApiClient:
    """An API caller: a bearer, or a console Visitor's cookie (with or without the
    CSRF header). Every answer is checked against the OpenAPI document the console
    serves: the declared status and the schema of its body."""

    base: str
    bearer: str = ""
    cookie: str = ""
    csrf: str = ""
    doc: dict[str, Any] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        parts = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        h: dict[str, str] = {}
        if self.bearer:
            h["Authorization"] = f"Bearer {self.bearer}"
        if self.cookie:
            h["Cookie"] = f"{COOKIE}={self.cookie}"
        if self.csrf:
            h["X-CSRF-Token"] = self.csrf
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()
        self.check(method, path, answer)
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def check(self, method: str, path: str, answer: Answer) -> None:
        """The answer is one the document declares for this operation, of its schema."""
        import jsonschema

        if not self.doc:
            self.doc = json.loads(_fetch(self.base, "/api/openapi.json"))
        route = urllib.parse.urlsplit(path).path
        ops = [
            ops
            for template, ops in self.doc["paths"].items()
            if _template_regex(template).match(route)
        ]
        if answer.status in (404, 405) and not any(method.lower() in o for o in ops):
            return  # no such operation: nothing declared to check against
        (op,) = [o[method.lower()] for o in ops if method.lower() in o]
        declared = op["responses"].get(str(answer.status))
        assert declared is not None, (method, path, answer.status, answer.raw)
        schema = declared.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            assert answer.raw == b"", (method, path, answer.raw)
            return
        assert answer.headers["content-type"].startswith("application/json")
        if schema.get("$ref"):
            schema = self.doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        jsonschema.Draft202012Validator(schema).validate(answer.json)


def _fetch(base: str, path: str) -> bytes:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def admin_session(client: IdentityClient, tenant: str | None, **kw: Any) -> str:
    """An admin session's secret: what the API takes as its bearer."""
    link = client.create_admin_link(tenant, **kw)
    return client.redeem_admin_link(link.secret).secret


@pytest.fixture
def operator_api(stack: Stack, client: IdentityClient) -> ApiClient:
    """The API with an operator's bearer."""
    bearer = admin_session(client, None, operator=True, subject="platform@vendor.example")
    return ApiClient(stack.console_url, bearer=bearer)
