"""The Roles and rules and the Mappings pages against the real processes (both
databases): roles created and deleted, rules previewed by the core and saved exactly
as previewed, Big ACL's mappings added, changed and removed one at a time; the core's
refusals shown as 400 pages with nothing changed; another tenant's pages 404; every
form's CSRF token required; each action in the history with its actor."""

from __future__ import annotations

import html
import re
import uuid

import pytest

from scim_identity_client import CallContext, IdentityClient
from scim_identity_client.types import (
    AttributeMapping,
    AttributePath,
    Group,
    GroupRoleRule,
    MappingKind,
    Member,
    RoleSource,
    Tenant,
    TenantPolicy,
    User,
)

from ..support import Page, Visitor
from .conftest import Stack

pytestmark = pytest.mark.e2e

SCIM = CallContext(actor_kind="token", actor_id="tok")
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ACTOR = "console:ada@example.com"


def hidden(page: Page, name: str) -> str:
    m = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page.body)
    assert m, (name, page.body)
    return html.unescape(m.group(1))


def rules_form(page: Page, **fields: str) -> dict[str, str]:
    """The rules form as the page shows it (its selects' current values), with `fields`."""
    form = {"csrf": page.csrf(), "version": hidden(page, "version")}
    for name in ("on_last_scim_role_removed", "on_scim_delete", "unique_identifier"):
        form[name] = {"on_last_scim_role_removed": "keep", "on_scim_delete": "delete"}.get(
            name, "userName"
        )
    form |= {"local_edits": "overwritten", "unknown_members": "skip"}
    return form | fields


def scim_roles(client: IdentityClient, tenant: Tenant, user_id: str) -> list[str]:
    u = client.get_user(tenant.id, user_id)
    return sorted(r.role for r in u.role_assignments if r.source == RoleSource.ROLE_SOURCE_SCIM)


@pytest.fixture
def people(client: IdentityClient, tenant: Tenant) -> dict[str, str]:
    for role in ("Admin", "Viewer"):
        client.create_role(tenant.id, role)
    ids = {
        name: client.create_user(tenant.id, User(user_name=name), ctx=SCIM).meta.id
        for name in ("ada", "bob", "cy")
    }
    for role, member in (("Admin", "ada"), ("Viewer", "bob")):
        client.create_group(
            tenant.id,
            Group(display_name=f"BigPanda_Acme_BPRole_{role}", members=[Member(value=ids[member])]),
            ctx=SCIM,
        )
    return ids


def test_rules_are_previewed_then_saved_exactly_as_previewed(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, people: dict[str, str]
) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/roles")
    assert page.status == 200 and 'aria-current="page">Roles and rules' in page.body
    rule = {"rule-0-pattern": "BigPanda_{org}_BPRole_{role}", "rule-0-org": "Acme"}
    preview = admin_of.post(f"/tenants/{tenant.name}/rules/preview", rules_form(page, **rule))
    assert preview.status == 200, preview.body
    assert re.search(r'data-user="ada">\s*<td>ada</td>\s*<td class="gains">Admin<', preview.body)
    assert re.search(r'data-user="bob">\s*<td>bob</td>\s*<td class="gains">Viewer<', preview.body)
    assert 'data-user="cy"' not in preview.body
    assert client.get_policy(tenant.id) == TenantPolicy()  # a preview saves nothing
    assert scim_roles(client, tenant, people["ada"]) == []

    # cy joins the Admin group before the save: the preview is stale, nothing is saved,
    # and the page shows what saving would do now.
    admins = next(g for g in client.list_groups(tenant.id).groups if "Admin" in g.display_name)
    client.update_group(tenant.id, admins.meta.id, add_members=[people["cy"]], ctx=SCIM)
    save = {
        name: hidden(preview, name)
        for name in re.findall(r'<input type="hidden" name="([^"]+)"', preview.body)
        if name not in ("version",)
    }
    stale = admin_of.post(f"/tenants/{tenant.name}/rules", save)
    assert stale.status == 409 and "Nothing was saved" in stale.body
    assert 'data-user="cy"' in stale.body
    assert client.get_policy(tenant.id) == TenantPolicy()
    assert all(scim_roles(client, tenant, uid) == [] for uid in people.values())

    # Saving the new preview applies exactly it.
    save = {
        name: hidden(stale, name)
        for name in re.findall(r'<input type="hidden" name="([^"]+)"', stale.body)
        if name not in ("version",)
    }
    saved = admin_of.post(f"/tenants/{tenant.name}/rules", save)
    assert saved.status == 303
    assert saved.headers["location"] == f"/tenants/{tenant.name}/roles?saved=1"
    saved = admin_of.get(saved.headers["location"])
    assert "Rules saved." in saved.body
    assert client.get_policy(tenant.id) == TenantPolicy(
        group_role_rules=[GroupRoleRule(pattern="BigPanda_{org}_BPRole_{role}", org="Acme")]
    )
    assert scim_roles(client, tenant, people["ada"]) == ["Admin"]
    assert scim_roles(client, tenant, people["bob"]) == ["Viewer"]
    assert scim_roles(client, tenant, people["cy"]) == ["Admin"]
    # The saved rule is shown in the form, with an empty row for the next.
    assert 'name="rule-0-pattern" value="BigPanda_{org}_BPRole_{role}"' in saved.body
    assert 'name="rule-1-pattern" value=""' in saved.body
    ops = [o for o in client.list_operations(tenant.id).operations if o.resource_type == "Policy"]
    assert [(o.status, o.actor) for o in reversed(ops)] == [(409, ACTOR), (200, ACTOR)]
    assert ops[0].detail == "policy saved: group_role_rules"
    # The History page offers them by resource type.
    shown = admin_of.get(f"/tenants/{tenant.name}/history?resource_type=Policy")
    assert shown.status == 200 and '<option value="Policy" selected>Policy</option>' in shown.body
    rows = re.findall(r'<tr data-operation="([^"]+)" data-status="(\d+)"', shown.body)
    assert [(op_id, int(status)) for op_id, status in rows] == [(o.id, o.status) for o in ops]


