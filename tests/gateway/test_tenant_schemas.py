"""Tenant-defined extension schemas (TenantPolicy.extension_schemas) in the gateway:
discovery, typed writes (POST/PUT/PATCH), responses, filters, and when the
policy is fetched (only when a request needs it, at most once per request)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scim_identity_api.v1.policy_pb2 import GetSchemasResponse
from scim_identity_client import AsyncIdentityClient, IdentityClient
from scim_identity_client.types import ExtensionSchema, SchemaAttribute, Tenant, TenantPolicy

from .conftest import ENTERPRISE, GROUP_SCHEMA, PATCH_OP, USER_SCHEMA, ScimClient, assert_scim_error

ACME = "urn:acme:params:scim:schemas:extension:acme:2.0:User"
ACME_GROUP = "urn:acme:params:scim:schemas:extension:acme:2.0:Group"


def policy() -> TenantPolicy:
    return TenantPolicy(
        extension_schemas=[
            ExtensionSchema(
                schema=USER_SCHEMA,
                name="Panther",
                resource_type="User",
                attributes=[SchemaAttribute(name="pantherRole", type="string", description="r")],
            ),
            ExtensionSchema(
                schema=ACME,
                name="Acme",
                description="Acme's attributes",
                resource_type="User",
                attributes=[
                    SchemaAttribute(name="costCode", type="integer"),
                    SchemaAttribute(name="isContractor", type="boolean"),
                    SchemaAttribute(name="hourlyRate", type="decimal"),
                    SchemaAttribute(name="startDate", type="dateTime"),
                    SchemaAttribute(name="badges", type="string", multi_valued=True),
                ],
            ),
            ExtensionSchema(
                schema=ACME_GROUP,
                resource_type="Group",
                attributes=[SchemaAttribute(name="site", type="string")],
            ),
        ]
    )


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tenant ids of the reads of a tenant's schemas (GetSchemas for a tenant) the
    gateway makes through its async client (the built-in catalogue, fetched once
    per worker, is not counted)."""
    seen: list[str] = []
    real = AsyncIdentityClient.get_schemas

    async def counting(
        client: AsyncIdentityClient, tenant_id: str = "", **kw: Any
    ) -> GetSchemasResponse:
        if tenant_id or kw.get("ctx") is not None:  # the request's tenant (its bearer's)
            seen.append(tenant_id)
        return await real(client, tenant_id, **kw)

    monkeypatch.setattr(AsyncIdentityClient, "get_schemas", counting)
    return seen


@pytest.fixture
def tenant_scim(client: IdentityClient, tenant: Tenant, scim: ScimClient) -> ScimClient:
    client.set_policy(tenant.id, policy())
    return scim


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def test_discovery_shows_the_tenants_schemas(
    tenant_scim: ScimClient, scim_root: ScimClient, calls: list[str]
) -> None:
    scim = tenant_scim
    docs = {s["id"]: s for s in scim.get("/Schemas").json["Resources"]}
    assert set(docs) == {USER_SCHEMA, ENTERPRISE, GROUP_SCHEMA, ACME, ACME_GROUP}
    core = {a["name"]: a for a in docs[USER_SCHEMA]["attributes"]}
    assert core["pantherRole"]["type"] == "string" and core["userName"]["required"]
    acme = {a["name"]: a for a in docs[ACME]["attributes"]}
    assert acme["costCode"]["type"] == "integer" and acme["badges"]["multiValued"]
    assert docs[ACME]["name"] == "Acme" and docs[ACME]["description"] == "Acme's attributes"
    one = scim.get(f"/Schemas/{ACME.upper()}")
    assert one.status_code == 200 and one.json["id"] == ACME
    assert {a["name"] for a in scim.get(f"/Schemas/{USER_SCHEMA}").json["attributes"]} >= {
        "pantherRole",
        "userName",
    }
    types = {t["id"]: t for t in scim.get("/ResourceTypes").json["Resources"]}
    assert [e["schema"] for e in types["User"]["schemaExtensions"]] == [ENTERPRISE, ACME]
    assert [e["schema"] for e in types["Group"]["schemaExtensions"]] == [ACME_GROUP]
    assert scim.get("/ResourceTypes/User").json["schemaExtensions"][1]["schema"] == ACME
    # Under /scim/v2/ (tenant from the token) too.
    assert ACME in {s["id"] for s in scim_root.get("/Schemas").json["Resources"]}
    assert len(calls) == 6  # one policy read per discovery request


