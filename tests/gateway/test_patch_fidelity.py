"""PATCH returns what it stored (RFC 7644 §3.5.2), through the gateway over the real
core on both databases: every sub-attribute as the client set it, `schemas` inside
a whole-extension value, removal of singular attributes, the group answered whole,
and paths that name no endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from scim_identity_api.v1 import policy_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .conftest import ENTERPRISE, GROUP_SCHEMA, PATCH_OP, ScimClient, assert_scim_error

MULTI = ("emails", "phoneNumbers", "ims", "photos", "entitlements", "roles", "x509Certificates")


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


@pytest.mark.parametrize("attr", MULTI)
def test_primary_false_is_stored_and_returned_as_set(scim: ScimClient, attr: str) -> None:
    uid = scim.create_user("ada")["id"]
    values = [
        {"value": "v1", "type": "work", "primary": True},
        {"value": "v2", "type": "home", "primary": False},
    ]
    r = scim.patch(f"/Users/{uid}", patch({"op": "add", "path": attr, "value": values}))
    assert r.status_code == 200, r.text
    assert r.json[attr] == values
    assert scim.get(f"/Users/{uid}").json[attr] == values
    # Setting another value primary sets `primary` false on the one that had it.
    r = scim.patch(
        f"/Users/{uid}",
        patch({"op": "replace", "path": f'{attr}[value eq "v2"].primary', "value": True}),
    )
    assert r.status_code == 200, r.text
    assert [v.get("primary") for v in r.json[attr]] == [False, True]


def test_address_primary_false_is_kept(scim: ScimClient) -> None:
    uid = scim.create_user("ada")["id"]
    address = {"streetAddress": "1 Main St", "type": "work", "primary": False}
    r = scim.patch(f"/Users/{uid}", patch({"op": "add", "path": "addresses", "value": [address]}))
    assert r.status_code == 200, r.text
    assert r.json["addresses"] == [address]
    assert scim.get(f"/Users/{uid}").json["addresses"] == [address]


@pytest.mark.parametrize("op", ["add", "replace"])
def test_whole_extension_value_may_carry_its_schemas(scim: ScimClient, op: str) -> None:
    uid = scim.create_user("ada")["id"]
    value = {"schemas": [ENTERPRISE], "department": "R&D", "manager": {"value": uid}}
    r = scim.patch(f"/Users/{uid}", patch({"op": op, "path": ENTERPRISE, "value": value}))
    assert r.status_code == 200, r.text
    ent = scim.get(f"/Users/{uid}").json[ENTERPRISE]
    assert ent["department"] == "R&D" and ent["manager"]["value"] == uid
    assert "schemas" not in ent


@pytest.mark.parametrize(
    ("attr", "value"),
    [("active", False), ("title", "Boss"), ("nickName", "Babs"), ("displayName", "Ada L")],
)
def test_remove_of_a_singular_attribute_removes_it(scim: ScimClient, attr: str, value: Any) -> None:
    uid = scim.create_user("ada", **{attr: value})["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "remove", "path": attr}))
    assert r.status_code == 200, r.text
    assert attr not in r.json
    assert attr not in scim.get(f"/Users/{uid}").json


def test_removed_active_counts_as_active(scim: ScimClient) -> None:
    uid = scim.create_user("ada", active=False)["id"]
    scim.patch(f"/Users/{uid}", patch({"op": "remove", "path": "active"}))
    found = scim.get("/Users", params={"filter": "active eq true"}).json
    assert [u["id"] for u in found["Resources"]] == [uid]


def test_remove_of_required_username_is_refused(scim: ScimClient) -> None:
    uid = scim.create_user("ada")["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "remove", "path": "userName"}))
    assert_scim_error(r, 400, "invalidValue")
    assert scim.get(f"/Users/{uid}").json["userName"] == "ada"


def test_group_patch_answers_the_whole_group(scim: ScimClient) -> None:
    a, b = (scim.create_user(n)["id"] for n in ("a", "b"))
    gid = scim.create_group("devs", [a])["id"]
    # Okta's push of a membership change, and Entra ID's.
    r = scim.patch(
        f"/Groups/{gid}", patch({"op": "add", "path": "members", "value": [{"value": b}]})
    )
    assert r.status_code == 200, r.text
    assert r.json["schemas"] == [GROUP_SCHEMA] and r.json["displayName"] == "devs"
    assert [m["value"] for m in r.json["members"]] == [a, b]
    assert r.headers["etag"] == r.json["meta"]["version"]
    r = scim.patch(
        f"/Groups/{gid}",
        patch({"op": "Remove", "path": "members", "value": [{"value": a}]}),
    )
    assert r.status_code == 200 and [m["value"] for m in r.json["members"]] == [b], r.text
    # excludedAttributes=members (as Entra ID reads groups) leaves them out.
    r = scim.patch(
        f"/Groups/{gid}",
        patch({"op": "replace", "path": "displayName", "value": "ops"}),
        query_string="excludedAttributes=members",
    )
    assert r.status_code == 200 and "members" not in r.json and r.json["displayName"] == "ops"


@pytest.mark.parametrize("path", ["/scim/v2/nothing", "/scim/v2/Widgets", "/scim/v2"])
def test_a_path_naming_no_endpoint_is_404(scim: ScimClient, path: str) -> None:
    for token in (scim.token, "not-a-token", None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = scim.test.simulate_get(path, headers=headers)
        assert_scim_error(r, 404)
    r = scim.get("/Widgets", headers={"Authorization": "Bearer not-a-token"})
    assert_scim_error(r, 404)


# -- members that are gone (the IdP keeps a deleted user's id) ------------------------------


def _last_operation(client: IdentityClient, tenant: Tenant) -> Any:
    return client.list_operations(tenant.id).operations[0]


def test_gone_members_are_skipped_and_recorded(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    a, b, gone = (scim.create_user(n)["id"] for n in ("a", "b", "gone"))
    assert scim.delete(f"/Users/{gone}").status_code == 204
    gid = scim.create_group("devs")["id"]
    # Okta's group push: several members in one add; one of them was deleted.
    r = scim.patch(
        f"/Groups/{gid}",
        patch({"op": "add", "path": "members", "value": [{"value": a}, {"value": gone}]}),
    )
    assert r.status_code == 200, r.text
    assert [m["value"] for m in r.json["members"]] == [a]
    record = _last_operation(client, tenant)
    assert (record.method, record.status, record.resource_id) == ("PATCH", 200, gid)
    assert gone in record.detail and "skipped 1 member" in record.detail
    # A PUT naming it too.
    body = {
        "schemas": [GROUP_SCHEMA],
        "displayName": "devs",
        "members": [{"value": gone}, {"value": b}],
    }
    r = scim.put(f"/Groups/{gid}", body, query_string="attributes=members")
    assert r.status_code == 200 and [m["value"] for m in r.json["members"]] == [b], r.text
    assert gone in _last_operation(client, tenant).detail


def test_gone_members_under_the_reject_policy_refuse_the_whole_patch(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    client.set_policy(
        tenant.id, policy_pb2.TenantPolicy(unknown_members=policy_pb2.UNKNOWN_MEMBERS_REJECT)
    )
    a, gone = (scim.create_user(n)["id"] for n in ("a", "gone"))
    assert scim.delete(f"/Users/{gone}").status_code == 204
    gid = scim.create_group("devs")["id"]
    r = scim.patch(
        f"/Groups/{gid}",
        patch(
            {"op": "replace", "path": "displayName", "value": "ops"},
            {"op": "add", "path": "members", "value": [{"value": a}, {"value": gone}]},
        ),
    )
    assert_scim_error(r, 400, "invalidValue")
    assert gone in r.json["detail"]
    after = scim.get(f"/Groups/{gid}").json
    assert after["displayName"] == "devs" and not after.get("members")
