"""The vendor walk-throughs of docs/provisioning-policy.md, end to end.

Each test configures a fresh tenant with the vendor's policy file
(docs/policies/<vendor>.json), defines the roles the guide uses, and sends
through the gateway the requests the IdP (Okta or Entra ID) sends for that
guide (/work/shared/reference/*.txt), then checks the roles, states, mapped
fields, events and history the guide promises. Both databases (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from scim_identity_client import FailedPrecondition, IdentityClient, event_name
from scim_identity_client.types import (
    ChangeEvent,
    OperationKind,
    OutcomeFilter,
    RoleSource,
    Tenant,
    TenantPolicy,
)

from ..gateway.conftest import (
    ENTERPRISE,
    GROUP_SCHEMA,
    PATCH_OP,
    USER_SCHEMA,
    ScimClient,
    assert_scim_error,
)

POLICIES = Path(__file__).resolve().parents[2] / "docs" / "policies"
SCIM_ROLE = RoleSource.ROLE_SOURCE_SCIM
LOCAL_ROLE = RoleSource.ROLE_SOURCE_LOCAL


# -- arranging -------------------------------------------------------------------------------


def configure(
    client: IdentityClient, tenant: Tenant, vendor: str, roles: tuple[str, ...] = ()
) -> TenantPolicy:
    """The tenant set up as the walk-through says: roles first, then the policy file."""
    for role in roles:
        client.create_role(tenant.id, role)
    doc = json.loads((POLICIES / f"{vendor}.json").read_text())
    return client.set_policy(tenant.id, json_format.ParseDict(doc, TenantPolicy()))


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def roles(client: IdentityClient, tenant: Tenant, user_id: str) -> set[tuple[str, int]]:
    return {(r.role, r.source) for r in client.get_user(tenant.id, user_id).role_assignments}


def events(client: IdentityClient, tenant: Tenant) -> list[ChangeEvent]:
    """Every event of the tenant so far (watched from 0 up to the current revision)."""
    until = client.get_revision(tenant.id).revision
    out: list[ChangeEvent] = []
    if until == 0:
        return out
    with client.watch(tenant.id, since=0, heartbeat_seconds=1, give_up_after=10) as stream:
        for event in stream:
            out.append(event)
            if event.revision >= until:
                break
    return out


def about(event: ChangeEvent, user_id: str) -> bool:
    if event.HasField("assignment"):
        return event.assignment.user_id == user_id
    return event.resource_type == "User" and event.resource_id == user_id


def entra_user(user_name: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    """A user as Entra ID's provisioning service POSTs it (booleans as strings)."""
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": f"{given.lower()}-oid",
        "userName": user_name,
        "active": "True",
        "displayName": f"{given} {family}",
        "name": {"givenName": given, "familyName": family, "formatted": f"{given} {family}"},
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        **extra,
    }


# -- BigPanda (Entra ID): roles from group names ------------------------------------------------


