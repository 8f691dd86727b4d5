"""The admin API's roles, policy and mappings against the real processes (both
databases), every answer checked against the served OpenAPI document: a policy is
previewed by the core and saved only with that preview's digest; the core's refusals
are 422 with its reason and change nothing; a cookie's unsafe requests need the CSRF
header; each action is in the history with its actor."""

from __future__ import annotations

import asyncio

import pytest

from scim_identity_client import CallContext, IdentityClient
from scim_identity_client.types import Group, Member, RoleSource, Tenant, TenantPolicy, User

from ..support import Visitor
from .conftest import ApiClient, Stack, admin_session

pytestmark = pytest.mark.e2e

SCIM = CallContext(actor_kind="token", actor_id="tok")
ACTOR = "console:operator platform@vendor.example"
RULE = {"pattern": "BigPanda_{org}_BPRole_{role}", "org": "Acme"}


def _roles(client: IdentityClient, tenant: Tenant, user_id: str) -> list[str]:
    u = client.get_user(tenant.id, user_id)
    return sorted(r.role for r in u.role_assignments if r.source == RoleSource.ROLE_SOURCE_SCIM)


def _ops(client: IdentityClient, tenant: Tenant, kind: str) -> list[tuple[str, int, str]]:
    ops = client.list_operations(tenant.id).operations
    return [(o.method, o.status, o.detail) for o in reversed(ops) if o.resource_type == kind]


def test_roles_and_a_policy_previewed_then_saved_as_previewed(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient
) -> None:
    base = f"/api/v1/tenants/{tenant.name}"
    assert operator_api.get(f"{base}/roles").json == []
    for name in ("Admin", "Viewer"):
        made = operator_api.request("POST", f"{base}/roles", {"name": name})
        assert made.status == 201 and made.json["name"] == name
    taken = operator_api.request("POST", f"{base}/roles", {"name": "Admin"})
    assert taken.status == 409 and "already exists" in taken.message
    blank = operator_api.request("POST", f"{base}/roles", {"name": " "})
    assert blank.status == 422 and "role name must be 1-256 characters" in blank.message
    assert [r["name"] for r in operator_api.get(f"{base}/roles").json] == ["Admin", "Viewer"]
    ids = {
        n: client.create_user(tenant.id, User(user_name=n), ctx=SCIM).meta.id
        for n in ("ada", "bob")
    }
    client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_BPRole_Admin", members=[Member(value=ids["ada"])]),
        ctx=SCIM,
    )

    policy = operator_api.get(f"{base}/policy").json
    assert policy["group_role_rules"] == [] and policy["default_role"] == ""
    policy |= {
        "group_role_rules": [RULE],
        "default_role": "Viewer",
        "on_last_scim_role_removed": "LAST_ROLE_ACTION_DEACTIVATE",
    }
    preview = operator_api.request("POST", f"{base}/policy/preview", {"policy": policy})
    assert preview.status == 200, preview.raw
    assert [(e["user_name"], e["roles_gained"]) for e in preview.json["effects"]] == [
        ("ada", ["Admin"]),
        ("bob", ["Viewer"]),
    ]
    assert preview.json["effect_count"] == 2 and preview.json["current"]["default_role"] == ""
    assert client.get_policy(tenant.id) == TenantPolicy()  # a preview writes nothing
    assert _roles(client, tenant, ids["ada"]) == []

    saved = operator_api.request(
        "PUT", f"{base}/policy", {"policy": policy, "digest": preview.json["digest"]}
    )
    assert saved.status == 200
    assert saved.json["group_role_rules"] == [RULE | {"underscores_are_spaces": False}]
    assert _roles(client, tenant, ids["ada"]) == ["Admin"]
    assert _roles(client, tenant, ids["bob"]) == ["Viewer"]
    assert operator_api.get(f"{base}/policy").json == saved.json

    # A stale digest: 409, nothing saved.
    other = policy | {"default_role": ""}
    stale = operator_api.request("POST", f"{base}/policy/preview", {"policy": other})
    assert [e["user_name"] for e in stale.json["effects"]] == ["bob"]
    client.update_group(
        tenant.id,
        next(g.meta.id for g in client.list_groups(tenant.id).groups),
        add_members=[ids["bob"]],
        ctx=SCIM,
    )
    refused = operator_api.request(
        "PUT", f"{base}/policy", {"policy": other, "digest": stale.json["digest"]}
    )
    assert refused.status == 409 and "preview it again" in refused.message
    assert client.get_policy(tenant.id).default_role == "Viewer"

    # What the core refuses: 422 with its reason; what the schema refuses: 422 too.
    for bad, says in (
        ({"group_role_rules": [{"pattern": "BigPanda_Admins"}]}, "{role} exactly once"),
        ({"default_role": "Nobody"}, "defines no role 'Nobody'"),
        ({"on_scim_delete": "EXPLODE"}, "on_scim_delete"),
        ({"surprise": True}, "surprise"),
    ):
        for method, path, body in (
            ("POST", f"{base}/policy/preview", {"policy": bad}),
            ("PUT", f"{base}/policy", {"policy": bad, "digest": "x"}),
        ):
            answer = operator_api.request(method, path, body)
            assert answer.status == 422 and says in answer.message, (bad, answer.raw)
    no_digest = operator_api.request("PUT", f"{base}/policy", {"policy": policy})
    assert no_digest.status == 422 and "digest" in no_digest.message
    assert client.get_policy(tenant.id).default_role == "Viewer"

    # A role goes, with its assignments.
    assert operator_api.request("DELETE", f"{base}/roles/Admin").status == 204
    assert operator_api.request("DELETE", f"{base}/roles/Admin").status == 404
    assert _roles(client, tenant, ids["ada"]) == []
    assert _ops(client, tenant, "Role") == [
        ("POST", 201, "role Admin created"),
        ("POST", 201, "role Viewer created"),
        ("POST", 409, "role 'Admin' already exists"),
        ("POST", 400, "role name must be 1-256 characters"),
        ("DELETE", 200, "role Admin deleted"),
    ]
    assert _ops(client, tenant, "Policy")[:2] == [
        ("PUT", 200, "policy saved: group_role_rules, on_last_scim_role_removed, default_role"),
        ("PUT", 409, "not saved: stale preview"),
    ]


