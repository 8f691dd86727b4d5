"""RFC 7644 protocol behaviour over falcon.testing against a real identity core."""

from __future__ import annotations

from typing import Any

import pytest

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_api.v1 import policy_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .conftest import (
    ENTERPRISE,
    GROUP_SCHEMA,
    PATCH_OP,
    USER_SCHEMA,
    ScimClient,
    assert_scim_error,
    core_client,
)

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


# -- authentication and base URLs (RFC 7644 §2, §3.2) ------------------------------------------


def test_missing_token_is_401_with_www_authenticate(app: Any, tenant: Tenant) -> None:
    r = ScimClient(app, f"/scim/v2/{tenant.name}", None).get("/Users")
    assert_scim_error(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_token_is_401(app: Any, tenant: Tenant) -> None:
    assert_scim_error(ScimClient(app, f"/scim/v2/{tenant.name}", "nope").get("/Users"), 401)


def test_token_of_another_tenant_is_401_never_data(
    app: Any, client: IdentityClient, scim: ScimClient, token: str
) -> None:
    scim.create_user("ada@example.com")
    other = client.create_tenant(f"other-{scim.base[-8:]}")
    r = ScimClient(app, f"/scim/v2/{other.name}", token).get("/Users")
    assert_scim_error(r, 401)
    r = ScimClient(app, f"/scim/v2/{other.id}", token).get("/Users")
    assert_scim_error(r, 401)
    assert_scim_error(ScimClient(app, "/scim/v2/no-such-tenant", token).get("/Users"), 401)


def test_tenant_by_id_and_from_token(app: Any, tenant: Tenant, token: str) -> None:
    by_id = ScimClient(app, f"/scim/v2/{tenant.id}", token)
    user = by_id.create_user("ada@example.com")
    assert f"/scim/v2/{tenant.id}/Users/" in user["meta"]["location"]
    root = ScimClient(app, "/scim/v2", token)
    got = root.get(f"/Users/{user['id']}")
    assert got.status_code == 200
    assert got.json["meta"]["location"].endswith(f"/scim/v2/Users/{user['id']}")


def test_revoked_token_fails_on_the_next_request(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    assert scim.get("/Users").status_code == 200
    (tok,) = client.list_tokens(tenant.id)
    client.revoke_token(tenant.id, tok.id)
    assert_scim_error(scim.get("/Users"), 401)


def test_inactive_tenant_is_403(scim: ScimClient, client: IdentityClient, tenant: Tenant) -> None:
    client.update_tenant(tenant.id, active=False)
    r = scim.get("/Users")
    assert_scim_error(r, 403)
    assert "inactive" in r.json["detail"]


def test_core_unavailable_is_503_with_retry_after(settings: Settings, tenant: Tenant) -> None:
    dead = core_client("127.0.0.1:9", timeout=1.0)
    r = ScimClient(create_app(settings, dead), f"/scim/v2/{tenant.name}", "x").get("/Users")
    assert_scim_error(r, 503)
    assert r.headers["retry-after"]


def test_request_id_is_echoed_or_generated(scim: ScimClient) -> None:
    r = scim.get("/Users", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(scim.get("/Users").headers["x-request-id"]) == 32


# -- discovery (RFC 7644 §4) --------------------------------------------------------------


def test_service_provider_config_advertises_limits(scim: ScimClient, settings: Settings) -> None:
    r = scim.get("/ServiceProviderConfig")
    assert r.status_code == 200
    doc = r.json
    assert doc["patch"]["supported"] and doc["sort"]["supported"] and doc["etag"]["supported"]
    assert doc["bulk"] == {
        "supported": True,
        "maxOperations": settings.max_bulk_operations,
        "maxPayloadSize": settings.max_payload_bytes,
    }
    assert doc["filter"] == {"supported": True, "maxResults": settings.max_page_size}
    assert doc["changePassword"]["supported"] is False
    assert doc["pagination"]["cursor"] and doc["pagination"]["index"]
    assert doc["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(scim: ScimClient) -> None:
    types = scim.get("/ResourceTypes").json
    assert types["schemas"] == [LIST]
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    user_type = scim.get("/ResourceTypes/User").json
    assert user_type["schemaExtensions"] == [{"schema": ENTERPRISE, "required": False}]
    schemas = scim.get("/Schemas").json
    assert {s["id"] for s in schemas["Resources"]} == {USER_SCHEMA, ENTERPRISE, GROUP_SCHEMA}
    user = scim.get(f"/Schemas/{USER_SCHEMA}").json
    names = {a["name"] for a in user["attributes"]}
    assert {"userName", "name", "emails", "active", "groups"} <= names
    assert "password" not in names  # not stored, so not advertised
    assert_scim_error(scim.get("/Schemas/urn:nope"), 404)
    assert_scim_error(scim.get("/Schemas", params={"filter": "id pr"}), 403)


def test_me_is_501(scim: ScimClient) -> None:
    assert_scim_error(scim.get("/Me"), 501)
    assert_scim_error(scim.post("/Me", {}), 501)


def test_unknown_route_is_scim_404_and_wrong_method_405(scim: ScimClient) -> None:
    assert_scim_error(scim.get("/Widgets"), 404)
    r = scim.delete("/Users")
    assert_scim_error(r, 405)
    assert "GET" in r.headers["allow"]


# -- bad input: a precise 4xx and nothing changed ---------------------------------------------


def users(scim: ScimClient) -> int:
    return int(scim.get("/Users").json["totalResults"])


def test_malformed_json_is_invalid_syntax(scim: ScimClient) -> None:
    assert_scim_error(scim.post("/Users", raw=b'{"userName": '), 400, "invalidSyntax")
    assert_scim_error(scim.post("/Users", raw=b"[1, 2]"), 400, "invalidSyntax")
    assert_scim_error(scim.post("/Users", raw=b""), 400, "invalidSyntax")
    assert users(scim) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"userName": 42},
        {"userName": "a@x", "active": "maybe"},
        {"userName": "a@x", "emails": "a@x"},
        {"userName": "a@x", "emails": [{"value": "a@x", "kind": "work"}]},
        {"userName": "a@x", "name": "Ada"},
        {"userName": "a@x", "shoeSize": 42},
        {"userName": "a@x", "schemas": "urn:ietf:params:scim:schemas:core:2.0:User"},
        {"userName": "a@x", ENTERPRISE: {"favouriteColour": "blue"}},
        {"userName": ""},
        {},
    ],
)
def test_wrong_types_and_unknown_attributes_are_400(scim: ScimClient, body: dict[str, Any]) -> None:
    r = scim.post("/Users", {"schemas": [USER_SCHEMA], **body})
    assert r.status_code == 400, r.text
    assert r.json["scimType"] == "invalidValue"
    assert users(scim) == 0


def test_application_json_is_accepted_other_types_415(scim: ScimClient) -> None:
    r = scim.post("/Users", {"userName": "a@x"}, content_type="application/json")
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/scim+json"
    assert_scim_error(scim.post("/Users", {"userName": "b@x"}, content_type="text/plain"), 415)


def test_body_over_max_payload_is_413(scim: ScimClient, settings: Settings) -> None:
    big = {"userName": "a@x", "displayName": "x" * settings.max_payload_bytes}
    assert_scim_error(scim.post("/Users", big), 413)
    assert users(scim) == 0


def test_unknown_filter_attribute_is_invalid_filter_not_empty(scim: ScimClient) -> None:
    r = scim.get("/Users", params={"filter": 'shoeSize eq "42"'})
    assert_scim_error(r, 400, "invalidFilter")
    assert_scim_error(scim.get("/Users", params={"filter": "userName eq"}), 400, "invalidFilter")
    assert_scim_error(
        scim.get("/Groups", params={"filter": 'userName eq "x"'}), 400, "invalidFilter"
    )


def test_bad_paging_parameters(scim: ScimClient) -> None:
    assert_scim_error(scim.get("/Users", params={"count": "ten"}), 400, "invalidValue")
    assert_scim_error(scim.get("/Users", params={"sortOrder": "up"}), 400, "invalidValue")


def test_patch_is_atomic(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com", title="Countess")
    r = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "path": "title", "value": "Engineer"},
                {"op": "replace", "path": "nosuch", "value": "x"},
            ],
        },
    )
    assert_scim_error(r, 400, "invalidPath")
    after = scim.get(f"/Users/{user['id']}").json
    assert after["title"] == "Countess"
    assert after["meta"]["version"] == user["meta"]["version"]