def test_other_tenants_see_the_built_in_schemas(
    client: IdentityClient, tenant_scim: ScimClient, app: Any
) -> None:
    other = client.create_tenant(f"o-{uuid.uuid4().hex[:12]}")
    scim = ScimClient(app, f"/scim/v2/{other.name}", client.issue_token(other.id).secret)
    ids = {s["id"] for s in scim.get("/Schemas").json["Resources"]}
    assert ACME not in ids
    core = scim.get(f"/Schemas/{USER_SCHEMA}").json
    assert "pantherRole" not in {a["name"] for a in core["attributes"]}
    assert_scim_error(scim.get(f"/Schemas/{ACME}"), 404)
    assert_scim_error(
        scim.post("/Users", {"userName": "x", "pantherRole": "Admin"}), 400, "invalidValue"
    )


def test_create_accepts_declared_attributes_in_every_spelling(
    client: IdentityClient, tenant: Tenant, tenant_scim: ScimClient, calls: list[str]
) -> None:
    scim = tenant_scim
    r = scim.post(
        "/Users",
        {
            "schemas": [USER_SCHEMA, ACME],
            "userName": "ada",
            "PANTHERROLE": "Admin",
            ACME.lower(): {
                "COSTCODE": "12",
                "isContractor": "True",
                "hourlyRate": 12.5,
                "startDate": "2024-04-10T12:00:00Z",
                "badges": ["a", "b"],
            },
        },
    )
    assert r.status_code == 201, r.text
    assert r.json["pantherRole"] == "Admin"
    assert r.json[ACME] == {
        "costCode": 12,
        "isContractor": True,
        "hourlyRate": 12.5,
        "startDate": "2024-04-10T12:00:00Z",
        "badges": ["a", "b"],
    }
    assert r.json["schemas"] == [USER_SCHEMA, ACME]
    stored = client.get_user(tenant.id, r.json["id"]).extensions
    assert dict(stored[USER_SCHEMA]) == {"pantherRole": "Admin"}
    assert stored[ACME]["costCode"] == 12
    # Schema-qualified keys.
    r = scim.post(
        "/Users",
        {
            "userName": "bob",
            f"{USER_SCHEMA}:pantherRole": "Viewer",
            f"{ACME}:costCode": 7,
            USER_SCHEMA: {"pantherrole": "Viewer", "title": "t"},
        },
    )
    assert r.status_code == 201, r.text
    assert r.json["pantherRole"] == "Viewer" and r.json[ACME] == {"costCode": 7}
    assert r.json["title"] == "t"
    assert len(calls) == 2
    # Plain requests never read the policy.
    scim.create_user("carol", name={"givenName": "C"}, **{ENTERPRISE: {"department": "x"}})
    scim.get("/Users")
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"pantherRole": 5}, "pantherRole must be a string"),
        ({"nickname2": "x"}, "'nickname2' is not an attribute"),
        ({f"{USER_SCHEMA}:shoeSize": "x"}, "'shoeSize' is not an attribute"),
        ({ACME: {"costCode": "twelve"}}, "costCode must be an integer"),
        ({ACME: {"costCode": 1.5}}, "costCode must be an integer"),
        ({ACME: {"isContractor": 1}}, "isContractor must be a boolean"),
        ({ACME: {"hourlyRate": "cheap"}}, "hourlyRate must be a number"),
        ({ACME: {"startDate": "yesterday"}}, "startDate must be a dateTime"),
        ({ACME: {"unknown": 1}}, "'unknown' is not an attribute of " + ACME),
        ({f"{ACME}:costCode": True}, "costCode must be an integer"),
    ],
)
def test_declared_types_are_checked(
    tenant_scim: ScimClient, body: dict[str, Any], says: str
) -> None:
    r = tenant_scim.post("/Users", {"userName": "ada", **body})
    assert_scim_error(r, 400, "invalidValue")
    assert says in r.json["detail"], r.json["detail"]


def test_undeclared_custom_urns_stay_opaque(tenant_scim: ScimClient) -> None:
    other = "urn:example:params:scim:schemas:extension:other:2.0:User"
    r = tenant_scim.post("/Users", {"userName": "ada", other: {"anything": [1, {"x": 2}]}})
    assert r.status_code == 201, r.text
    assert r.json[other] == {"anything": [1, {"x": 2}]} and other in r.json["schemas"]


