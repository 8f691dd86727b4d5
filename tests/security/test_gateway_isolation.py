"""Tenant isolation and connector state through every gateway endpoint: a token
of tenant B can neither read nor change anything of tenant A, whether it names
A's path or A's ids; an inactive connector refuses everything. The Falcon app
over a real core (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from google.protobuf import json_format

from identity_service.domain.tenants import TOKEN_PREFIX
from scim_gateway.app import create_app
from scim_gateway.errors import REDACTED, redact
from scim_gateway.settings import Settings
from scim_identity_api.v1 import policy_pb2, tenants_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..gateway.conftest import (
    GROUP_SCHEMA,
    PATCH_OP,
    USER_SCHEMA,
    ScimClient,
    assert_scim_error,
    core_client,
)
from .helpers import ALL_SERVICE_SECRETS

ACME = "urn:example:params:scim:schemas:extension:secret-a:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _app(client: IdentityClient) -> Any:
    return create_app(Settings(max_page_size=50, default_page_size=20), core_client(client.target))


def _tenant_with_data(client: IdentityClient, app: Any) -> tuple[Tenant, str, ScimClient]:
    t = client.create_tenant(f"iso-{uuid.uuid4().hex[:10]}")
    secret = client.issue_token(t.id).secret
    client.set_policy(
        t.id,
        json_format.ParseDict(
            {
                "extensionSchemas": [
                    {
                        "schema": ACME,
                        "name": "SecretA",
                        "resourceType": "User",
                        "attributes": [{"name": "badge", "type": "string"}],
                    }
                ]
            },
            policy_pb2.TenantPolicy(),
        ),
    )
    return t, secret, ScimClient(app, f"/scim/v2/{t.name}", secret)


def _every_request(uid: str, gid: str) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every endpoint, naming tenant A's ids where one is named."""
    patch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    gpatch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "displayName", "value": "pwned"}],
    }
    user = {"schemas": [USER_SCHEMA], "userName": "pwned@example.com"}
    group = {"schemas": [GROUP_SCHEMA], "displayName": "pwned", "members": [{"value": uid}]}
    bulk_ops = [
        {"method": "PATCH", "path": f"/Users/{uid}", "data": patch},
        {"method": "PUT", "path": f"/Users/{uid}", "data": user},
        {"method": "PATCH", "path": f"/Groups/{gid}", "data": gpatch},
        {"method": "DELETE", "path": f"/Groups/{gid}"},
        {"method": "DELETE", "path": f"/Users/{uid}"},
    ]
    return [
        ("GET", "/Users", None),
        ("GET", f'/Users?filter=id eq "{uid}"', None),
        ("POST", "/Users", user),
        ("GET", f"/Users/{uid}", None),
        ("PUT", f"/Users/{uid}", user),
        ("PATCH", f"/Users/{uid}", patch),
        ("DELETE", f"/Users/{uid}", None),
        ("POST", "/Users/.search", {"schemas": [SEARCH], "filter": 'userName sw "a"'}),
        ("GET", "/Groups", None),
        ("POST", "/Groups", group),
        ("GET", f"/Groups/{gid}", None),
        ("PUT", f"/Groups/{gid}", group),
        ("PATCH", f"/Groups/{gid}", gpatch),
        ("DELETE", f"/Groups/{gid}", None),
        ("POST", "/Groups/.search", {"schemas": [SEARCH]}),
        ("POST", "/.search", {"schemas": [SEARCH]}),
        ("POST", "/Bulk", {"schemas": [BULK], "Operations": bulk_ops}),
        ("GET", "/Me", None),
        ("GET", "/Schemas", None),
        ("GET", f"/Schemas/{ACME}", None),
        ("GET", "/ResourceTypes", None),
        ("GET", "/ResourceTypes/User", None),
        ("GET", "/ServiceProviderConfig", None),
    ]


def _request(scim: ScimClient, method: str, path: str, body: Any) -> Any:
    target, _, query = path.partition("?")
    return scim.request(method, target, body, query_string=query or None)


