"""The JSON admin API against the real console, gateway and core processes (both
databases): bearer and cookie authentication, CSRF, the tenant boundary, bad input
(4xx and nothing changed), the connector and token endpoints with their history
records. Every answer is checked against the OpenAPI document the console serves
(`ApiClient.check`)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta

import pytest

from scim_identity_client import IdentityClient
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import Tenant

from ..support import Visitor
from .conftest import ApiClient, Stack, admin_session
from .test_console_browser import scim_status

pytestmark = pytest.mark.e2e


def _ops(client: IdentityClient, tenant: Tenant) -> list[tuple[str, str, int, str, str]]:
    """The admins' actions in the tenant's history, oldest first (the gateway records
    SCIM requests there too, in the background)."""
    ops = client.list_operations(tenant.id).operations
    return [
        (o.method, o.resource_type, o.status, o.actor, o.detail)
        for o in reversed(ops)
        if o.actor.startswith("console:")
    ]


def test_an_operator_bearer_from_identityctl(
    identity_target: str, client: IdentityClient, tenant: Tenant, stack: Stack
) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = identityctl(
            ["--target", identity_target, "admin-session", "--operator", "--subject", "ops@v"]
        )
    assert code == 0, err.getvalue()
    bearer = out.getvalue().strip().splitlines()[-1]
    assert bearer.startswith("ses_") and "Authorization: Bearer" in err.getvalue()
    api = ApiClient(stack.console_url, bearer=bearer)
    me = api.get("/api/v1/session")
    assert me.status == 200
    assert me.json["operator"] and me.json["tenant"] is None and me.json["subject"] == "ops@v"
    tenants = api.get("/api/v1/tenants")
    assert tenants.status == 200 and tenant.name in [t["name"] for t in tenants.json]
    one = api.get(f"/api/v1/tenants/{tenant.id}")
    assert one.status == 200 and one.json["name"] == tenant.name
    assert one.json["scim_urls"]["by_name"] == f"{stack.gateway_url}/scim/v2/{tenant.name}"
    # Signing out ends the bearer.
    assert api.request("DELETE", "/api/v1/session").status == 204
    gone = api.get("/api/v1/tenants")
    assert gone.status == 401 and gone.headers["www-authenticate"].startswith("Bearer")
    # Neither or both of a tenant and --operator: refused, nothing printed.
    for args in ((), (tenant.name, "--operator")):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = identityctl(["--target", identity_target, "admin-session", *args])
        assert code == 1 and out.getvalue() == ""


def test_a_bearer_expires_with_its_session(
    client: IdentityClient, tenant: Tenant, stack: Stack, clock: list[datetime]
) -> None:
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    assert api.get(f"/api/v1/tenants/{tenant.name}/tokens").status == 200
    clock[0] += timedelta(hours=8)
    gone = api.get(f"/api/v1/tenants/{tenant.name}/tokens")
    assert gone.status == 401 and "Sign in with a new link" in gone.message


def test_no_credential_or_a_bad_one_is_401(
    client: IdentityClient, tenant: Tenant, stack: Stack
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer ses_" + "x" * 43},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "ses_" + "x" * 43},
        {"Cookie": "identity_admin_session=ses_junk"},
    ):
        for method, path in (
            ("GET", "/api/v1/session"),
            ("GET", "/api/v1/tenants"),
            ("GET", f"/api/v1/tenants/{tenant.name}/tokens"),
            ("POST", f"/api/v1/tenants/{tenant.name}/tokens"),
        ):
            answer = ApiClient(stack.console_url).request(
                method, path, {} if method == "POST" else None, headers=headers
            )
            assert answer.status == 401, (headers, path, answer.raw)
            assert answer.headers["www-authenticate"] == 'Bearer realm="identity-admin"'
            assert tenant.id not in answer.raw.decode()
    # A sign-in link's secret is not a session's.
    link = client.create_admin_link(None, operator=True)
    assert ApiClient(stack.console_url, bearer=link.secret).get("/api/v1/tenants").status == 401
    assert client.list_tokens(tenant.id) == []


def test_tokens_and_connector_by_bearer(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient, stack: Stack
) -> None:
    base = f"/api/v1/tenants/{tenant.name}"
    assert operator_api.get(f"{base}/tokens").json == []
    made = operator_api.request(
        "POST", f"{base}/tokens", {"description": "Okta", "scope": "read-only"}
    )
    assert made.status == 201, made.raw
    token, secret = made.json["token"], made.json["secret"]
    assert secret.startswith(token["prefix"]) and token["scope"] == "read-only"
    assert token["expires"] is None and token["last_used"] is None
    assert client.authenticate(secret).token.id == token["id"]
    scim_url = f"{stack.gateway_url}/scim/v2/{tenant.name}"
    assert scim_status(scim_url, secret) == 200
    listed = operator_api.get(f"{base}/tokens")
    assert [k["id"] for k in listed.json] == [token["id"]] and secret not in listed.raw.decode()
    # An expiring one; then the limit (409), explained.
    second = operator_api.request("POST", f"{base}/tokens", {"expires_in_days": 30})
    assert second.status == 201 and second.json["token"]["expires"].endswith("Z")
    full = operator_api.request("POST", f"{base}/tokens", {})
    assert full.status == 409 and "Rotate" in full.message
    # Rotate: the successor keeps description and scope; the old one dies at once.
    rotated = operator_api.request("POST", f"{base}/tokens/{token['id']}/rotate")
    assert rotated.status == 201
    new = rotated.json["token"]
    assert (new["description"], new["scope"]) == ("Okta", "read-only")
    assert scim_status(scim_url, secret) == 401
    assert scim_status(scim_url, rotated.json["secret"]) == 200
    # Revoke.
    assert operator_api.request("DELETE", f"{base}/tokens/{new['id']}").status == 204
    assert scim_status(scim_url, rotated.json["secret"]) == 401
    again = operator_api.request("DELETE", f"{base}/tokens/{new['id']}")
    assert again.status == 404  # no longer live
    # The connector: its state and URLs, the tokens against the limit; off (403 at
    # the gateway), then on.
    state = operator_api.get(f"{base}/connector")
    assert state.status == 200 and state.json == {
        "active": True,
        "scim_urls": {
            "by_name": scim_url,
            "by_id": f"{stack.gateway_url}/scim/v2/{tenant.id}",
            "by_token": f"{stack.gateway_url}/scim/v2",
        },
        "live_tokens": 1,
        "live_token_limit": 2,
    }
    off = operator_api.request("PUT", f"{base}/connector", {"active": False})
    assert off.status == 200 and off.json["active"] is False
    assert operator_api.get(f"{base}/connector").json["active"] is False
    assert scim_status(scim_url, second.json["secret"]) == 403
    on = operator_api.request("PUT", f"{base}/connector", {"active": True})
    assert on.status == 200 and on.json["active"] is True
    # Each action in the history, with its actor and the API's method.
    actor = "console:operator platform@vendor.example"
    t1, t2, t3 = token["prefix"], second.json["token"]["prefix"], new["prefix"]
    assert _ops(client, tenant) == [
        ("POST", "Token", 201, actor, f"token {t1}… generated"),
        ("POST", "Token", 201, actor, f"token {t2}… generated"),
        ("POST", "Token", 409, actor, "token not generated: two tokens are live"),
        ("POST", "Token", 201, actor, f"token {t1}… rotated: {t3}… issued, old revoked"),
        ("DELETE", "Token", 200, actor, f"token {t3}… revoked"),
        ("PUT", "Tenant", 200, actor, "connector deactivated"),
        ("PUT", "Tenant", 200, actor, "connector activated"),
    ]


def test_a_cookies_unsafe_requests_need_the_csrf_header(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    token = client.issue_token(tenant.id).token.id
    page = admin_of.get(f"/tenants/{tenant.name}/connector")
    api = ApiClient(stack.console_url, cookie=admin_of.cookie)
    # Reads need no token; the session answers it (the one the pages embed).
    me = api.get("/api/v1/session")
    assert me.status == 200 and me.json["csrf_token"] == page.csrf()
    assert me.json["tenant"] == {"id": tenant.id, "name": tenant.name}
    other = Visitor(stack.console_url)
    other.sign_in(client, tenant.name)
    foreign = other.get(f"/tenants/{tenant.name}/connector").csrf()
    base = f"/api/v1/tenants/{tenant.name}"
    last = "1" if page.csrf().endswith("0") else "0"
    for csrf in ("", foreign, page.csrf()[:-1] + last, page.csrf().upper()):
        api.csrf = csrf
        for method, path, body in (
            ("POST", f"{base}/tokens", {}),
            ("POST", f"{base}/tokens/{token}/rotate", None),
            ("DELETE", f"{base}/tokens/{token}", None),
            ("PUT", f"{base}/connector", {"active": False}),
            ("DELETE", "/api/v1/session", None),
        ):
            answer = api.request(method, path, body)
            assert answer.status == 403, (csrf, method, path, answer.raw)
            assert "X-CSRF-Token" in answer.message
    assert [t.id for t in client.list_tokens(tenant.id)] == [token]
    assert client.get_tenant(tenant.id).active
    assert admin_of.get(f"/tenants/{tenant.name}/connector").status == 200
    # With it: done, and recorded as the admin's.
    api.csrf = page.csrf()
    assert api.request("PUT", f"{base}/connector", {"active": False}).status == 200
    assert not client.get_tenant(tenant.id).active
    assert _ops(client, tenant)[-1][3] == "console:ada@example.com"
    # A bearer needs no CSRF token, whatever cookie rides along.
    bearer = ApiClient(stack.console_url, bearer=admin_of.cookie, cookie="ses_junk")
    assert bearer.request("PUT", f"{base}/connector", {"active": True}).status == 200


def test_a_tenant_admins_bearer_reaches_their_tenant_only(
    client: IdentityClient, tenant: Tenant, stack: Stack
) -> None:
    other = client.create_tenant(f"{tenant.name}-other")
    theirs = client.issue_token(other.id).token.id
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    assert api.get(f"/api/v1/tenants/{tenant.name}").status == 200
    listing = api.get("/api/v1/tenants")
    assert listing.status == 403 and other.name not in listing.raw.decode()
    missing = api.get("/api/v1/tenants/no-such-tenant")
    assert missing.status == 404
    for ref in (other.name, other.id):
        for method, path, body in (
            ("GET", f"/api/v1/tenants/{ref}", None),
            ("GET", f"/api/v1/tenants/{ref}/tokens", None),
            ("POST", f"/api/v1/tenants/{ref}/tokens", {}),
            ("POST", f"/api/v1/tenants/{ref}/tokens/{theirs}/rotate", None),
            ("DELETE", f"/api/v1/tenants/{ref}/tokens/{theirs}", None),
            ("PUT", f"/api/v1/tenants/{ref}/connector", {"active": False}),
            # Bad input too: the tenant is checked first, so nothing tells it exists.
            ("PUT", f"/api/v1/tenants/{ref}/connector", {"active": "no"}),
        ):
            answer = api.request(method, path, body)
            assert answer.status == 404, (method, path, answer.raw)
            assert answer.raw == missing.raw
    # Their token through my tenant's URL: not found either.
    assert api.request("DELETE", f"/api/v1/tenants/{tenant.name}/tokens/{theirs}").status == 404
    assert [t.id for t in client.list_tokens(other.id)] == [theirs]
    assert client.get_tenant(other.id).active
    assert client.list_operations(other.id).operations == []


def test_bad_input_is_a_4xx_and_changes_nothing(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient
) -> None:
    base = f"/api/v1/tenants/{tenant.name}"
    for raw, content_type, status, says in (
        (b"{", "application/json", 400, "not JSON"),
        (b'{"scope": "full", "scope": "read-only"}', "application/json", 400, "twice"),
        (b'{"expires_in_days": NaN}', "application/json", 400, "NaN"),
        (b"\xff\xfe", "application/json", 400, "not JSON"),
        (b"", "application/json", 400, "JSON body"),
        (b"scope=full", "application/x-www-form-urlencoded", 415, "application/json"),
        (b"{}", "text/plain", 415, "application/json"),
        (b"[]", "application/json", 422, "object"),
        (b'{"scope": "root"}', "application/json", 422, "scope"),
        (b'{"scope": 1}', "application/json", 422, "scope"),
        (b'{"expires_in_days": "30"}', "application/json", 422, "expires_in_days"),
        (b'{"expires_in_days": 0}', "application/json", 422, "expires_in_days"),
        (b'{"expires_in_days": 3651}', "application/json", 422, "expires_in_days"),
        (b'{"expires_in_days": 1.5}', "application/json", 422, "expires_in_days"),
        (b'{"description": "' + b"x" * 257 + b'"}', "application/json", 422, "description"),
        (b'{"owner": "me"}', "application/json", 422, "owner"),
        (b'{"x": "' + b"x" * 70000 + b'"}', "application/json", 413, "larger"),
        (b"[" * 60000 + b"]" * 60000, "application/json", 413, "larger"),
        (b'{"description": ' + b"[" * 20000 + b"]" * 20000 + b"}", "application/json", 400, "deep"),
    ):
        answer = operator_api.request(
            "POST", f"{base}/tokens", raw=raw, headers={"Content-Type": content_type}
        )
        assert answer.status == status, (raw[:40], answer.raw)
        assert says in answer.message, (raw[:40], answer.message)
    for body in ({}, {"active": "false"}, {"active": None}, {"active": True, "x": 1}):
        answer = operator_api.request("PUT", f"{base}/connector", body)
        assert answer.status == 422, (body, answer.raw)
    # Query parameters: unknown or repeated ones are refused.
    assert operator_api.get(f"{base}/tokens?all=1").status == 400
    # Paths and methods the API does not have: its JSON 404 and 405.
    assert operator_api.get("/api/v1/nothing").status == 404
    assert "does not take" in operator_api.request("PATCH", f"{base}/tokens").message
    assert client.list_tokens(tenant.id) == []
    assert client.get_tenant(tenant.id).active
    assert client.list_operations(tenant.id).operations == []