def test_mappings_one_at_a_time(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient
) -> None:
    base = f"/api/v1/tenants/{tenant.name}/mappings"
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    manager = {
        "field": "manager",
        "source": {"schema": enterprise, "attribute": "manager", "sub_attribute": "value"},
        "kind": "MAPPING_KIND_REFERENCE",
    }
    assert operator_api.get(base).json == {"users": [], "groups": []}
    made = operator_api.request("POST", f"{base}/users", manager)
    assert made.status == 201 and made.json["kind"] == "MAPPING_KIND_REFERENCE"
    members = {"field": "members", "source": {"attribute": "members"}}
    members["kind"] = "MAPPING_KIND_LIST_OF_REFERENCES"
    assert operator_api.request("POST", f"{base}/groups", members).status == 201
    listed = operator_api.get(base).json
    assert [m["field"] for m in listed["users"]] == ["manager"]
    assert [m["field"] for m in listed["groups"]] == ["members"]

    # The core's refusals: 422 with its reason, nothing changed.
    before = client.get_policy(tenant.id)
    for path, body, says in (
        (f"{base}/users", {"field": "x", "source": {"attribute": "nope"}}, "does not exist"),
        (f"{base}/users", manager, "mapped twice"),
        (f"{base}/groups", {"field": "n", "source": {"attribute": "displayName"},
                            "kind": "MAPPING_KIND_LIST_OF_REFERENCES"}, "list of references"),
    ):  # fmt: skip
        answer = operator_api.request("POST", path, body)
        assert answer.status == 422 and says in answer.message, answer.raw
    assert client.get_policy(tenant.id) == before

    changed = operator_api.request("PUT", f"{base}/users/manager", manager | {"field": "boss"})
    assert changed.status == 200
    assert [m.field for m in client.get_policy(tenant.id).user_mappings] == ["boss"]
    assert operator_api.request("PUT", f"{base}/users/manager", manager).status == 404
    assert operator_api.request("DELETE", f"{base}/groups/members").status == 204
    assert operator_api.request("DELETE", f"{base}/groups/members").status == 404
    assert operator_api.get(base).json["groups"] == []
    ops = _ops(client, tenant, "Policy")
    assert [(m, status) for m, status, _ in ops] == [
        ("POST", 200),
        ("POST", 200),
        ("POST", 400),
        ("POST", 400),
        ("POST", 400),
        ("PUT", 200),
        ("DELETE", 200),
    ]
    assert [d for _, _, d in ops][:2] == [
        "user mapping manager added",
        "group mapping members added",
    ]
    assert "does not exist" in ops[2][2] and "mapped twice" in ops[3][2]  # the core's reasons
    assert [d for _, _, d in ops][5:] == [
        "user mapping manager changed",
        "group mapping members removed",
    ]