def test_an_unusable_policy_is_refused_with_the_cores_reason_and_nothing_changes(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, people: dict[str, str]
) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/roles")
    revision = client.get_revision(tenant.id).revision
    for fields, says in (
        ({"rule-0-pattern": "BigPanda_Admins"}, "the pattern must contain {role} exactly once"),
        ({"rule-0-pattern": "X_{org}_{role}"}, "set org to the org name"),
        ({"default_role": "Nobody"}, "the tenant defines no role 'Nobody'"),
        ({"attribute_name": "pantherRole"}, "does not exist; define it in an extension schema"),
    ):
        for path in ("rules/preview", "rules"):
            form = rules_form(page, **fields) | ({"digest": "0" * 64} if path == "rules" else {})
            answer = admin_of.post(f"/tenants/{tenant.name}/{path}", form)
            assert answer.status == 400, (path, fields, answer.status)
            assert says in html.unescape(answer.body), (path, says)
            # The admin's input is shown again, to fix.
            for value in fields.values():
                assert value in html.unescape(answer.body)
    # Values no page offers: 400 before the core.
    for fields in ({"on_scim_delete": "explode"}, {"unknown_members": ""}):
        answer = admin_of.post(f"/tenants/{tenant.name}/rules/preview", rules_form(page, **fields))
        assert answer.status == 400 and "Choose one of the offered values" in answer.body
    # Saving without a preview's digest: refused.
    rule = {"rule-0-pattern": "BigPanda_{org}_BPRole_{role}", "rule-0-org": "Acme"}
    answer = admin_of.post(f"/tenants/{tenant.name}/rules", rules_form(page, **rule))
    assert answer.status == 400 and "Preview the rules first" in answer.body
    assert client.get_policy(tenant.id) == TenantPolicy()
    assert client.get_revision(tenant.id).revision == revision


