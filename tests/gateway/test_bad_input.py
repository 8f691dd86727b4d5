"""Bad input gets a clear 4xx and leaves nothing behind (issue #15): tenant path
segments that cannot name a tenant, duplicate JSON keys, and a Host the service
does not answer to. Against the real core, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .conftest import PATCH_OP, ScimClient, assert_scim_error, core_client

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def _users(client: IdentityClient, tenant: Tenant) -> int:
    return client.list_users(tenant.id).total_results


@pytest.mark.parametrize(
    "segment", ["acme%09", "acme%0d%0aX-Evil:%201", "%00", "a%20b", "caf%C3%A9", "%ff%fe", "x" * 65]
)
def test_a_tenant_segment_no_tenant_can_have_is_404(
    scim: ScimClient, client: IdentityClient, tenant: Tenant, segment: str
) -> None:
    bad = ScimClient(scim.app, f"/scim/v2/{segment}", scim.token)
    assert_scim_error(bad.get("/Users"), 404)
    assert_scim_error(bad.post("/Users", {"userName": "ada"}), 404)
    assert_scim_error(bad.get("/ServiceProviderConfig"), 404)
    assert _users(client, tenant) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userName":"ada","userName":"eve"}',
        b'{"userName":"ada","USERNAME":"eve"}',
        b'{"userName":"ada","name":{"givenName":"A","givenname":"E"}}',
        b'{"userName":"ada","emails":[{"value":"a@x","value":"e@x"}]}',
        b'{"userName" : "ada", "userName" : "eve"}',  # spaced: the slow path finds it
        b'{"userName":"ada","nickName":"say \\"hi\\"","nickName":"x"}',  # escaped quotes
        b'{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"Schemas":[],"userName":"a"}',
    ],
)
def test_duplicate_keys_are_400_invalid_syntax(
    scim: ScimClient, client: IdentityClient, tenant: Tenant, raw: bytes
) -> None:
    assert_scim_error(scim.post("/Users", raw=raw), 400, "invalidSyntax")
    assert _users(client, tenant) == 0


def test_duplicate_keys_in_patch_and_bulk_change_nothing(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    user = scim.create_user("ada", title="Countess")
    patch = (
        b'{"schemas":["' + PATCH_OP.encode() + b'"],"Operations":[{"op":"replace",'
        b'"path":"title","value":"x","VALUE":"y"}]}'
    )
    assert_scim_error(scim.patch(f"/Users/{user['id']}", raw=patch), 400, "invalidSyntax")
    bulk = (
        b'{"schemas":["' + BULK.encode() + b'"],"Operations":[{"method":"POST","path":"/Users",'
        b'"bulkId":"a","data":{"userName":"eve"},"bulkId":"b"}]}'
    )
    assert_scim_error(scim.post("/Bulk", raw=bulk), 400, "invalidSyntax")
    after = scim.get(f"/Users/{user['id']}").json
    assert after["title"] == "Countess" and after["meta"]["version"] == user["meta"]["version"]
    assert _users(client, tenant) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userName":"ada","nickName":":colon first"}',
        b'{"userName":"ada","nickName":"quote \\" then colon\\":"}',
        b'{"userName" :"ada", "name": {"givenName" : "A"}}',
    ],
)
def test_bodies_without_duplicates_are_taken(scim: ScimClient, raw: bytes) -> None:
    r = scim.post("/Users", raw=raw)
    assert r.status_code == 201, r.text


@pytest.fixture
def hosts(settings: Settings, identity_target: str) -> Settings:
    return dataclasses.replace(settings, allowed_hosts=frozenset({"scim.example.com"}))


def test_a_host_not_allowed_is_400_and_stores_nothing(
    hosts: Settings, identity_target: str, client: IdentityClient, tenant: Tenant, token: str
) -> None:
    app = create_app(hosts, core_client(identity_target))
    scim = ScimClient(app, f"/scim/v2/{tenant.name}", token)
    r = scim.post("/Users", {"userName": "ada"}, host="evil.example")
    assert_scim_error(r, 400, "invalidValue")
    assert _users(client, tenant) == 0
    assert scim.get("/Users", host="evil.example").status_code == 400
    # Health endpoints make no URLs: probes by any address are answered.
    assert scim.test.simulate_get("/healthz", host="10.1.2.3").status_code == 200
    created = scim.post("/Users", {"userName": "ada"}, host="scim.example.com")
    assert created.status_code == 201, created.text
    assert created.headers["location"].startswith("http://scim.example.com/scim/v2/")
    assert created.json["meta"]["location"] == created.headers["location"]


def test_the_public_url_is_used_whatever_the_host(
    settings: Settings, identity_target: str, tenant: Tenant, token: str
) -> None:
    fixed = dataclasses.replace(
        settings, public_url="https://scim.example.com", allowed_hosts=frozenset()
    )
    scim = ScimClient(
        create_app(fixed, core_client(identity_target)), f"/scim/v2/{tenant.name}", token
    )
    r = scim.post("/Users", {"userName": "ada"}, host="evil.example")
    assert r.status_code == 201, r.text
    assert r.headers["location"].startswith(
        f"https://scim.example.com/scim/v2/{tenant.name}/Users/"
    )


def test_settings_allow_only_the_listen_address_by_default() -> None:
    assert Settings.from_env({}).allowed_hosts == {"127.0.0.1:8080"}
    assert Settings.from_env({"SCIM_LISTEN": "0.0.0.0:9000"}).allowed_hosts == {
        "localhost:9000",
        "127.0.0.1:9000",
        "[::1]:9000",
    }
    assert Settings.from_env({"SCIM_ALLOWED_HOSTS": "A.example, b.example:8443"}).allowed_hosts == {
        "a.example",
        "b.example:8443",
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("caf\u00e9@example.com", "cafe\u0301@example.com"),  # NFC, NFD
        ("Stra\u00dfe", "STRASSE"),  # case folding
        ("\uff21\uff44\uff41", "ada"),  # fullwidth
        ("Ada Lovelace", "ADA LOVELACE"),  # each part between spaces
    ],
)
def test_user_names_that_read_the_same_are_one_name(
    scim: ScimClient, client: IdentityClient, tenant: Tenant, first: str, second: str
) -> None:
    created = scim.create_user(first)
    assert created["userName"] == first  # stored as sent
    assert_scim_error(scim.post("/Users", {"userName": second}), 409, "uniqueness")
    # A filter finds the user by either spelling.
    q = 'userName eq "{}"'
    for name in (first, second):
        found = scim.get("/Users", params={"filter": q.format(name)}).json
        assert [u["id"] for u in found["Resources"]] == [created["id"]], name
    # Renaming another user onto it is refused too.
    other = scim.create_user("someone-else")
    r = scim.put(f"/Users/{other['id']}", {"userName": second})
    assert_scim_error(r, 409, "uniqueness")
    assert _users(client, tenant) == 2


@pytest.mark.parametrize(
    "name", ["a\u200bb", "\u200dzwj", "bom\ufeff", "ctl\u0007", "nbsp\u00a0x", "sym\u2603"]
)
def test_user_names_with_disallowed_code_points_are_400(
    scim: ScimClient, client: IdentityClient, tenant: Tenant, name: str
) -> None:
    assert_scim_error(scim.post("/Users", {"userName": name}), 400, "invalidValue")
    assert _users(client, tenant) == 0