def test_bigpanda_entra_roles_from_group_names(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "bigpanda", ("Admin", "Read Only", "Billing"))
    # Entra ID looks the user up, then creates it.
    r = scim.get("/Users", params={"filter": 'userName eq "ada@acme.com"'})
    assert r.status_code == 200 and r.json["totalResults"] == 0
    ada = scim.post("/Users", entra_user("ada@acme.com", "Ada", "Lovelace"))
    bob = scim.post("/Users", entra_user("bob@acme.com", "Bob", "Babbage"))
    assert ada.status_code == bob.status_code == 201, (ada.text, bob.text)
    ada_id, bob_id = ada.json["id"], bob.json["id"]
    assert roles(client, tenant, ada_id) == set()

    # Groups named BigPanda_<org>_BPRole_<role>, spaces as underscores.
    r = scim.get(
        "/Groups",
        params={
            "filter": 'displayName eq "BigPanda_Acme_Corp_BPRole_Admin"',
            "excludedAttributes": "members",
        },
    )
    assert r.status_code == 200 and r.json["totalResults"] == 0
    admins = scim.create_group("BigPanda_Acme_Corp_BPRole_Admin", [ada_id])
    read_only = scim.create_group("BigPanda_Acme_Corp_BPRole_Read_Only")
    other_org = scim.create_group("BigPanda_Other_Org_BPRole_Admin", [bob_id])
    assert roles(client, tenant, ada_id) == {("Admin", SCIM_ROLE)}
    assert roles(client, tenant, bob_id) == set()  # another org's group grants nothing
    assert other_org["displayName"] == "BigPanda_Other_Org_BPRole_Admin"

    # A role granted locally is never touched by SCIM.
    client.assign_role(tenant.id, ada_id, "Billing")

    # Entra ID adds members one PATCH at a time ("Add", capitalised).
    for uid in (ada_id, bob_id):
        r = scim.patch(
            f"/Groups/{read_only['id']}",
            patch({"op": "Add", "path": "members", "value": [{"value": uid}]}),
        )
        # A small group answers 200 with the whole group, its members included.
        assert r.status_code == 200, r.text
        assert uid in {m["value"] for m in r.json["members"]}
    assert roles(client, tenant, ada_id) == {
        ("Admin", SCIM_ROLE),
        ("Read Only", SCIM_ROLE),
        ("Billing", LOCAL_ROLE),
    }
    assert roles(client, tenant, bob_id) == {("Read Only", SCIM_ROLE)}

    # Removal from one BPRole group: that role goes, the local one stays.
    r = scim.patch(
        f"/Groups/{admins['id']}",
        patch({"op": "Remove", "path": f'members[value eq "{ada_id}"]'}),
    )
    assert r.status_code == 200, r.text
    assert ada_id not in {m["value"] for m in r.json.get("members", [])}
    assert roles(client, tenant, ada_id) == {("Read Only", SCIM_ROLE), ("Billing", LOCAL_ROLE)}
    assert scim.get(f"/Users/{ada_id}").status_code == 200

    # Removal from the last BPRole group deletes Ada, local role or not (BigPanda's FAQ).
    r = scim.patch(
        f"/Groups/{read_only['id']}",
        patch({"op": "Remove", "path": f'members[value eq "{ada_id}"]'}),
    )
    assert r.status_code == 200, r.text
    assert ada_id not in {m["value"] for m in r.json.get("members", [])}
    assert_scim_error(scim.get(f"/Users/{ada_id}"), 404)
    r = scim.get("/Users", params={"filter": 'userName eq "ada@acme.com"'})
    assert r.json["totalResults"] == 0
    # Bob keeps his role and his account.
    assert roles(client, tenant, bob_id) == {("Read Only", SCIM_ROLE)}
    group = scim.get(f"/Groups/{read_only['id']}").json
    assert [m["value"] for m in group["members"]] == [bob_id]

    # The events tell the same story, in order.
    names = [event_name(e.type) for e in events(client, tenant) if about(e, ada_id)]
    wanted = ["role.assigned", "role.revoked", "user.deleted"]
    positions = [names.index(w) for w in wanted]
    assert positions == sorted(positions), names
    assert names.count("role.assigned") == 3  # Admin, Billing (local), Read Only
    assert names[-1] == "user.deleted", names
    revoked = [
        e.assignment.role
        for e in events(client, tenant)
        if about(e, ada_id) and event_name(e.type) == "role.revoked"
    ]
    assert "Admin" in revoked and "Read Only" in revoked


# -- Panther (Okta): JIT users, a custom role attribute, deactivate only --------------------------