def _snapshot(client: IdentityClient, tenant: Tenant) -> tuple[bytes, ...]:
    users = client.list_users(tenant.id, count=100)
    groups = client.list_groups(tenant.id, count=100, include_members=True)
    return (
        users.SerializeToString(deterministic=True),
        groups.SerializeToString(deterministic=True),
        client.get_policy(tenant.id).SerializeToString(deterministic=True),
    )


def test_a_token_of_tenant_b_reaches_nothing_of_tenant_a(client: IdentityClient) -> None:
    app = _app(client)
    a, _, scim_a = _tenant_with_data(client, app)
    b, secret_b, scim_b = _tenant_with_data(client, app)
    b_policy = policy_pb2.TenantPolicy()  # B has no extension schema of its own
    client.set_policy(b.id, b_policy)
    user = scim_a.create_user("alice@a.example", **{ACME: {"badge": "A-1"}})
    uid = user["id"]
    gid = scim_a.create_group("A team", [uid])["id"]
    before = _snapshot(client, a)
    # What of A may never show: its id, name, data, schema. (A's user and group ids
    # are named by the requests themselves, so errors may echo them.)
    a_data = (a.id, a.name, "alice@a.example", "A team", ACME, "A-1")

    # 1. B's token under A's base URL: every endpoint is 401, as for an unknown token.
    on_a_path = ScimClient(app, f"/scim/v2/{a.name}", secret_b)
    on_a_id_path = ScimClient(app, f"/scim/v2/{a.id}", secret_b)
    for scim in (on_a_path, on_a_id_path):
        for method, path, body in _every_request(uid, gid):
            r = _request(scim, method, path, body)
            assert_scim_error(r, 401)
            assert not any(x in r.text for x in a_data[2:]), (method, path)

    # 2. B's token under its own base URL (and the token-derived one) naming A's ids:
    #    nothing of A is found, shown or changed.
    for scim in (scim_b, ScimClient(app, "/scim/v2", secret_b)):
        for method, path, body in _every_request(uid, gid):
            r = _request(scim, method, path, body)
            assert r.status_code != 500, (method, path, r.text)
            asked = path + (orjson.dumps(body).decode() if body is not None else "")
            for x in a_data:
                assert x in asked or x not in r.text, (method, path, x, r.text)
            if path.startswith("/Schemas/"):
                assert_scim_error(r, 404)
            if r.status_code == 200 and "Resources" in (r.json or {}):
                assert not {uid, gid} & {res.get("id") for res in r.json["Resources"]}
            if f"/{uid}" in path or f"/{gid}" in path:
                assert_scim_error(r, 404)
            if path == "/Bulk":
                statuses = [op["status"] for op in r.json["Operations"]]
                assert statuses == ["404"] * 5, r.text
            if method == "POST" and path == "/Groups":
                # A's user cannot be made a member of B's group: it is no user of B,
                # so it is skipped like an id that never existed (refused under B's
                # `reject` policy), and nothing tells it apart from one.
                assert r.status_code in (201, 400, 404), r.text
                if r.status_code == 201:
                    assert r.json["members"] == [], r.text
    assert _snapshot(client, a) == before
    assert client.get_user(a.id, uid).active


def test_an_inactive_connector_refuses_every_endpoint(client: IdentityClient) -> None:
    app = _app(client)
    a, secret, scim = _tenant_with_data(client, app)
    uid = scim.create_user("bob@a.example")["id"]
    gid = scim.create_group("B team", [uid])["id"]
    client.update_tenant(a.id, active=False)
    before = _snapshot(client, a)  # includes the revision: no event may follow
    for base in (f"/scim/v2/{a.name}", "/scim/v2"):
        off = ScimClient(app, base, secret)
        for method, path, body in _every_request(uid, gid):
            r = _request(off, method, path, body)
            assert_scim_error(r, 403)
            assert "connector is inactive" in r.json["detail"], r.text
    assert _snapshot(client, a) == before
    client.update_tenant(a.id, active=True)
    assert scim.get(f"/Users/{uid}").status_code == 200


