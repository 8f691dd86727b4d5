"""The Directory (page and API) against the real console and core processes, both
databases: users searched by userName, email and displayName, groups by displayName,
paged; a user's roles with their provenance (which group and rule, the attribute, the
default role; or local); bad input is a 4xx; another tenant's users are 404."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from scim_identity_client import CallContext, IdentityClient
from scim_identity_client.types import (
    AttributePath,
    AttributeRoleRule,
    ExtensionSchema,
    Group,
    GroupRoleRule,
    Member,
    MultiValue,
    RoleSource,
    SchemaAttribute,
    Tenant,
    TenantPolicy,
    User,
)

from ..support import Visitor
from .conftest import ApiClient, Stack, admin_session

pytestmark = pytest.mark.e2e

SCIM = CallContext(actor_kind="token", actor_id="tok")
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
RULE = "Okta-{role}"


@dataclass(frozen=True)
class Org:
    ada: str
    bob: str
    carol: str
    engineers: str
    admins: str


def _user(name: str, display: str, email: str, role: str = "") -> User:
    u = User(user_name=name, display_name=display, emails=[MultiValue(value=email, type="work")])
    if role:
        u.extensions.update({CORE: {"teamRole": role}})
    return u


def populate(client: IdentityClient, tenant: Tenant) -> Org:
    """Three people, two groups; roles from a group rule, an attribute, the default
    role, and one given locally."""
    for r in ("Admin", "Engineer", "Viewer", "Auditor"):
        client.create_role(tenant.id, r)
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[GroupRoleRule(pattern=RULE)],
            extension_schemas=[
                ExtensionSchema(
                    schema=CORE,
                    resource_type="User",
                    attributes=[SchemaAttribute(name="teamRole", type="string")],
                )
            ],
            attribute_role=AttributeRoleRule(path=AttributePath(schema=CORE, attribute="teamRole")),
            default_role="Viewer",
        ),
    )
    ada = client.create_user(
        tenant.id, _user("ada@acme.example", "Ada Lovelace", "ada@math.example"), ctx=SCIM
    ).meta.id
    bob = client.create_user(
        tenant.id,
        _user("bob@acme.example", "Robert Boole", "bob@logic.example", "Engineer"),
        ctx=SCIM,
    ).meta.id
    carol = client.create_user(
        tenant.id, _user("carol@acme.example", "Carol Shaw", "carol@games.example"), ctx=SCIM
    ).meta.id
    admins = client.create_group(
        tenant.id, Group(display_name="Okta-Admin", members=[Member(value=ada)]), ctx=SCIM
    ).meta.id
    engineers = client.create_group(
        tenant.id,
        Group(display_name="Engineering", members=[Member(value=ada), Member(value=bob)]),
        ctx=SCIM,
    ).meta.id
    client.assign_role(tenant.id, ada, "Auditor", source=RoleSource.ROLE_SOURCE_LOCAL)
    return Org(ada, bob, carol, engineers, admins)


def _names(body: str, kind: str = "user") -> list[str]:
    return re.findall(rf'<tr data-{kind}="[^"]+">\s*<td><a href="[^"]+">([^<]+)</a>', body)


def test_the_directory_page_searches_and_shows_provenance(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    org = populate(client, tenant)
    base = f"/tenants/{tenant.name}/directory"
    page = admin_of.get(base)
    assert page.status == 200 and 'aria-current="page">Directory' in page.body.replace("\n", "")
    assert _names(page.body) == ["ada@acme.example", "bob@acme.example", "carol@acme.example"]
    # By userName, email, displayName; case-insensitively.
    for q, found in (
        ("BOB@ACME", ["bob@acme.example"]),
        ("logic.example", ["bob@acme.example"]),
        ("shaw", ["carol@acme.example"]),
        ("acme.example", ["ada@acme.example", "bob@acme.example", "carol@acme.example"]),
        ("nobody", []),
    ):
        answer = admin_of.get(f"{base}?q={q}")
        assert answer.status == 200 and _names(answer.body) == found, q
    assert "No users match" in admin_of.get(f"{base}?q=nobody").body
    groups = admin_of.get(f"{base}?show=groups")
    assert _names(groups.body, "group") == ["Engineering", "Okta-Admin"]  # by name
    groups = admin_of.get(f"{base}?show=groups&q=okta")
    assert _names(groups.body, "group") == ["Okta-Admin"]
    # A user: each role and where it comes from.
    ada = admin_of.get(f"{base}/users/{org.ada}")
    assert ada.status == 200 and "ada@math.example" in ada.body
    rows = dict(re.findall(r'<tr data-role="([^"]+)" data-source="([^"]+)">', ada.body))
    assert rows == {"Admin": "scim", "Auditor": "local"}
    admin_row = ada.body.split('data-role="Admin"', 1)[1].split("</tr>", 1)[0]
    assert f'href="{base}/groups/{org.admins}">Okta-Admin</a>' in admin_row
    assert f"<code>{RULE}</code>" in admin_row
    auditor_row = ada.body.split('data-role="Auditor"', 1)[1].split("</tr>", 1)[0]
    assert "an admin assigned it" in auditor_row
    bob = admin_of.get(f"{base}/users/{org.bob}")
    assert "the attribute <code>teamRole</code>" in bob.body
    carol = admin_of.get(f"{base}/users/{org.carol}")
    assert "the tenant's default role" in carol.body
    # A group: its members, linked.
    eng = admin_of.get(f"{base}/groups/{org.engineers}")
    assert eng.status == 200 and _names(eng.body, "member") == ["Ada Lovelace", "Robert Boole"]


def test_the_directory_pages_through_many(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    for i in reversed(range(30)):  # made out of order: the directory sorts by userName
        client.create_user(tenant.id, User(user_name=f"user{i:02d}@acme.example"), ctx=SCIM)
    base = f"/tenants/{tenant.name}/directory"
    first = admin_of.get(base)
    assert _names(first.body) == [f"user{i:02d}@acme.example" for i in range(25)]
    assert "1\u201325 of 30 users" in first.body and 'id="previous"' not in first.body
    nxt = re.search(r'href="([^"]+)" rel="next"', first.body)
    assert nxt is not None
    second = admin_of.get(nxt.group(1).replace("&amp;", "&"))
    assert _names(second.body) == [f"user{i:02d}@acme.example" for i in range(25, 30)]
    assert "26\u201330 of 30 users" in second.body and 'rel="next"' not in second.body
    past = admin_of.get(f"{base}?start=31")
    assert past.status == 200 and "past the last of 30 users" in past.body
    # The API pages the same way, with the caller's count.
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    page = api.get(f"/api/v1/tenants/{tenant.name}/users?q=user1&count=4&start_index=3")
    assert page.status == 200 and page.json["total_results"] == 10
    assert page.json["start_index"] == 3
    assert [u["user_name"] for u in page.json["items"]] == [
        f"user1{i}@acme.example" for i in range(2, 6)
    ]


def test_the_directory_api(client: IdentityClient, tenant: Tenant, stack: Stack) -> None:
    org = populate(client, tenant)
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    base = f"/api/v1/tenants/{tenant.name}"
    found = api.get(f"{base}/users?q=games")
    assert found.status == 200 and found.json["total_results"] == 1
    (carol,) = found.json["items"]
    assert carol == {
        "id": org.carol,
        "user_name": "carol@acme.example",
        "display_name": "Carol Shaw",
        "email": "carol@games.example",
        "active": True,
        "managed_by": "scim",
    }
    ada = api.get(f"{base}/users/{org.ada}").json
    assert [
        (g["display_name"]) for g in sorted(ada["groups"], key=lambda g: g["display_name"])
    ] == [
        "Engineering",
        "Okta-Admin",
    ]
    roles = {r["role"]: (r["source"], r["granted_by"]) for r in ada["roles"]}
    assert roles == {
        "Admin": (
            "scim",
            [
                {
                    "kind": "group",
                    "group": {"id": org.admins, "display_name": "Okta-Admin"},
                    "pattern": RULE,
                    "attribute": None,
                }
            ],
        ),
        "Auditor": ("local", []),
    }
    bob = api.get(f"{base}/users/{org.bob}").json
    assert [r["granted_by"] for r in bob["roles"]] == [
        [{"kind": "attribute", "group": None, "pattern": None, "attribute": "teamRole"}]
    ]
    carol_roles = api.get(f"{base}/users/{org.carol}").json["roles"]
    assert [(r["role"], r["granted_by"][0]["kind"]) for r in carol_roles] == [
        ("Viewer", "default_role")
    ]
    groups = api.get(f"{base}/groups?q=ENG").json
    assert [g["display_name"] for g in groups["items"]] == ["Engineering"]
    eng = api.get(f"{base}/groups/{org.engineers}").json
    assert eng["member_count"] == 2
    assert {m["id"] for m in eng["members"]} == {org.ada, org.bob}


def test_bad_directory_input_is_a_4xx(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    other = client.create_tenant(f"{tenant.name}-other")
    theirs = client.create_user(other.id, User(user_name="eve@other.example"), ctx=SCIM).meta.id
    their_group = client.create_group(other.id, Group(display_name="Theirs"), ctx=SCIM).meta.id
    base = f"/tenants/{tenant.name}/directory"
    for query in (
        "show=admins",
        "start=0",
        "start=x",
        "start=-1",
        f"start={2**31}",
        "q=" + "x" * 201,
    ):
        assert admin_of.get(f"{base}?{query}").status == 400, query
    missing = admin_of.get("/tenants/no-such-tenant/connector")
    for path in (
        f"{base}/users/not-an-id",
        f"{base}/users/0190a6d4-0000-7000-8000-000000000000",
        f"{base}/users/{theirs}",  # another tenant's user, through my tenant
        f"{base}/groups/{their_group}",
        f"{base}/groups/nope",
    ):
        page = admin_of.get(path)
        assert page.status == 404 and page.body == missing.body, path
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    api_base = f"/api/v1/tenants/{tenant.name}"
    for query, status in (
        ("count=0", 422),
        ("count=101", 422),
        ("count=x", 422),
        ("start_index=0", 422),
        (f"start_index={2**31}", 422),
        ("q=" + "x" * 201, 422),
        ("q=a&q=b", 400),
        ("filter=userName", 400),
    ):
        for kind in ("users", "groups"):
            assert api.get(f"{api_base}/{kind}?{query}").status == status, (kind, query)
    for path in (
        f"{api_base}/users/not-an-id",
        f"{api_base}/users/{theirs}",
        f"{api_base}/groups/{their_group}",
    ):
        assert api.get(path).status == 404, path
