"""Token scopes and per-tenant rate limits in the gateway (falcon.testing over a
real core), and the gateway's settings for a secured core."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scim_gateway.access import RateLimiter
from scim_gateway.app import create_app
from scim_gateway.settings import Settings, SettingsError
from scim_identity_api.v1 import tenants_pb2
from scim_identity_client import IdentityClient

from ..gateway.conftest import (
    GROUP_SCHEMA,
    PATCH_OP,
    USER_SCHEMA,
    ScimClient,
    assert_scim_error,
    core_client,
)

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _setup(client: IdentityClient) -> tuple[Any, str, str, str, str]:
    """An app, a tenant with one user and one group, and a full-scope secret."""
    app = create_app(Settings(), core_client(client.target))
    t = client.create_tenant(f"sc-{uuid.uuid4().hex[:10]}")
    full = client.issue_token(t.id).secret
    scim = ScimClient(app, f"/scim/v2/{t.name}", full)
    uid = scim.create_user("u@example.com")["id"]
    gid = scim.create_group("g", [uid])["id"]
    return app, t.name, uid, gid, full


def _scoped(client: IdentityClient, app: Any, tenant: str, scope: int) -> ScimClient:
    tokens = client.list_tokens(tenant)
    if len(tokens) >= 2:
        client.revoke_token(tenant, tokens[-1].id)
    return ScimClient(app, f"/scim/v2/{tenant}", client.issue_token(tenant, scope=scope).secret)


def test_read_only_token_may_read_and_search_only(client: IdentityClient) -> None:
    app, tenant, uid, gid, _ = _setup(client)
    ro = _scoped(client, app, tenant, tenants_pb2.TOKEN_SCOPE_READ_ONLY)
    assert ro.get("/Users").status_code == 200
    assert ro.get(f"/Users/{uid}").status_code == 200
    assert ro.get(f"/Groups/{gid}").status_code == 200
    assert ro.post("/Users/.search", {"schemas": [SEARCH]}).status_code == 200
    assert ro.post("/.search", {"schemas": [SEARCH]}).status_code == 200
    assert ro.get("/Schemas").status_code == 200
    patch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    unchanged = {  # changes nothing: makes only reads, still a write request
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "active", "value": True}],
    }
    same_name = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "displayName", "value": "g"}],
    }
    for r in (
        ro.patch(f"/Users/{uid}", unchanged),
        ro.patch(f"/Groups/{gid}", same_name),
        ro.post("/Users", {"schemas": [USER_SCHEMA], "userName": "new@example.com"}),
        ro.put(f"/Users/{uid}", {"schemas": [USER_SCHEMA], "userName": "u@example.com"}),
        ro.patch(f"/Users/{uid}", patch),
        ro.delete(f"/Users/{uid}"),
        ro.delete(f"/Groups/{gid}"),
        ro.post(
            "/Bulk",
            {"schemas": [BULK], "Operations": [{"method": "DELETE", "path": f"/Users/{uid}"}]},
        ),
    ):
        assert_scim_error(r, 403)
        assert "read-only" in r.json["detail"]
    assert client.get_user(client.get_tenant(tenant).id, uid).active


def test_users_only_token_cannot_reach_groups_by_any_route(client: IdentityClient) -> None:
    app, tenant, uid, gid, full = _setup(client)
    assert [
        g["value"]
        for g in ScimClient(app, f"/scim/v2/{tenant}", full).get(f"/Users/{uid}").json["groups"]
    ] == [gid]
    uo = _scoped(client, app, tenant, tenants_pb2.TOKEN_SCOPE_USERS_ONLY)
    # Not even a user's groups (their ids and names), nor a filter on them.
    got = uo.get(f"/Users/{uid}")
    assert got.status_code == 200 and "groups" not in got.json
    found = uo.get("/Users", params={"filter": 'userName eq "u@example.com"'})
    assert found.json["totalResults"] == 1 and "groups" not in found.json["Resources"][0]
    for f in (f'groups eq "{gid}"', f'groups[value eq "{gid}"]', 'groups.display eq "g"'):
        r = uo.get("/Users", params={"filter": f})
        assert_scim_error(r, 403)
        assert "users-only" in r.json["detail"]
    created = uo.post("/Users", {"schemas": [USER_SCHEMA], "userName": "x@example.com"})
    assert created.status_code == 201
    for r in (
        uo.get("/Groups"),
        uo.get(f"/Groups/{gid}"),
        uo.post("/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "new"}),
        uo.delete(f"/Groups/{gid}"),
        uo.post("/Groups/.search", {"schemas": [SEARCH]}),
        uo.post("/.search", {"schemas": [SEARCH]}),
    ):
        assert_scim_error(r, 403)
        assert "users-only" in r.json["detail"]
    bulk = uo.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {"method": "DELETE", "path": f"/Groups/{gid}"},
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "a",
                    "data": {"schemas": [USER_SCHEMA], "userName": "bulk@example.com"},
                },
            ],
        },
    )
    assert bulk.status_code == 200
    assert [op["status"] for op in bulk.json["Operations"]] == ["403", "201"]
    assert "users-only" in bulk.json["Operations"][0]["response"]["detail"]
    tid = client.get_tenant(tenant).id
    assert client.get_group(tid, gid).display_name == "g"


def test_rate_limit_answers_429_with_retry_after(client: IdentityClient) -> None:
    _, tenant, uid, _, secret = _setup(client)
    # One request per 1000 s after a burst of 3: what the bucket holds does not
    # depend on how fast this machine sends the requests (the refill itself is
    # tested on an injected clock below).
    limited = create_app(
        Settings(rate_limit_per_second=0.001, rate_limit_burst=3), core_client(client.target)
    )
    scim = ScimClient(limited, f"/scim/v2/{tenant}", secret)
    statuses = [scim.get(f"/Users/{uid}").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses
    r = scim.get("/Users")
    assert_scim_error(r, 429)
    # About 1000 s until the next token (less what refilled while the test ran).
    assert 900 <= int(r.headers["retry-after"]) <= 1000, r.headers
    # Per tenant: another tenant on the same worker is not held back by this one.
    t2 = client.create_tenant(f"sc-{uuid.uuid4().hex[:10]}")
    other = ScimClient(limited, f"/scim/v2/{t2.name}", client.issue_token(t2.id).secret)
    assert other.get("/Users").status_code == 200
    # 0 turns limits off (the default).
    unlimited = ScimClient(
        create_app(Settings(), core_client(client.target)), f"/scim/v2/{tenant}", secret
    )
    assert {unlimited.get("/Users").status_code for _ in range(10)} == {200}


def test_token_bucket_refills_at_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # buckets are per tenant
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


def test_gateway_settings_for_a_secured_core() -> None:
    s = Settings.from_env(
        {
            "SCIM_IDENTITY_TOKEN": "secret",
            "SCIM_IDENTITY_TLS_CA_FILE": "/ca.pem",
            "SCIM_IDENTITY_TLS_CERT_FILE": "/c.pem",
            "SCIM_IDENTITY_TLS_KEY_FILE": "/k.pem",
            "SCIM_RATE_LIMIT_PER_SECOND": "2.5",
            "SCIM_RATE_LIMIT_BURST": "10",
        }
    )
    assert s.identity_token == "secret" and s.identity_tls_ca_file == "/ca.pem"
    assert (s.rate_limit_per_second, s.rate_limit_burst) == (2.5, 10)
    assert "secret" not in repr(s)
    d = Settings.from_env({})
    assert d.identity_token == "" and d.rate_limit_per_second == 0
    with pytest.raises(SettingsError):
        Settings.from_env({"SCIM_IDENTITY_TLS_CERT_FILE": "/c.pem"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SCIM_RATE_LIMIT_PER_SECOND": "-1"})


def test_request_limits_body_filter_bulk_and_page(client: IdentityClient) -> None:
    settings = Settings(
        max_payload_bytes=4096, max_bulk_operations=3, max_page_size=5, default_page_size=2
    )
    _, tenant, _, _, secret = _setup(client)
    scim = ScimClient(
        create_app(settings, core_client(client.target)), f"/scim/v2/{tenant}", secret
    )
    big = {"schemas": [USER_SCHEMA], "userName": "big@example.com", "nickName": "x" * 5000}
    assert_scim_error(scim.post("/Users", big), 413)
    r = scim.get("/Users", params={"filter": 'userName eq "' + "a" * 9000 + '"'})
    assert_scim_error(r, 400, "invalidFilter")
    deep = "(" * 40 + 'userName eq "a"' + ")" * 40
    assert_scim_error(scim.get("/Users", params={"filter": deep}), 400, "invalidFilter")
    ops = [{"method": "DELETE", "path": f"/Users/{uuid.uuid4()}"} for _ in range(4)]
    assert_scim_error(scim.post("/Bulk", {"schemas": [BULK], "Operations": ops}), 413)
    for i in range(6):
        scim.create_user(f"p{i}@example.com")
    page = scim.get("/Users", params={"count": "500"}).json
    assert page["itemsPerPage"] == 5 and page["totalResults"] == 7
    assert scim.get("/Users").json["itemsPerPage"] == 2