def test_secrets_are_not_echoed_in_errors_or_history(client: IdentityClient) -> None:
    """A bearer secret quoted anywhere in a request (a filter, a path segment, a
    value, a bulk operation) never comes back in an error and never reaches the
    operations history: neither the caller's own secret nor any other token."""
    app = _app(client)
    a, secret, scim = _tenant_with_data(client, app)
    other = client.issue_token(a.id).secret  # token-shaped, not the one presented
    assert secret.startswith(TOKEN_PREFIX) and other.startswith(TOKEN_PREFIX)
    leaks = (secret, other, secret[len(TOKEN_PREFIX) :], other[len(TOKEN_PREFIX) :])
    r = scim.post("/Users", {"schemas": [USER_SCHEMA], "userName": secret})  # a hostile name
    assert r.status_code == 201
    bad = ScimClient(app, f"/scim/v2/{a.name}", secret + "x")
    r = bad.get("/Users")
    assert_scim_error(r, 401)
    assert secret not in r.text

    answers = [
        # The gateway's own parser refuses these and quotes the filter.
        scim.get("/Users", query_string=f"filter=bogus eq {secret}"),
        scim.get("/Users", query_string=f'filter=userName eq "{other}" and'),
        scim.post("/Users/.search", {"schemas": [SEARCH], "filter": f"nope eq {other}"}),
        # The path segment is recorded as the resource id; the core refuses it.
        scim.get(f"/Users/{secret}"),
        scim.delete(f"/Groups/{other}"),
        # A value the core refuses, quoting it (another body than the first POST's:
        # an identical one is a safe retry and answers the user, see test_retry_safety).
        scim.post("/Users", {"schemas": [USER_SCHEMA], "userName": secret, "title": "again"}),
        scim.post(
            "/Bulk",
            {
                "schemas": [BULK],
                "Operations": [{"method": "DELETE", "path": f"/Users/{other}"}],
            },
        ),
    ]
    for r in answers[:-1]:
        assert 400 <= r.status_code < 500, r.text
    assert [op["status"] for op in answers[-1].json["Operations"]] == ["404"], answers[-1].text
    for r in answers:
        for leak in leaks:
            assert leak not in r.text, r.text
    # The refusals still say what was wrong, with the secret blanked out.
    assert REDACTED in answers[0].json["detail"], answers[0].text

    ops = client.list_operations(a.id, page_size=100).operations
    refused = [op for op in ops if op.status >= 400]
    assert len(refused) >= len(answers), ops  # every refusal was recorded
    assert any(REDACTED in op.detail for op in refused), refused
    assert any(op.resource_id == REDACTED for op in refused), refused
    for op in ops:
        blob = orjson.dumps(json_format.MessageToDict(op)).decode()
        assert "Bearer" not in blob and "authorization" not in blob.lower()
        for leak in leaks:
            assert leak not in blob, blob
        assert op.token_id and op.token_id not in secret


def test_the_gateway_redacts_what_the_core_issues(client: IdentityClient) -> None:
    """The gateway's notion of a secret's shape agrees with the tokens the core
    issues (whatever their scope) and with the service credentials."""
    t = client.create_tenant(f"shape-{uuid.uuid4().hex[:10]}")
    for scope in (tenants_pb2.TOKEN_SCOPE_FULL, tenants_pb2.TOKEN_SCOPE_READ_ONLY):
        secret = client.issue_token(t.id, scope=scope).secret
        assert redact(f"x {secret} y") == f"x {REDACTED} y"
    for svc in ALL_SERVICE_SECRETS:
        assert redact(f"({svc})") == f"({REDACTED})"
    assert redact("hunter2 and hunter2", "hunter2") == f"{REDACTED} and {REDACTED}"
    # Ordinary text, ids and the public token prefix shown in listings stay.
    uid = str(uuid.uuid4())
    assert redact(f"user {uid} scim_ab12cd") == f"user {uid} scim_ab12cd"
