"""Gateway fixtures: the Falcon app over a real identity core (SQLite and
PostgreSQL, from tests/conftest.py), driven through falcon.testing."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import falcon.testing
import orjson
import pytest

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_client import AsyncIdentityClient
from scim_identity_client.types import Tenant

SCIM = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


class StaysConnected:
    """The app as a real HTTP client sees it: falcon's simulator reports the client
    gone ('http.disconnect') as soon as it has sent the body, and the gateway
    cancels the work of a client that hangs up (guard.Guard); an HTTP client
    stays connected until its response is complete."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = asyncio.Event()
        sent_body = False

        async def receive_until_answered() -> Any:
            nonlocal sent_body
            if sent_body:
                await answered.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                sent_body = True
            return message

        async def send_and_note(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()
            await send(message)

        await self.app(scope, receive_until_answered, send_and_note)


class ScimClient:
    """A falcon TestClient speaking SCIM under one base path, with a token preset.

    falcon's TestClient runs an ASGI app's whole life for each request: lifespan
    startup (the app opens its channel to the core), the request, then shutdown
    (the history still queued is written, the channel closed). So the history of
    a request is in the core when the request returns here
    (test_history_batching.py checks that it is written without a shutdown)."""

    def __init__(self, app: Any, base: str, token: str | None) -> None:
        self.app = app
        self.test = falcon.testing.TestClient(StaysConnected(app))
        self.base = base
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        query_string: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = SCIM,
        host: str = falcon.testing.helpers.DEFAULT_HOST,
    ) -> falcon.testing.Result:
        h = {"Content-Type": content_type}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        result = self.test.simulate_request(
            method,
            self.base + path,
            body=data,
            headers=h,
            params=params,
            query_string=query_string,
            host=host,
        )
        return result

    def get(self, path: str, **kw: Any) -> falcon.testing.Result:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> falcon.testing.Result:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> falcon.testing.Result:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> falcon.testing.Result:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> falcon.testing.Result:
        return self.request("DELETE", path, **kw)

    # helpers for arranging state through the API itself
    def create_user(self, user_name: str, **attrs: Any) -> dict[str, Any]:
        body = {"schemas": [USER_SCHEMA], "userName": user_name, **attrs}
        r = self.post("/Users", body)
        assert r.status_code == 201, r.text
        return dict(r.json)

    def create_group(self, name: str, members: list[str] = (), **attrs: Any) -> dict[str, Any]:
        body = {
            "schemas": [GROUP_SCHEMA],
            "displayName": name,
            "members": [{"value": m} for m in members],
            **attrs,
        }
        r = self.post("/Groups", body)
        assert r.status_code == 201, r.text
        return dict(r.json)


def assert_scim_error(r: falcon.testing.Result, status: int, scim_type: str | None = None) -> None:
    """A SCIM error body (RFC 7644 §3.12) with the given status and scimType."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(SCIM), r.headers
    body = r.json
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    assert body["detail"]


@pytest.fixture
def settings() -> Settings:
    return Settings(
        max_payload_bytes=64 * 1024,
        max_bulk_operations=20,
        max_page_size=50,
        default_page_size=20,
    )


def core_client(target: str, **kwargs: Any) -> Any:
    """A factory of the gateway's identity client (the app calls it at startup)."""
    return functools.partial(AsyncIdentityClient, target, **kwargs)


@pytest.fixture
def app(settings: Settings, identity_target: str) -> Any:
    return create_app(settings, core_client(identity_target))


@pytest.fixture
def scim(app: Any, tenant: Tenant, token: str) -> ScimClient:
    """SCIM under /scim/v2/{tenant name}/ with the tenant's bearer token."""
    return ScimClient(app, f"/scim/v2/{tenant.name}", token)


@pytest.fixture
def scim_root(app: Any, token: str) -> ScimClient:
    """SCIM under /scim/v2/ (tenant taken from the token)."""
    return ScimClient(app, "/scim/v2", token)