def test_panther_okta_jit_users_and_panther_role(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "panther", ("Admin", "ReadOnlyAnalyst"))

    # /Schemas advertises pantherRole in the core User schema (Okta's profile editor).
    r = scim.get(f"/Schemas/{USER_SCHEMA}")
    assert r.status_code == 200, r.text
    attrs = {a["name"]: a for a in r.json["attributes"]}
    assert attrs["pantherRole"]["type"] == "string"
    assert attrs["pantherRole"]["description"] == "The Panther role of the user"
    listed = {s["id"] for s in scim.get("/Schemas").json["Resources"]}
    assert USER_SCHEMA in listed

    # "It is not possible to provision users through Panther SCIM."
    r = scim.post(
        "/Users",
        {
            "schemas": [USER_SCHEMA],
            "userName": "grace@panther.io",
            "name": {"givenName": "Grace", "familyName": "Hopper"},
            "emails": [{"primary": True, "value": "grace@panther.io", "type": "work"}],
            "active": True,
        },
    )
    assert_scim_error(r, 403)
    assert client.list_users(tenant.id).total_results == 0

    # First sign-in: Panther JIT-provisions the user.
    jit = client.jit_provision(
        tenant.id, email="ada@panther.io", user_name="ada@panther.io", given_name="Ada"
    )
    assert jit.created and jit.user.managed_by == "jit"
    uid = jit.user.meta.id

    # Okta finds the user (eq is the only operator Panther needs).
    r = scim.get("/Users", params={"filter": 'userName eq "ada@panther.io"'})
    assert r.status_code == 200 and r.json["totalResults"] == 1, r.text
    found = r.json["Resources"][0]
    assert found["id"] == uid and found["active"] is True
    assert "managedBy" not in found and "managed_by" not in found

    # Okta pushes the profile with the custom attribute: the role follows.
    r = scim.patch(
        f"/Users/{uid}",
        patch(
            {
                "op": "replace",
                "value": {
                    "name": {"givenName": "Ada", "familyName": "Lovelace"},
                    "pantherRole": "Admin",
                },
            }
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json["pantherRole"] == "Admin" and r.json["name"]["familyName"] == "Lovelace"
    assert roles(client, tenant, uid) == {("Admin", SCIM_ROLE)}
    stored = client.get_user(tenant.id, uid)
    assert dict(stored.extensions[USER_SCHEMA]) == {"pantherRole": "Admin"}
    # The custom attribute is returned and filterable like any other.
    got = scim.get(f"/Users/{uid}").json
    assert got["pantherRole"] == "Admin" and got["schemas"] == [USER_SCHEMA]
    r = scim.get("/Users", params={"filter": 'pantherRole eq "Admin"'})
    assert [u["id"] for u in r.json["Resources"]] == [uid]

    # An unknown role: 400 naming the defined roles, and nothing about the user changes.
    before = scim.get(f"/Users/{uid}").json
    r = scim.patch(
        f"/Users/{uid}",
        patch(
            {
                "op": "replace",
                "value": {"name": {"givenName": "Changed"}, "pantherRole": "Wizard"},
            }
        ),
    )
    assert_scim_error(r, 400, "invalidValue")
    assert "Wizard" in r.json["detail"]
    assert "Admin" in r.json["detail"] and "ReadOnlyAnalyst" in r.json["detail"]
    assert scim.get(f"/Users/{uid}").json == before
    assert roles(client, tenant, uid) == {("Admin", SCIM_ROLE)}

    # A role change in Okta.
    r = scim.patch(
        f"/Users/{uid}",
        patch({"op": "replace", "path": "pantherRole", "value": "ReadOnlyAnalyst"}),
    )
    assert r.status_code == 200 and r.json["pantherRole"] == "ReadOnlyAnalyst", r.text
    assert roles(client, tenant, uid) == {("ReadOnlyAnalyst", SCIM_ROLE)}

    # Deactivate and reactivate (Okta's "Deactivate Users").
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200 and r.json["active"] is False, r.text
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "value": {"active": True}}))
    assert r.status_code == 200 and r.json["active"] is True, r.text
    assert r.json["pantherRole"] == "ReadOnlyAnalyst"  # untouched by the other changes

    # "Users can only be deactivated, never deleted."
    r = scim.delete(f"/Users/{uid}")
    assert r.status_code == 204, r.text
    kept = scim.get(f"/Users/{uid}")
    assert kept.status_code == 200 and kept.json["active"] is False
    assert kept.json["name"]["familyName"] == "Lovelace"
    r = scim.get("/Users", params={"filter": 'userName eq "ada@panther.io"'})
    assert r.json["totalResults"] == 1 and r.json["Resources"][0]["active"] is False

    names = [event_name(e.type) for e in events(client, tenant) if about(e, uid)]
    assert names.count("user.deactivated") == 2 and "user.reactivated" in names, names
    assert "user.deleted" not in names


# -- Big ACL (Entra ID): full CRUD, attribute mappings, token rotation ----------------------------


