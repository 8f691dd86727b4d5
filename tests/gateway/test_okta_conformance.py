"""What Okta sends, as Okta sends it: one test per behaviour (Okta SCIM 2.0
provisioning: user lookup, create, deactivate/reactivate, group push)."""

from __future__ import annotations

import uuid

from .conftest import GROUP_SCHEMA, PATCH_OP, USER_SCHEMA, ScimClient, assert_scim_error

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def okta_user(login: str, **over: object) -> dict[str, object]:
    """A user as Okta's provisioning agent posts it (including password and groups)."""
    body: dict[str, object] = {
        "schemas": [USER_SCHEMA],
        "userName": login,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": True, "value": login, "type": "work"}],
        "displayName": "Ada Lovelace",
        "locale": "en-US",
        "externalId": "00u" + uuid.uuid4().hex[:17],
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    body.update(over)
    return body


def test_okta_lookup_by_username_with_index_paging(scim: ScimClient) -> None:
    # Okta checks for an existing user before creating one.
    scim.create_user("ada@example.com")
    r = scim.get(
        "/Users",
        query_string="filter=userName%20eq%20%22ada%40example.com%22&startIndex=1&count=100",
    )
    assert r.status_code == 200
    assert r.json["schemas"] == [LIST]
    assert r.json["totalResults"] == 1
    assert r.json["startIndex"] == 1
    assert r.json["Resources"][0]["userName"] == "ada@example.com"
    r = scim.get(
        "/Users",
        query_string="filter=userName%20eq%20%22nobody%40example.com%22&startIndex=1&count=100",
    )
    assert r.status_code == 200
    assert r.json["totalResults"] == 0
    assert r.json["Resources"] == []


def test_okta_create_user_ignores_password_and_read_only_groups(scim: ScimClient) -> None:
    r = scim.post("/Users", okta_user("ada@example.com"))
    assert r.status_code == 201, r.text
    body = r.json
    assert body["userName"] == "ada@example.com"
    assert body["active"] is True
    assert "password" not in body
    assert r.headers["location"] == body["meta"]["location"]
    assert r.headers["etag"] == body["meta"]["version"]


def test_okta_deactivate_by_patch_replace_without_path(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    r = scim.patch(
        f"/Users/{user['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    assert r.status_code == 200, r.text
    assert r.json["active"] is False
    # Still there for GET and for filters, never 404.
    assert scim.get(f"/Users/{user['id']}").json["active"] is False
    found = scim.get("/Users", params={"filter": 'userName eq "ada@example.com"'}).json
    assert found["totalResults"] == 1 and found["Resources"][0]["active"] is False


def test_okta_reactivate_by_patch_replace_without_path(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com", active=False)
    r = scim.patch(
        f"/Users/{user['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": True}}]},
    )
    assert r.status_code == 200, r.text
    assert scim.get(f"/Users/{user['id']}").json["active"] is True


def test_okta_profile_update_and_deactivation_by_put(scim: ScimClient) -> None:
    created = scim.post("/Users", okta_user("ada@example.com")).json
    body = okta_user(
        "ada@example.com", active=False, name={"givenName": "Augusta", "familyName": "King"}
    )
    body["id"] = created["id"]
    body["meta"] = created["meta"]
    r = scim.put(f"/Users/{created['id']}", body)
    assert r.status_code == 200, r.text
    assert r.json["active"] is False
    assert r.json["name"] == {"givenName": "Augusta", "familyName": "King"}
    body["active"] = True
    assert scim.put(f"/Users/{created['id']}", body).json["active"] is True


def test_okta_group_push_create(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com")
    r = scim.post(
        "/Groups",
        {
            "schemas": [GROUP_SCHEMA],
            "displayName": "Engineering",
            "members": [{"value": user["id"], "display": "ada@example.com"}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json["displayName"] == "Engineering"
    assert [m["value"] for m in r.json["members"]] == [user["id"]]


def test_okta_group_push_add_members(scim: ScimClient) -> None:
    a, b = scim.create_user("a@example.com"), scim.create_user("b@example.com")
    group = scim.create_group("Engineering", [a["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": b["id"], "display": "b@example.com"}],
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    members = scim.get(f"/Groups/{group['id']}").json["members"]
    assert {m["value"] for m in members} == {a["id"], b["id"]}


def test_okta_group_push_remove_members(scim: ScimClient) -> None:
    a, b = scim.create_user("a@example.com"), scim.create_user("b@example.com")
    group = scim.create_group("Engineering", [a["id"], b["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "remove", "path": f'members[value eq "{a["id"]}"]'}],
        },
    )
    assert r.status_code == 200, r.text
    members = scim.get(f"/Groups/{group['id']}").json["members"]
    assert [m["value"] for m in members] == [b["id"]]


def test_okta_group_push_replace_members(scim: ScimClient) -> None:
    a, b, c = (scim.create_user(f"{n}@example.com") for n in "abc")
    group = scim.create_group("Engineering", [a["id"], b["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {
                    "op": "replace",
                    "path": "members",
                    "value": [{"value": b["id"]}, {"value": c["id"]}],
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    members = scim.get(f"/Groups/{group['id']}").json["members"]
    assert {m["value"] for m in members} == {b["id"], c["id"]}


def test_okta_group_push_replace_members_by_put(scim: ScimClient) -> None:
    a, b = scim.create_user("a@example.com"), scim.create_user("b@example.com")
    group = scim.create_group("Engineering", [a["id"]])
    r = scim.put(
        f"/Groups/{group['id']}",
        {
            "schemas": [GROUP_SCHEMA],
            "id": group["id"],
            "displayName": "Engineering",
            "members": [{"value": b["id"], "display": "b@example.com"}],
        },
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json["members"]] == [b["id"]]


def test_okta_group_rename_with_read_only_id_in_value(scim: ScimClient) -> None:
    group = scim.create_group("Engineering")
    r = scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "value": {"id": group["id"], "displayName": "R&D"}}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json["displayName"] == "R&D"
    assert scim.get(f"/Groups/{group['id']}").json["displayName"] == "R&D"


def test_okta_read_only_attributes_in_put_are_ignored(scim: ScimClient) -> None:
    created = scim.create_user("ada@example.com")
    body = okta_user("ada@example.com")
    body.update(
        id="something-else",
        meta={"resourceType": "User", "version": 'W/"99"'},
        groups=[{"value": "not-a-group", "display": "x"}],
    )
    r = scim.put(f"/Users/{created['id']}", body)
    assert r.status_code == 200, r.text
    assert r.json["id"] == created["id"]
    assert "groups" not in r.json


def test_okta_username_clash_is_case_insensitive_409(scim: ScimClient) -> None:
    scim.create_user("ada@example.com")
    r = scim.post("/Users", okta_user("ADA@Example.com"))
    assert_scim_error(r, 409, "uniqueness")