def test_patch_and_put_of_declared_attributes(
    client: IdentityClient, tenant: Tenant, tenant_scim: ScimClient, calls: list[str]
) -> None:
    scim = tenant_scim
    uid = scim.create_user("ada", pantherRole="Admin")["id"]
    calls.clear()
    r = scim.patch(
        f"/Users/{uid}",
        patch(
            {"op": "replace", "path": "PantherRole", "value": "Viewer"},
            {"op": "add", "path": f"{ACME}:costCode", "value": 3},
            {"op": "add", "path": f"{ACME.upper()}:badges", "value": ["x"]},
            {"op": "add", "value": {ACME: {"isContractor": False}, "title": "eng"}},
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json["pantherRole"] == "Viewer" and r.json["title"] == "eng"
    assert r.json[ACME] == {"costCode": 3, "badges": ["x"], "isContractor": False}
    # The core applies PATCH with the tenant's schemas: the gateway reads no policy.
    assert calls == []
    r = scim.patch(
        f"/Users/{uid}", patch({"op": "replace", "path": ACME.upper(), "value": {"costCode": 4}})
    )
    assert r.status_code == 200 and r.json[ACME]["costCode"] == 4, r.text
    r = scim.patch(f"/Users/{uid}", patch({"op": "add", "path": f"{ACME}:costCode", "value": "x"}))
    assert_scim_error(r, 400, "invalidValue")
    r = scim.patch(f"/Users/{uid}", patch({"op": "add", "path": "shoeSize", "value": "x"}))
    assert_scim_error(r, 400, "invalidPath")

    # A PATCH that names only built-in attributes keeps the rest, reading no policy.
    calls.clear()
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200 and r.json["pantherRole"] == "Viewer", r.text
    assert r.json[ACME]["costCode"] == 4 and calls == []

    r = scim.patch(
        f"/Users/{uid}",
        patch({"op": "remove", "path": "pantherRole"}, {"op": "remove", "path": f"{ACME}:badges"}),
    )
    assert r.status_code == 200, r.text
    assert "pantherRole" not in r.json and "badges" not in r.json[ACME]
    assert USER_SCHEMA not in client.get_user(tenant.id, uid).extensions

    r = scim.put(f"/Users/{uid}", {"userName": "ada", "pantherRole": "Admin"})
    assert r.status_code == 200, r.text
    assert r.json["pantherRole"] == "Admin" and ACME not in r.json  # PUT replaces


def test_filters_on_declared_attributes(tenant_scim: ScimClient) -> None:
    scim = tenant_scim
    ada = scim.create_user("ada", pantherRole="Admin", **{ACME: {"costCode": 3}})["id"]
    scim.create_user("bob", pantherRole="Viewer")
    for text in (
        'pantherRole eq "Admin"',
        f'{USER_SCHEMA}:pantherRole eq "admin"',
        f"{ACME}:costCode eq 3",
        f"{ACME.upper()}:COSTCODE ge 3",
        'PANTHERROLE sw "Ad" and not (pantherRole eq "Viewer")',
    ):
        r = scim.get("/Users", params={"filter": text})
        assert r.status_code == 200, r.text
        assert [u["id"] for u in r.json["Resources"]] == [ada], text
    r = scim.get("/Users", params={"sortBy": "pantherRole", "sortOrder": "descending"})
    assert [u["userName"] for u in r.json["Resources"]] == ["bob", "ada"], r.text


def test_policy_changes_take_effect_on_the_next_request(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    assert_scim_error(
        scim.post("/Users", {"userName": "ada", "pantherRole": "x"}), 400, "invalidValue"
    )
    client.set_policy(tenant.id, policy())
    assert scim.post("/Users", {"userName": "ada", "pantherRole": "x"}).status_code == 201
    assert "pantherRole" in {
        a["name"] for a in scim.get(f"/Schemas/{USER_SCHEMA}").json["attributes"]
    }
    client.set_policy(tenant.id, TenantPolicy())
    assert_scim_error(
        scim.post("/Users", {"userName": "bob", "pantherRole": "x"}), 400, "invalidValue"
    )
    assert ACME not in {s["id"] for s in scim.get("/Schemas").json["Resources"]}


def test_bulk_reads_the_policy_once(tenant_scim: ScimClient, calls: list[str]) -> None:
    ops = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"u{i}",
            "data": {"userName": f"user{i}", "pantherRole": "Admin"},
        }
        for i in range(3)
    ]
    r = tenant_scim.post(
        "/Bulk",
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops},
    )
    assert r.status_code == 200, r.text
    assert [o["status"] for o in r.json["Operations"]] == ["201"] * 3
    assert len(calls) == 1
