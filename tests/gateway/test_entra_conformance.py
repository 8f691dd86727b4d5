"""What Microsoft Entra ID sends, as it sends it: one test per behaviour
(Entra provisioning: capitalised ops, booleans as strings, lookups by
externalId/userName, value-path PATCHes, member removal forms)."""

from __future__ import annotations

import uuid
from urllib.parse import quote_plus

from .conftest import ENTERPRISE, GROUP_SCHEMA, PATCH_OP, USER_SCHEMA, ScimClient


def entra_user(user_name: str, external_id: str, **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "schemas": [
            USER_SCHEMA,
            ENTERPRISE,
            "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User",
        ],
        "externalId": external_id,
        "userName": user_name,
        "active": "True",
        "emails": [{"primary": "True", "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
        ENTERPRISE: {"department": "Engineering"},
    }
    body.update(over)
    return body


def patch(*ops: dict[str, object]) -> dict[str, object]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def test_entra_create_user_with_string_booleans_and_extra_schema_urns(scim: ScimClient) -> None:
    r = scim.post("/Users", entra_user("Test_User@testuser.com", str(uuid.uuid4())))
    assert r.status_code == 201, r.text
    assert r.json["active"] is True
    assert r.json["emails"] == [
        {"value": "Test_User@testuser.com", "type": "work", "primary": True}
    ]
    assert r.json[ENTERPRISE]["department"] == "Engineering"


def test_entra_test_connection_lookup_of_unknown_user(scim: ScimClient) -> None:
    r = scim.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
    assert r.status_code == 200
    assert r.json["totalResults"] == 0


def test_entra_lookup_by_external_id(scim: ScimClient) -> None:
    ext = str(uuid.uuid4())
    scim.post("/Users", entra_user("ada@testuser.com", ext))
    r = scim.get("/Users", params={"filter": f'externalId eq "{ext}"'})
    assert r.status_code == 200
    assert [u["externalId"] for u in r.json["Resources"]] == [ext]


def test_entra_lookup_by_username_with_plus_encoded_spaces(scim: ScimClient) -> None:
    scim.post("/Users", entra_user("Ada Lovelace", str(uuid.uuid4())))
    qs = "filter=" + quote_plus('userName eq "Ada Lovelace"')
    assert "+" in qs
    r = scim.get("/Users", query_string=qs)
    assert r.status_code == 200, r.text
    assert r.json["totalResults"] == 1


def test_entra_group_lookup_by_display_name_excluding_members(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com")
    scim.create_group("Group1", [user["id"]])
    r = scim.get(
        "/Groups",
        query_string="excludedAttributes=members&filter=" + quote_plus('displayName eq "Group1"'),
    )
    assert r.status_code == 200, r.text
    (group,) = r.json["Resources"]
    assert group["displayName"] == "Group1"
    assert "members" not in group


def test_entra_replace_active_with_string_boolean(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com")
    r = scim.patch(
        f"/Users/{user['id']}", patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert r.status_code == 200, r.text
    assert r.json["active"] is False
    # A disabled user stays visible to GET and to filters.
    assert scim.get(f"/Users/{user['id']}").status_code == 200
    found = scim.get("/Users", params={"filter": 'userName eq "ada@testuser.com"'}).json
    assert found["totalResults"] == 1


def test_entra_replace_work_email_value_creates_missing_entry(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com")
    r = scim.patch(
        f"/Users/{user['id']}",
        patch({"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ada@work.com"}),
    )
    assert r.status_code == 200, r.text
    assert r.json["emails"] == [{"value": "ada@work.com", "type": "work"}]
    r = scim.patch(
        f"/Users/{user['id']}",
        patch({"op": "Add", "path": 'emails[type eq "work"].value', "value": "ada@new.com"}),
    )
    assert r.json["emails"] == [{"value": "ada@new.com", "type": "work"}]


def test_entra_replace_name_given_name(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com", name={"givenName": "A", "familyName": "L"})
    r = scim.patch(
        f"/Users/{user['id']}",
        patch({"op": "Replace", "path": "name.givenName", "value": "Ada"}),
    )
    assert r.status_code == 200, r.text
    assert r.json["name"] == {"givenName": "Ada", "familyName": "L"}


def test_entra_add_manager_as_bare_id(scim: ScimClient) -> None:
    boss = scim.create_user("boss@testuser.com")
    user = scim.create_user("ada@testuser.com")
    r = scim.patch(
        f"/Users/{user['id']}",
        patch({"op": "Add", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}),
    )
    assert r.status_code == 200, r.text
    assert r.json[ENTERPRISE]["manager"]["value"] == boss["id"]
    r = scim.patch(f"/Users/{user['id']}", patch({"op": "Remove", "path": f"{ENTERPRISE}:manager"}))
    assert r.status_code == 200, r.text
    assert "manager" not in r.json.get(ENTERPRISE, {})


def test_entra_pathless_replace_with_path_keys(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com")
    r = scim.patch(
        f"/Users/{user['id']}",
        patch(
            {
                "op": "Replace",
                "value": {
                    "displayName": "Ada L.",
                    "name.givenName": "Ada",
                    "name.familyName": "Lovelace",
                    'emails[type eq "work"].value': "ada@work.com",
                    f"{ENTERPRISE}:department": "Math",
                    "active": "True",
                },
            }
        ),
    )
    assert r.status_code == 200, r.text
    body = r.json
    assert body["displayName"] == "Ada L."
    assert body["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert body["emails"] == [{"value": "ada@work.com", "type": "work"}]
    assert body[ENTERPRISE]["department"] == "Math"


def test_entra_add_members_with_null_ref(scim: ScimClient) -> None:
    user = scim.create_user("ada@testuser.com")
    group = scim.create_group("Group1")
    r = scim.patch(
        f"/Groups/{group['id']}",
        patch({"op": "Add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}),
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json["members"]] == [user["id"]]


def test_entra_remove_member_by_value_filter(scim: ScimClient) -> None:
    a, b = scim.create_user("a@testuser.com"), scim.create_user("b@testuser.com")
    group = scim.create_group("Group1", [a["id"], b["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        patch({"op": "Remove", "path": f'members[value eq "{a["id"]}"]'}),
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json["members"]] == [b["id"]]


def test_entra_remove_members_by_value_list(scim: ScimClient) -> None:
    a, b = scim.create_user("a@testuser.com"), scim.create_user("b@testuser.com")
    group = scim.create_group("Group1", [a["id"], b["id"]])
    r = scim.patch(
        f"/Groups/{group['id']}",
        patch({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": b["id"]}]}),
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json["members"]] == [a["id"]]


def test_entra_create_group_with_extra_schema(scim: ScimClient) -> None:
    r = scim.post(
        "/Groups",
        {
            "schemas": [
                GROUP_SCHEMA,
                "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:Group",
            ],
            "externalId": str(uuid.uuid4()),
            "displayName": "Group1",
            "meta": {"resourceType": "Group"},
        },
    )
    assert r.status_code == 201, r.text
    assert r.json["displayName"] == "Group1"