def test_bigacl_entra_crud_mappings_tokens_history(
    client: IdentityClient, tenant: Tenant, app: Any
) -> None:
    configure(client, tenant, "bigacl")
    first = client.issue_token(tenant.id, description="Generate Token")
    scim = ScimClient(app, f"/scim/v2/{tenant.name}", first.secret)

    boss = scim.post("/Users", entra_user("boss@bigacl.com", "Barbara", "Liskov"))
    assert boss.status_code == 201, boss.text
    boss_id = boss.json["id"]
    body = entra_user(
        "ada@bigacl.com",
        "Ada",
        "Lovelace",
        emails=[
            {"type": "home", "value": "ada@home.example"},
            {"primary": True, "type": "work", "value": "ada@bigacl.com"},
        ],
        **{
            ENTERPRISE: {
                "employeeNumber": "E-1815",
                "department": "Analytical Engines",
                "manager": {"value": boss_id},
            }
        },
    )
    r = scim.post("/Users", body)
    assert r.status_code == 201, r.text
    ada_id = r.json["id"]
    assert r.json[ENTERPRISE]["manager"]["value"] == boss_id
    assert dict(client.get_user(tenant.id, ada_id).mapped) == {
        "login": "ada@bigacl.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada@bigacl.com",
        "enabled": True,
        "employeeId": "E-1815",
        "department": "Analytical Engines",
        "manager": boss_id,
    }

    # Entra ID updates: a new manager, a new primary (work) email, a family name.
    boss2 = scim.post("/Users", entra_user("boss2@bigacl.com", "Grace", "Hopper"))
    boss2_id = boss2.json["id"]
    r = scim.patch(
        f"/Users/{ada_id}",
        patch(
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": boss2_id},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ada@new.bigacl"},
            {"op": "Replace", "path": "name.familyName", "value": "King"},
            {"op": "Replace", "path": "active", "value": "False"},
        ),
    )
    assert r.status_code == 200, r.text
    mapped = client.get_user(tenant.id, ada_id).mapped
    assert mapped["manager"] == boss2_id and mapped["email"] == "ada@new.bigacl"
    assert mapped["lastName"] == "King" and mapped["enabled"] is False

    # PUT replaces the whole user.
    put = dict(body, active=True, userName="ada@bigacl.com", displayName="Ada King")
    put[ENTERPRISE] = {"employeeNumber": "E-1816", "manager": {"value": boss2_id}}
    r = scim.put(f"/Users/{ada_id}", put)
    assert r.status_code == 200, r.text
    mapped = client.get_user(tenant.id, ada_id).mapped
    assert mapped["employeeId"] == "E-1816" and mapped["enabled"] is True
    assert mapped["email"] == "ada@bigacl.com" and dict(mapped).get("department") is None

    # Groups: create with members, add one, rename, and the mapped fields follow.
    group = scim.post(
        "/Groups",
        {"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": [{"value": ada_id}]},
    )
    assert group.status_code == 201, group.text
    gid = group.json["id"]
    got = client.get_group(tenant.id, gid).mapped
    assert got["name"] == "Engineering" and list(got["memberIds"]) == [ada_id]
    r = scim.patch(
        f"/Groups/{gid}",
        patch(
            {"op": "Add", "path": "members", "value": [{"value": boss_id}]},
            {"op": "Replace", "path": "displayName", "value": "Engineering EU"},
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json["displayName"] == "Engineering EU"
    assert sorted(m["value"] for m in r.json["members"]) == sorted([ada_id, boss_id])
    got = client.get_group(tenant.id, gid).mapped
    assert got["name"] == "Engineering EU"
    assert sorted(got["memberIds"]) == sorted([ada_id, boss_id])
    r = scim.get(f"/Groups/{gid}")
    assert r.status_code == 200 and r.json["displayName"] == "Engineering EU"

    # The manager leaves: the reference no longer resolves (null).
    assert scim.delete(f"/Users/{boss2_id}").status_code == 204
    assert client.get_user(tenant.id, ada_id).mapped["manager"] is None
    assert_scim_error(scim.get(f"/Users/{boss2_id}"), 404)  # an error in the history
    # A duplicate userName is refused (another error for the history).
    assert_scim_error(
        scim.post("/Users", entra_user("ada@bigacl.com", "Ada", "Again")), 409, "uniqueness"
    )

    # "Rotate Token": the new one works, the old one fails on the very next request.
    second = client.issue_token(tenant.id, description="Rotate Token")
    client.revoke_token(tenant.id, first.token.id)
    assert_scim_error(scim.get("/Users"), 401)
    scim.token = second.secret
    assert scim.get("/Users").status_code == 200

    # "Deactivate Connector": every endpoint refuses until reactivated.
    client.update_tenant(tenant.id, active=False)
    for method, path, req_body in (
        ("GET", "/Users", None),
        ("GET", f"/Users/{ada_id}", None),
        ("POST", "/Users", entra_user("new@bigacl.com", "New", "Person")),
        ("PATCH", f"/Groups/{gid}", patch({"op": "Remove", "path": "members"})),
        ("DELETE", f"/Groups/{gid}", None),
        ("GET", "/Groups", None),
        ("GET", "/Schemas", None),
        ("GET", "/ResourceTypes", None),
        ("GET", "/ServiceProviderConfig", None),
    ):
        assert_scim_error(scim.request(method, path, req_body), 403)
    client.update_tenant(tenant.id, active=True)
    assert scim.get(f"/Groups/{gid}").json["displayName"] == "Engineering EU"  # untouched

    # Full CRUD ends with deletes.
    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert_scim_error(scim.get(f"/Groups/{gid}"), 404)
    assert scim.delete(f"/Users/{ada_id}").status_code == 204
    assert_scim_error(scim.get(f"/Users/{ada_id}"), 404)

    # "Operations History": every SCIM operation, with its kind and status.
    ops = list(client.list_operations(tenant.id, page_size=500).operations)
    seen = {(o.kind, o.resource_type, o.status) for o in ops}
    for expected in (
        (OperationKind.OPERATION_KIND_CREATE, "User", 201),
        (OperationKind.OPERATION_KIND_CREATE, "Group", 201),
        (OperationKind.OPERATION_KIND_UPDATE, "User", 200),
        (OperationKind.OPERATION_KIND_DELETE, "User", 204),
        (OperationKind.OPERATION_KIND_DELETE, "Group", 204),
        (OperationKind.OPERATION_KIND_SEARCH, "User", 200),
        (OperationKind.OPERATION_KIND_READ, "User", 404),
        (OperationKind.OPERATION_KIND_CREATE, "User", 409),
    ):
        assert expected in seen, (expected, sorted(seen))
    errors = client.list_operations(
        tenant.id, outcome=OutcomeFilter.OUTCOME_FILTER_ERROR, page_size=500
    ).operations
    assert errors and all(o.status >= 400 for o in errors)
    conflict = next(o for o in errors if o.status == 409)
    assert conflict.scim_type == "uniqueness" and conflict.detail
    by_token = {o.token_id for o in ops}
    assert by_token == {first.token.id, second.token.id}


# -- Banyan (Okta): SCIM adopts JIT users, email is the identifier, two tokens -------------------


def test_banyan_okta_adopts_jit_users(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "banyan")
    # "A maximum of 2 API tokens can be generated at once" (the fixture issued one).
    spare = client.issue_token(tenant.id, description="second")
    with pytest.raises(FailedPrecondition):
        client.issue_token(tenant.id, description="third")

    # Users who signed in before SCIM was enabled.
    jit = client.jit_provision(tenant.id, email="Ada@Banyan.io", given_name="Ada").user
    assert jit.managed_by == "jit"

    # Okta pushes them, userName = email (the unique identifier), in another letter case.
    okta_user = {
        "schemas": [USER_SCHEMA],
        "userName": "ada@banyan.io",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": True, "value": "ada@banyan.io", "type": "work"}],
        "displayName": "Ada Lovelace",
        "locale": "en-US",
        "externalId": "00u1ada",
        "groups": [],
        "password": "never-stored-1!",
        "active": True,
    }
    r = scim.post("/Users", okta_user)
    assert r.status_code == 201, r.text
    assert r.json["id"] == jit.meta.id  # adopted, not duplicated
    assert client.get_user(tenant.id, jit.meta.id).managed_by == "scim"
    # A person who never signed in is simply created.
    carol = scim.create_user("carol@banyan.io", emails=[{"value": "carol@banyan.io"}])
    r = scim.get("/Users")
    assert r.json["totalResults"] == 2
    assert {u["id"] for u in r.json["Resources"]} == {jit.meta.id, carol["id"]}
    # A later sign-in finds the adopted user.
    again = client.jit_provision(tenant.id, email="ADA@banyan.io")
    assert not again.created and again.user.meta.id == jit.meta.id

    # "Push Profile Updates" and "Deactivate Users", by PATCH.
    r = scim.patch(
        f"/Users/{jit.meta.id}",
        patch(
            {
                "op": "replace",
                "value": {"name": {"familyName": "King"}, "displayName": "Ada King"},
            }
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json["name"] == {"givenName": "Ada", "familyName": "King"}
    r = scim.patch(f"/Users/{jit.meta.id}", patch({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200 and r.json["active"] is False, r.text
    assert client.get_user(tenant.id, jit.meta.id).active is False
    names = [event_name(e.type) for e in events(client, tenant) if about(e, jit.meta.id)]
    assert names[0] == "user.created" and names[-1] == "user.deactivated", names

    # A third token only after one is revoked.
    client.revoke_token(tenant.id, spare.token.id)
    third = client.issue_token(tenant.id, description="third")
    scim.token = third.secret
    assert scim.get(f"/Users/{jit.meta.id}").status_code == 200