def test_a_cookies_policy_changes_need_the_csrf_header(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    client.create_role(tenant.id, "Admin")
    page = admin_of.get(f"/tenants/{tenant.name}/roles")
    api = ApiClient(stack.console_url, cookie=admin_of.cookie)
    base = f"/api/v1/tenants/{tenant.name}"
    preview = api.request("POST", f"{base}/policy/preview", {"policy": {"default_role": "Admin"}})
    assert preview.status == 403  # a preview is a POST: the token, as for any other
    api.csrf = page.csrf()
    digest = api.request(
        "POST", f"{base}/policy/preview", {"policy": {"default_role": "Admin"}}
    ).json["digest"]
    api.csrf = ""
    mapping = {"field": "x", "source": {"attribute": "userName"}}
    for method, path, body in (
        ("POST", f"{base}/roles", {"name": "New"}),
        ("DELETE", f"{base}/roles/Admin", None),
        ("PUT", f"{base}/policy", {"policy": {"default_role": "Admin"}, "digest": digest}),
        ("POST", f"{base}/mappings/users", mapping),
    ):
        answer = api.request(method, path, body)
        assert answer.status == 403 and "X-CSRF-Token" in answer.message, (method, path)
    assert [r.name for r in client.list_roles(tenant.id)] == ["Admin"]
    assert client.get_policy(tenant.id) == TenantPolicy()


def test_a_change_built_from_a_policy_read_before_anothers_change_is_refused(
    client: IdentityClient, tenant: Tenant, identity_target: str
) -> None:
    """The window a page's version cannot close (read, then preview): the preview
    names the policy it replaced, and a change built from another is not saved."""
    from identity_admin import policy_form as pf
    from identity_admin import rules
    from identity_admin.console import Console
    from identity_admin.settings import Settings
    from scim_identity_client import AsyncIdentityClient
    from scim_identity_client.types import AttributeMapping, AttributePath

    theirs = TenantPolicy(groups_disabled=True)
    mapping = AttributeMapping(field="x", source=AttributePath(attribute="userName"))

    async def race() -> None:
        console = Console(Settings(), lambda: AsyncIdentityClient(identity_target))
        await console.process_startup({}, {})
        try:
            admin = await console.session(admin_session(client, tenant.name, subject="ada"))
            read = await console.core.get_policy(tenant.id)
            client.set_policy(tenant.id, theirs)  # another admin's change, meanwhile
            act = console.action(admin, tenant)
            with pytest.raises(rules.Stale):
                await rules.change(act, read, pf.with_mapping(read, "user", mapping), "x added")
            # Built from what is stored now: saved.
            now = await console.core.get_policy(tenant.id)
            await rules.change(act, now, pf.with_mapping(now, "user", mapping), "x added")
        finally:
            await console.process_shutdown({}, {})

    asyncio.run(race())
    assert client.get_policy(tenant.id) == TenantPolicy(
        groups_disabled=True, user_mappings=[mapping]
    )
    assert [(s, d) for _, s, d in _ops(client, tenant, "Policy")] == [
        (409, "not saved: x added"),
        (200, "x added"),
    ]


def test_an_operator_creates_a_tenant_inactive_by_api(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient, stack: Stack
) -> None:
    name = f"{tenant.name}-new"
    made = operator_api.request("POST", "/api/v1/tenants", {"name": name, "active": False})
    assert made.status == 201 and made.json["active"] is False and made.json["name"] == name
    assert not client.get_tenant(name).active
    on = operator_api.request("POST", "/api/v1/tenants", {"name": f"{name}-on"})
    assert on.status == 201 and on.json["active"] is True
    taken = operator_api.request("POST", "/api/v1/tenants", {"name": name})
    assert taken.status == 409
    bad = operator_api.request("POST", "/api/v1/tenants", {"name": "Not Valid!"})
    assert bad.status == 422 and "must be 1-63 characters" in bad.message
    theirs = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    refused = theirs.request("POST", "/api/v1/tenants", {"name": f"{name}-x"})
    assert refused.status == 403
    assert not any(t.name == f"{name}-x" for t in client.list_tenants())