@pytest.mark.parametrize(
    ("op", "scim_type"),
    [
        ({"op": "replace", "path": "id", "value": "x"}, "mutability"),
        ({"op": "replace", "path": "emails[type eq", "value": "x"}, "invalidPath"),
        ({"op": "remove"}, "noTarget"),
        ({"op": "jump", "path": "title"}, "invalidSyntax"),
        ({"op": "replace", "path": "active", "value": 3}, "invalidValue"),
    ],
)
def test_bad_patch_operations(scim: ScimClient, op: dict[str, Any], scim_type: str) -> None:
    user = scim.create_user("ada@example.com")
    r = scim.patch(f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": [op]})
    assert_scim_error(r, 400, scim_type)
    assert scim.get(f"/Users/{user['id']}").json["meta"]["version"] == user["meta"]["version"]


def test_not_found_is_404(scim: ScimClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert_scim_error(scim.get(f"/Users/{missing}"), 404)
    assert_scim_error(scim.delete(f"/Groups/{missing}"), 404)
    assert_scim_error(
        scim.patch(f"/Users/{missing}", {"Operations": [{"op": "remove", "path": "title"}]}), 404
    )


# -- resources: PUT, DELETE, projections, sorting, paging --------------------------------------


def test_put_replaces_rather_than_merges(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com", title="Countess", nickName="Ada")
    r = scim.put(f"/Users/{user['id']}", {"schemas": [USER_SCHEMA], "userName": "ada@example.com"})
    assert r.status_code == 200, r.text
    assert "title" not in r.json and "nickName" not in r.json


def test_delete_then_404(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    r = scim.delete(f"/Users/{user['id']}")
    assert r.status_code == 204 and not r.content
    assert_scim_error(scim.get(f"/Users/{user['id']}"), 404)


def test_attributes_and_excluded_attributes(scim: ScimClient) -> None:
    user = scim.create_user(
        "ada@example.com",
        name={"givenName": "Ada", "familyName": "Lovelace"},
        emails=[{"value": "ada@x", "type": "work"}],
        **{ENTERPRISE: {"department": "Math"}},
    )
    r = scim.get(f"/Users/{user['id']}", params={"attributes": "name.givenName,emails.value"})
    assert r.json == {
        "schemas": [USER_SCHEMA],
        "id": user["id"],
        "name": {"givenName": "Ada"},
        "emails": [{"value": "ada@x"}],
    }
    r = scim.get(
        f"/Users/{user['id']}", params={"excludedAttributes": f"emails,{ENTERPRISE}:department,id"}
    )
    assert "emails" not in r.json and ENTERPRISE not in r.json and r.json["id"] == user["id"]
    # Also on writes (RFC 7644 §3.9).
    r = scim.post("/Users", {"userName": "b@x"}, params={"attributes": "userName"})
    assert set(r.json) == {"schemas", "id", "userName"}
    r = scim.patch(
        f"/Users/{user['id']}",
        {"Operations": [{"op": "replace", "path": "title", "value": "Dr"}]},
        params={"attributes": "title"},
    )
    assert set(r.json) == {"schemas", "id", "title"}


def test_sort_and_index_paging(scim: ScimClient) -> None:
    for n in ["c", "a", "d", "b"]:
        scim.create_user(f"{n}@example.com")
    r = scim.get("/Users", params={"sortBy": "userName", "startIndex": "2", "count": "2"})
    assert r.json["totalResults"] == 4 and r.json["startIndex"] == 2 and r.json["itemsPerPage"] == 2
    assert [u["userName"] for u in r.json["Resources"]] == ["b@example.com", "c@example.com"]
    r = scim.get("/Users", params={"sortBy": "userName", "sortOrder": "descending", "count": "1"})
    assert [u["userName"] for u in r.json["Resources"]] == ["d@example.com"]
    r = scim.get("/Users", params={"count": "0"})
    assert r.json["totalResults"] == 4 and r.json["Resources"] == []


def test_cursor_paging(scim: ScimClient) -> None:
    for n in range(5):
        scim.create_user(f"u{n}@example.com")
    seen: list[str] = []
    r = scim.get("/Users", params={"cursor": "", "count": "2"})
    while True:
        assert r.status_code == 200, r.text
        assert "startIndex" not in r.json
        seen += [u["userName"] for u in r.json["Resources"]]
        if "nextCursor" not in r.json:
            break
        r = scim.get("/Users", params={"cursor": r.json["nextCursor"], "count": "2"})
    assert sorted(seen) == [f"u{n}@example.com" for n in range(5)]
    assert_scim_error(scim.get("/Users", params={"cursor": "garbage"}), 400, "invalidCursor")


def test_post_search_per_type_and_at_root(scim: ScimClient) -> None:
    scim.create_user("ada@example.com")
    scim.create_group("Engineering")
    body = {"schemas": [SEARCH], "filter": 'userName sw "ada"', "attributes": ["userName"]}
    r = scim.post("/Users/.search", body)
    assert r.status_code == 200, r.text
    assert [u["userName"] for u in r.json["Resources"]] == ["ada@example.com"]
    r = scim.post("/.search", {"schemas": [SEARCH], "startIndex": 1, "count": 10})
    assert r.json["totalResults"] == 2
    kinds = {tuple(x["schemas"]) for x in r.json["Resources"]}
    assert kinds == {(USER_SCHEMA,), (GROUP_SCHEMA,)}
    r = scim.post("/.search", {"schemas": [SEARCH], "filter": 'displayName eq "Engineering"'})
    assert r.json["totalResults"] == 1


# -- ETags (RFC 7644 §3.14) ------------------------------------------------------------------


def test_etag_header_matches_meta_version(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    r = scim.get(f"/Users/{user['id']}")
    assert r.headers["etag"] == r.json["meta"]["version"] == 'W/"1"'
    assert scim.get(f"/Users/{user['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert scim.get(f"/Users/{user['id']}", headers={"If-None-Match": 'W/"7"'}).status_code == 200


def test_if_match_mismatch_is_412_and_nothing_changes(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    group = scim.create_group("Eng")
    stale = {"If-Match": 'W/"5"'}
    body = {"schemas": [USER_SCHEMA], "userName": "ada@example.com", "title": "x"}
    assert_scim_error(scim.put(f"/Users/{user['id']}", body, headers=stale), 412)
    ops = {"Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    assert_scim_error(scim.patch(f"/Users/{user['id']}", ops, headers=stale), 412)
    assert_scim_error(scim.delete(f"/Users/{user['id']}", headers=stale), 412)
    gops = {"Operations": [{"op": "replace", "path": "displayName", "value": "x"}]}
    assert_scim_error(scim.patch(f"/Groups/{group['id']}", gops, headers=stale), 412)
    assert "title" not in scim.get(f"/Users/{user['id']}").json
    r = scim.patch(f"/Users/{user['id']}", ops, headers={"If-Match": user["meta"]["version"]})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'


# -- groups ------------------------------------------------------------------------------------


def test_group_get_members_only_when_requested(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    group = scim.create_group("Eng", [user["id"]])
    assert "members" in scim.get(f"/Groups/{group['id']}").json
    r = scim.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"})
    assert "members" not in r.json
    r = scim.get(f"/Groups/{group['id']}", params={"attributes": "displayName"})
    assert set(r.json) == {"schemas", "id", "displayName"}
    r = scim.patch(
        f"/Groups/{group['id']}",
        {"Operations": [{"op": "remove", "path": "members"}]},
        params={"attributes": "members"},
    )
    assert r.status_code == 200 and r.json.get("members", []) == []


def test_group_patch_attributes_and_members_in_one_request(scim: ScimClient) -> None:
    a, b = scim.create_user("a@x"), scim.create_user("b@x")
    group = scim.create_group("Eng", [a["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "R&D"},
                {"op": "add", "path": "externalId", "value": "ext-1"},
                {"op": "add", "path": "members", "value": [{"value": b["id"]}]},
                {"op": "remove", "path": f'members[value eq "{a["id"]}"]'},
            ],
        },
    )
    assert r.status_code == 200, r.text
    got = scim.get(f"/Groups/{group['id']}").json
    assert (got["displayName"], got["externalId"]) == ("R&D", "ext-1")
    assert [m["value"] for m in got["members"]] == [b["id"]]
    assert got["meta"]["version"] == 'W/"2"'  # one write


def test_group_patch_with_unknown_member_changes_nothing_under_reject(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    # By default unknown members are skipped (test_patch_fidelity.py); the tenant's
    # policy may refuse the whole PATCH instead.
    client.set_policy(
        tenant.id, policy_pb2.TenantPolicy(unknown_members=policy_pb2.UNKNOWN_MEMBERS_REJECT)
    )
    group = scim.create_group("Eng")
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "R&D"},
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ]
        },
    )
    assert r.status_code == 400, r.text
    assert "no-such-user" in r.json["detail"]
    assert scim.get(f"/Groups/{group['id']}").json["displayName"] == "Eng"


def test_user_groups_attribute_is_read_only_view(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    group = scim.create_group("Eng", [user["id"]])
    got = scim.get(f"/Users/{user['id']}").json
    assert got["groups"][0]["value"] == group["id"]
    assert got["groups"][0]["display"] == "Eng"


# -- bulk (RFC 7644 §3.7) ------------------------------------------------------------------------


def test_bulk_with_bulk_id_references(scim: ScimClient) -> None:
    r = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {"displayName": "Eng", "members": [{"value": "bulkId:u1"}]},
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "u1",
                    "data": {"schemas": [USER_SCHEMA], "userName": "ada@example.com"},
                },
                {
                    "method": "PATCH",
                    "path": "/Users/bulkId:u1",
                    "data": {"Operations": [{"op": "add", "path": "title", "value": "Dr"}]},
                },
            ],
        },
    )
    assert r.status_code == 200, r.text
    ops = r.json["Operations"]
    assert [o["status"] for o in ops] == ["201", "201", "200"]
    assert ops[0]["location"].split("/")[-2] == "Groups"
    user_id = ops[1]["location"].rsplit("/", 1)[1]
    group = scim.get(ops[0]["location"].split(scim.base)[1]).json
    assert [m["value"] for m in group["members"]] == [user_id]
    assert scim.get(f"/Users/{user_id}").json["title"] == "Dr"


def test_bulk_fail_on_errors_stops_processing(scim: ScimClient) -> None:
    bad = {"method": "POST", "path": "/Users", "bulkId": "x1", "data": {"userName": 5}}
    ok = {"method": "POST", "path": "/Users", "bulkId": "x2", "data": {"userName": "a@x"}}
    r = scim.post("/Bulk", {"schemas": [BULK], "failOnErrors": 1, "Operations": [bad, ok]})
    assert r.status_code == 200
    (only,) = r.json["Operations"]
    assert only["status"] == "400" and only["response"]["scimType"] == "invalidValue"
    assert users(scim) == 0


def test_bulk_over_max_operations_is_413(scim: ScimClient, settings: Settings) -> None:
    op = {"method": "DELETE", "path": "/Users/x"}
    r = scim.post(
        "/Bulk", {"schemas": [BULK], "Operations": [op] * (settings.max_bulk_operations + 1)}
    )
    assert_scim_error(r, 413)


# -- history -----------------------------------------------------------------------------------


def test_operations_are_recorded(scim: ScimClient, client: IdentityClient, tenant: Tenant) -> None:
    user = scim.create_user("ada@example.com")
    scim.get(f"/Users/{user['id']}", headers={"X-Request-Id": "req-1"})
    assert_scim_error(scim.post("/Users", {"userName": "ADA@example.com"}), 409, "uniqueness")
    ops = client.list_operations(tenant.id).operations
    by_request = {o.request_id: o for o in ops}
    read = by_request["req-1"]
    assert (read.method, read.resource_type, read.resource_id, read.status) == (
        "GET",
        "User",
        user["id"],
        200,
    )
    failed = [o for o in ops if o.status == 409]
    assert failed and failed[0].scim_type == "uniqueness" and failed[0].token_id


def test_filters_find_multi_valued_values_as_the_last_write_left_them(scim: ScimClient) -> None:
    # Multi-valued attributes are also indexed rows (user_values): a write that
    # changes them must rewrite those rows, one that does not must keep them.
    user = scim.create_user(
        "ada@example.com",
        emails=[{"value": "ada@old.example", "type": "work", "primary": True}],
        addresses=[{"formatted": "1 Old Road", "type": "work"}],
    )
    path = f"/Users/{user['id']}"

    def found(f: str) -> list[str]:
        r = scim.get("/Users", params={"filter": f})
        assert r.status_code == 200, r.text
        return [u["id"] for u in r.json["Resources"]]

    def patch(*operations: dict[str, Any]) -> None:
        r = scim.patch(path, {"schemas": [PATCH_OP], "Operations": list(operations)})
        assert r.status_code == 200, r.text

    patch({"op": "replace", "path": "title", "value": "Countess"})
    assert found('emails.value eq "ada@old.example"') == [user["id"]]
    assert found('addresses.formatted eq "1 Old Road"') == [user["id"]]
    patch({"op": "replace", "path": "emails", "value": [{"value": "ada@new.example"}]})
    assert found('emails.value eq "ada@new.example"') == [user["id"]]
    assert found('emails.value eq "ada@old.example"') == []
    assert found('addresses.formatted eq "1 Old Road"') == [user["id"]]
    patch({"op": "replace", "path": 'addresses[type eq "work"].formatted', "value": "2 New Rd"})
    assert found('addresses.formatted eq "2 New Rd"') == [user["id"]]
    assert found('addresses.formatted eq "1 Old Road"') == []
    body = {
        "schemas": [USER_SCHEMA],
        "userName": "ada@example.com",
        "emails": [{"value": "a@put.io"}],
    }
    assert scim.put(path, body).status_code == 200
    assert found('emails.value eq "a@put.io"') == [user["id"]]
    assert found('emails.value eq "ada@new.example"') == []
    assert found('addresses.formatted eq "2 New Rd"') == []