def test_roles_are_created_and_deleted_with_confirmation(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/roles")
    csrf = page.csrf()
    made = admin_of.post(
        f"/tenants/{tenant.name}/roles",
        {"csrf": csrf, "name": "Incident Manager", "description": "on call"},
    )
    assert made.status == 303
    assert [(r.name, r.description) for r in client.list_roles(tenant.id)] == [
        ("Incident Manager", "on call")
    ]
    twice = admin_of.post(
        f"/tenants/{tenant.name}/roles", {"csrf": csrf, "name": "Incident Manager"}
    )
    assert twice.status == 409 and "already exists" in twice.body
    empty = admin_of.post(f"/tenants/{tenant.name}/roles", {"csrf": csrf, "name": " "})
    assert empty.status == 400 and "role name must be 1-256 characters" in empty.body
    listed = admin_of.get(f"/tenants/{tenant.name}/roles")
    assert 'data-role="Incident Manager"' in listed.body
    confirm = admin_of.get(f"/tenants/{tenant.name}/roles/delete?name=Incident%20Manager")
    assert confirm.status == 200 and 'id="confirm"' in confirm.body
    assert admin_of.get(f"/tenants/{tenant.name}/roles/delete?name=Nope").status == 404
    gone = admin_of.post(
        f"/tenants/{tenant.name}/roles/delete", {"csrf": csrf, "name": "Incident Manager"}
    )
    assert gone.status == 303 and client.list_roles(tenant.id) == []
    again = admin_of.post(
        f"/tenants/{tenant.name}/roles/delete", {"csrf": csrf, "name": "Incident Manager"}
    )
    assert again.status == 404
    ops = [o for o in client.list_operations(tenant.id).operations if o.resource_type == "Role"]
    assert [(o.status, o.detail, o.actor) for o in reversed(ops)] == [
        (201, "role Incident Manager created", ACTOR),
        (409, "role 'Incident Manager' already exists", ACTOR),
        (400, "role name must be 1-256 characters", ACTOR),
        (200, "role Incident Manager deleted", ACTOR),
    ]


def _mapping(page: Page, **fields: str) -> dict[str, str]:
    return {"csrf": page.csrf(), "version": hidden(page, "version"), "kind": "simple"} | fields


def test_big_acls_mappings_added_changed_and_removed_one_at_a_time(
    client: IdentityClient, stack: Stack
) -> None:
    # Big ACL's flow: the connector is created inactive, mappings come first.
    t = client.create_tenant(f"bigacl-{uuid.uuid4().hex[:12]}", inactive=True)
    admin = Visitor(stack.console_url)
    admin.sign_in(client, t.name, subject="ada@example.com")
    page = admin.get(f"/tenants/{t.name}/mappings")
    assert page.status == 200 and 'id="inactive-note"' in page.body
    assert f'href="/tenants/{t.name}/connector/state?active=true"' in page.body
    base = f"/tenants/{t.name}/mappings"
    for fields in (
        {
            "type": "user",
            "field": "employeeId",
            "schema": ENTERPRISE,
            "attribute": "employeeNumber",
        },
        {
            "type": "user",
            "field": "email",
            "attribute": "emails",
            "sub_attribute": "value",
            "primary_only": "on",
        },
        {
            "type": "user",
            "field": "manager",
            "schema": ENTERPRISE,
            "attribute": "manager",
            "sub_attribute": "value",
            "kind": "reference",
        },
        {"type": "group", "field": "members", "attribute": "members", "kind": "list"},
    ):
        page = admin.get(base)
        answer = admin.post(base, _mapping(page, **fields))
        assert answer.status == 303, (fields, answer.body)
    policy = client.get_policy(t.id)
    assert [m.field for m in policy.user_mappings] == ["employeeId", "email", "manager"]
    assert policy.user_mappings[2] == AttributeMapping(
        field="manager",
        source=AttributePath(schema=ENTERPRISE, attribute="manager", sub_attribute="value"),
        kind=MappingKind.MAPPING_KIND_REFERENCE,
    )
    page = admin.get(base)
    # Each source as Big ACL's guide writes it.
    assert "<td><code>emails[primary].value</code></td>" in page.body
    assert f"<td><code>{ENTERPRISE}:manager.value</code></td>" in page.body
    assert "<td><code>members[]</code></td>" in page.body

    # The core refuses what cannot work; the page says why and nothing changes.
    for fields, says in (
        ({"type": "user", "field": "x", "attribute": "nope"}, "does not exist"),
        (
            {"type": "user", "field": "email", "attribute": "userName"},
            "field email is mapped twice",
        ),
        (
            {"type": "group", "field": "m", "attribute": "displayName", "kind": "list"},
            "a list of references maps members",
        ),
        ({"type": "user", "field": "bad name!", "attribute": "userName"}, "is not valid"),
    ):
        answer = admin.post(base, _mapping(page, **fields))
        assert answer.status == 400 and says in html.unescape(answer.body), (says, answer.body)
        assert fields["field"] in html.unescape(answer.body)  # the input, shown again
    assert admin.post(base, _mapping(page, type="robot", field="x")).status == 400
    assert client.get_policy(t.id) == policy

    # Change one: its form, prefilled; saved in its place.
    edit = admin.get(f"{base}/edit?type=user&field=email")
    assert edit.status == 200 and 'name="was" value="email"' in edit.body
    assert admin.get(f"{base}/edit?type=user&field=nope").status == 404
    assert admin.get(f"{base}/edit?type=robot&field=email").status == 404
    changed = admin.post(
        f"{base}/edit",
        _mapping(
            edit,
            type="user",
            was="email",
            field="workEmail",
            attribute="emails",
            sub_attribute="value",
            primary_only="on",
        ),
    )
    assert changed.status == 303
    policy = client.get_policy(t.id)
    assert [m.field for m in policy.user_mappings] == ["employeeId", "workEmail", "manager"]
    refused = admin.post(
        f"{base}/edit", _mapping(edit, type="user", was="workEmail", field="x", attribute="nope")
    )
    assert refused.status == 409  # the page was made before the change above
    edit = admin.get(f"{base}/edit?type=user&field=workEmail")
    refused = admin.post(
        f"{base}/edit", _mapping(edit, type="user", was="workEmail", field="x", attribute="nope")
    )
    assert (
        refused.status == 400
        and "does not exist" in refused.body
        and 'id="edit-form"' in refused.body
    )
    assert client.get_policy(t.id) == policy

    # Remove one, after its confirmation.
    confirm = admin.get(f"{base}/remove?type=user&field=manager")
    assert confirm.status == 200 and "manager.value" in confirm.body
    removed = admin.post(
        f"{base}/remove",
        {
            "csrf": confirm.csrf(),
            "version": hidden(confirm, "version"),
            "type": "user",
            "field": "manager",
        },
    )
    assert removed.status == 303
    assert [m.field for m in client.get_policy(t.id).user_mappings] == ["employeeId", "workEmail"]
    # Each change is in the history, with its actor.
    ops = [o for o in client.list_operations(t.id).operations if o.resource_type == "Policy"]
    details = [(o.status, o.detail) for o in reversed(ops) if o.actor == ACTOR]
    assert details[:4] == [
        (200, "user mapping employeeId added"),
        (200, "user mapping email added"),
        (200, "user mapping manager added"),
        (200, "group mapping members added"),
    ]
    assert (200, "user mapping email changed") in details
    assert details[-1] == (200, "user mapping manager removed")
    assert not client.get_tenant(t.id).active  # still inactive: activation is the admin's


def test_another_tenants_roles_rules_and_mappings_are_not_found(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    other = client.create_tenant(f"{tenant.name}-other")
    client.create_role(other.id, "Theirs")
    theirs = TenantPolicy(
        user_mappings=[AttributeMapping(field="x", source=AttributePath(attribute="userName"))]
    )
    client.set_policy(other.id, theirs)
    own = admin_of.get(f"/tenants/{tenant.name}/roles")
    csrf = own.csrf()
    missing = admin_of.get("/tenants/no-such-tenant/roles")
    assert missing.status == 404
    rules = rules_form(own, **{"rule-0-pattern": "X_{role}", "digest": "0" * 64})
    mapping = {"csrf": csrf, "type": "user", "field": "x", "attribute": "userName"}
    for ref in (other.name, other.id):
        for method, path, form in (
            ("GET", f"/tenants/{ref}/roles", None),
            ("POST", f"/tenants/{ref}/roles", {"csrf": csrf, "name": "Mine"}),
            ("GET", f"/tenants/{ref}/roles/delete?name=Theirs", None),
            ("POST", f"/tenants/{ref}/roles/delete", {"csrf": csrf, "name": "Theirs"}),
            ("POST", f"/tenants/{ref}/rules/preview", rules),
            ("POST", f"/tenants/{ref}/rules", rules),
            ("GET", f"/tenants/{ref}/mappings", None),
            ("POST", f"/tenants/{ref}/mappings", mapping),
            ("GET", f"/tenants/{ref}/mappings/edit?type=user&field=x", None),
            ("POST", f"/tenants/{ref}/mappings/edit", {**mapping, "was": "x"}),
            ("GET", f"/tenants/{ref}/mappings/remove?type=user&field=x", None),
            ("POST", f"/tenants/{ref}/mappings/remove", mapping),
        ):
            page = admin_of.request(method, path, form)
            assert page.status == 404, (method, path, page.status)
            assert page.body == missing.body
    assert [r.name for r in client.list_roles(other.id)] == ["Theirs"]
    assert client.get_policy(other.id) == theirs


def test_every_rules_and_mappings_form_needs_its_csrf_token(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, people: dict[str, str]
) -> None:
    client.set_policy(
        tenant.id,
        TenantPolicy(
            user_mappings=[AttributeMapping(field="x", source=AttributePath(attribute="userName"))]
        ),
    )
    page = admin_of.get(f"/tenants/{tenant.name}/mappings")
    version = hidden(page, "version")
    policy = client.get_policy(tenant.id)
    revision = client.get_revision(tenant.id).revision
    rule = {"rule-0-pattern": "BigPanda_{org}_BPRole_{role}", "rule-0-org": "Acme"}
    preview = admin_of.post(
        f"/tenants/{tenant.name}/rules/preview",
        rules_form(admin_of.get(f"/tenants/{tenant.name}/roles"), **rule),
    )
    digest = hidden(preview, "digest")
    wrong = page.csrf()[:-1] + ("1" if page.csrf().endswith("0") else "0")
    for csrf in ({}, {"csrf": ""}, {"csrf": wrong}):
        for path, extra in (
            ("roles", {"name": "New"}),
            ("roles/delete", {"name": "Admin"}),
            ("rules/preview", {**rule, "version": version}),
            ("rules", {**rule, "digest": digest}),
            ("mappings", {"type": "user", "field": "y", "attribute": "userName"}),
            ("mappings/edit", {"type": "user", "was": "x", "field": "z", "attribute": "userName"}),
            ("mappings/remove", {"type": "user", "field": "x", "version": version}),
        ):
            answer = admin_of.post(f"/tenants/{tenant.name}/{path}", {**csrf, **extra})
            assert answer.status == 403 and "CSRF" in answer.body, (path, answer.status)
    assert client.get_policy(tenant.id) == policy
    assert sorted(r.name for r in client.list_roles(tenant.id)) == ["Admin", "Viewer"]
    assert client.get_revision(tenant.id).revision == revision


def test_an_operator_creates_a_tenant_inactive_and_sets_its_mappings_first(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    """Big ACL's flow: New Connector (inactive), Mappings, then Activate."""
    operator = Visitor(stack.console_url)
    operator.sign_in(client, None, operator=True, subject="platform@vendor.example")
    home = operator.get("/")
    assert 'id="new-tenant"' in home.body and 'name="inactive" checked' in home.body
    name = f"bigacl-{uuid.uuid4().hex[:10]}"
    made = operator.post(
        "/tenants",
        {"csrf": home.csrf(), "name": name, "display_name": "Big ACL", "inactive": "on"},
    )
    assert made.status == 303 and made.headers["location"] == f"/tenants/{name}/mappings"
    t = client.get_tenant(name)
    assert not t.active and t.display_name == "Big ACL"
    page = operator.get(made.headers["location"])
    assert 'id="inactive-note"' in page.body
    (op,) = client.list_operations(t.id).operations
    assert (op.resource_type, op.status, op.detail, op.actor) == (
        "Tenant",
        201,
        "tenant created, connector inactive",
        "console:operator platform@vendor.example",
    )
    # Refused: the core's reason (400), a name taken (409), no CSRF (403); nothing made.
    bad = operator.post("/tenants", {"csrf": home.csrf(), "name": "Not Valid!"})
    assert bad.status == 400 and "must be 1-63 characters" in html.unescape(bad.body)
    assert 'value="Not Valid!"' in bad.body  # the input, shown again
    taken = operator.post("/tenants", {"csrf": home.csrf(), "name": name})
    assert taken.status == 409 and "already exists" in html.unescape(taken.body)
    assert operator.post("/tenants", {"name": f"{name}-2"}).status == 403
    # A tenant's admin may not create tenants.
    mine = admin_of.get(f"/tenants/{tenant.name}/connector").csrf()
    refused = admin_of.post("/tenants", {"csrf": mine, "name": f"{name}-3"})
    assert refused.status == 403
    assert {x.name for x in client.list_tenants()} & {
        f"{name}-2",
        f"{name}-3",
        "not valid!",
    } == set()
