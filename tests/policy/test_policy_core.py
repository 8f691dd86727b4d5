"""Provisioning policy in the core, over gRPC on both databases: validation, roles
from group names and from an attribute, the last-role action, DELETE semantics,
JIT and adoption, local edits, extension attributes and mappings."""

from __future__ import annotations

import pytest

from scim_identity_client import (
    CallContext,
    IdentityClient,
    InvalidArgument,
    PermissionDenied,
)
from scim_identity_client.types import (
    AttributeMapping,
    AttributePath,
    AttributeRoleRule,
    DeleteAction,
    EnterpriseUser,
    ExtensionSchema,
    Group,
    GroupRoleRule,
    LastRoleAction,
    LocalEdits,
    Manager,
    MappingKind,
    Member,
    MultiValue,
    Name,
    RoleSource,
    SchemaAttribute,
    Tenant,
    TenantPolicy,
    UniqueIdentifier,
    User,
)

SCIM = CallContext(actor_kind="token", actor_id="tok")
ADMIN = CallContext(actor_kind="admin", actor_id="ops")
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BIGPANDA = GroupRoleRule(
    pattern="BigPanda_{org}_BPRole_{role}", org="Acme Corp", underscores_are_spaces=True
)


def roles(client: IdentityClient, tenant: Tenant, user_id: str) -> list[tuple[str, int]]:
    u = client.get_user(tenant.id, user_id)
    return [(r.role, r.source) for r in u.role_assignments]


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        (TenantPolicy(group_role_rules=[GroupRoleRule(pattern="BigPanda_{org}_Admins")]), "{role}"),
        (TenantPolicy(group_role_rules=[GroupRoleRule(pattern="X_{org}_{role}")]), "set org"),
        (
            TenantPolicy(group_role_rules=[GroupRoleRule(pattern="X_{role}", org="acme")]),
            "no {org}",
        ),
        (
            TenantPolicy(group_role_rules=[GroupRoleRule(pattern="{org}{role}", org="a")]),
            "literal text",
        ),
        (TenantPolicy(group_role_rules=[GroupRoleRule(pattern="X_{team}_{role}")]), "only {role}"),
        (
            TenantPolicy(
                attribute_role=AttributeRoleRule(
                    path=AttributePath(schema=CORE, attribute="pantherRole")
                )
            ),
            "does not exist",
        ),
        (
            TenantPolicy(
                user_mappings=[AttributeMapping(field="x", source=AttributePath(attribute="nope"))]
            ),
            "does not exist",
        ),
        (
            TenantPolicy(
                user_mappings=[
                    AttributeMapping(field="9bad", source=AttributePath(attribute="userName"))
                ]
            ),
            "not valid",
        ),
        (
            TenantPolicy(
                user_mappings=[
                    AttributeMapping(field="a", source=AttributePath(attribute="userName")),
                    AttributeMapping(field="a", source=AttributePath(attribute="title")),
                ]
            ),
            "mapped twice",
        ),
        (
            TenantPolicy(
                extension_schemas=[ExtensionSchema(schema="not-a-urn", resource_type="User")]
            ),
            "URN",
        ),
        (
            TenantPolicy(
                extension_schemas=[
                    ExtensionSchema(
                        schema=CORE,
                        resource_type="User",
                        attributes=[SchemaAttribute(name="userName", type="string")],
                    )
                ]
            ),
            "core attribute",
        ),
    ],
)
def test_unusable_policies_are_refused(
    client: IdentityClient, tenant: Tenant, policy: TenantPolicy, says: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        client.set_policy(tenant.id, policy)
    assert says in str(exc.value)
    assert client.get_policy(tenant.id) == TenantPolicy()  # nothing stored


def test_roles_from_group_names(client: IdentityClient, tenant: Tenant) -> None:
    for r in ("Admin", "Read Only", "Local Thing"):
        client.create_role(tenant.id, r)
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[BIGPANDA],
            on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_KEEP,
        ),
    )
    u = client.create_user(tenant.id, User(user_name="ada"), ctx=SCIM)
    client.assign_role(tenant.id, u.meta.id, "Local Thing", source=RoleSource.ROLE_SOURCE_LOCAL)
    admins = client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_Corp_BPRole_Admin", members=[Member(value=u.meta.id)]),
        ctx=SCIM,
    )
    client.create_group(
        tenant.id,
        Group(
            display_name="BigPanda_Other_Org_BPRole_Read_Only", members=[Member(value=u.meta.id)]
        ),
        ctx=SCIM,
    )  # another org: no role
    client.create_group(
        tenant.id,
        Group(display_name="bigpanda_Acme_Corp_BPRole_Admin", members=[Member(value=u.meta.id)]),
        ctx=SCIM,
    )  # case-sensitive: no match
    ro = client.create_group(
        tenant.id, Group(display_name="BigPanda_Acme_Corp_BPRole_Read_Only"), ctx=SCIM
    )
    client.update_group(tenant.id, ro.meta.id, add_members=[u.meta.id], ctx=SCIM)
    client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_Corp_BPRole_Unknown", members=[Member(value=u.meta.id)]),
        ctx=SCIM,
    )  # no such role: nothing granted
    assert sorted(roles(client, tenant, u.meta.id)) == [
        ("Admin", RoleSource.ROLE_SOURCE_SCIM),
        ("Local Thing", RoleSource.ROLE_SOURCE_LOCAL),
        ("Read Only", RoleSource.ROLE_SOURCE_SCIM),
    ]
    client.update_group(tenant.id, admins.meta.id, remove_members=[u.meta.id], ctx=SCIM)
    client.update_group(
        tenant.id, ro.meta.id, display_name="Renamed", ctx=SCIM
    )  # rename: role goes
    assert roles(client, tenant, u.meta.id) == [("Local Thing", RoleSource.ROLE_SOURCE_LOCAL)]
    # KEEP: losing the last SCIM role changes nothing else.
    assert client.get_user(tenant.id, u.meta.id).active


def test_last_scim_role_deletes_the_user_even_with_local_roles(
    client: IdentityClient, tenant: Tenant
) -> None:
    client.create_role(tenant.id, "Admin")
    client.create_role(tenant.id, "Local")
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[BIGPANDA],
            on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DELETE,
        ),
    )
    u = client.create_user(tenant.id, User(user_name="ada"), ctx=SCIM)
    client.assign_role(tenant.id, u.meta.id, "Local")
    g = client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_Corp_BPRole_Admin", members=[Member(value=u.meta.id)]),
        ctx=SCIM,
    )
    assert ("Admin", RoleSource.ROLE_SOURCE_SCIM) in roles(client, tenant, u.meta.id)
    client.update_group(tenant.id, g.meta.id, remove_members=[u.meta.id], ctx=SCIM)
    assert client.list_users(tenant.id).total_results == 0


def test_last_scim_role_deactivates(client: IdentityClient, tenant: Tenant) -> None:
    client.create_role(tenant.id, "Admin")
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[BIGPANDA],
            on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DEACTIVATE,
        ),
    )
    u = client.create_user(tenant.id, User(user_name="ada"), ctx=SCIM)
    g = client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_Corp_BPRole_Admin", members=[Member(value=u.meta.id)]),
        ctx=SCIM,
    )
    client.delete_group(tenant.id, g.meta.id, ctx=SCIM)
    after = client.get_user(tenant.id, u.meta.id)
    assert after.active is False and not after.role_assignments


def test_role_from_attribute(client: IdentityClient, tenant: Tenant) -> None:
    client.create_role(tenant.id, "Admin")
    client.create_role(tenant.id, "ReadOnlyAnalyst")
    client.set_policy(
        tenant.id,
        TenantPolicy(
            extension_schemas=[
                ExtensionSchema(
                    schema=CORE,
                    resource_type="User",
                    attributes=[SchemaAttribute(name="pantherRole", type="string")],
                )
            ],
            attribute_role=AttributeRoleRule(
                path=AttributePath(schema=CORE, attribute="pantherRole")
            ),
        ),
    )
    u = User(user_name="ada")
    u.extensions.update({CORE: {"pantherRole": "Admin"}})
    created = client.create_user(tenant.id, u, ctx=SCIM)
    assert roles(client, tenant, created.meta.id) == [("Admin", RoleSource.ROLE_SOURCE_SCIM)]
    created.extensions[CORE]["pantherRole"] = "ReadOnlyAnalyst"
    created.title = "analyst"
    client.replace_user(tenant.id, created, ctx=SCIM)
    assert roles(client, tenant, created.meta.id) == [
        ("ReadOnlyAnalyst", RoleSource.ROLE_SOURCE_SCIM)
    ]
    before = client.get_user(tenant.id, created.meta.id)
    bad = User()
    bad.CopyFrom(before)
    bad.extensions[CORE]["pantherRole"] = "Wizard"
    bad.title = "changed too"
    with pytest.raises(InvalidArgument) as exc:
        client.replace_user(tenant.id, bad, ctx=SCIM)
    assert "Wizard" in str(exc.value) and "Admin, ReadOnlyAnalyst" in str(exc.value)
    assert client.get_user(tenant.id, created.meta.id) == before  # nothing about the user changed
    # The extension attribute is filterable like any other.
    from ..core.test_filters import cmp

    found = client.list_users(
        tenant.id, filter=cmp("pantherRole", "eq", "readonlyanalyst", schema=CORE)
    )
    assert [x.meta.id for x in found.users] == [created.meta.id]


def test_delete_deactivates_when_the_policy_says_so(client: IdentityClient, tenant: Tenant) -> None:
    client.set_policy(tenant.id, TenantPolicy(on_scim_delete=DeleteAction.DELETE_ACTION_DEACTIVATE))
    u = client.create_user(tenant.id, User(user_name="ada", title="keep me"), ctx=SCIM)
    resp = client.delete_user(tenant.id, u.meta.id, ctx=SCIM)
    assert not resp.deleted and resp.user.active is False
    kept = client.get_user(tenant.id, u.meta.id)
    assert kept.title == "keep me" and not kept.active
    kept.active = True
    assert client.replace_user(
        tenant.id, kept, ctx=SCIM
    ).active  # reactivation: same user, same data
    assert client.delete_user(tenant.id, u.meta.id, hard=True).deleted


def test_jit_then_scim_adopts(client: IdentityClient, tenant: Tenant) -> None:
    client.set_policy(
        tenant.id, TenantPolicy(unique_identifier=UniqueIdentifier.UNIQUE_IDENTIFIER_EMAIL)
    )
    jit = client.jit_provision(tenant.id, email="Ada@Example.com", given_name="Ada")
    assert jit.created and jit.user.managed_by == "jit"
    again = client.jit_provision(tenant.id, email="ada@example.COM")
    assert not again.created and again.user.meta.id == jit.user.meta.id
    scim = client.create_user(
        tenant.id,
        User(
            user_name="00u1abc",
            name=Name(given_name="Ada", family_name="Lovelace"),
            emails=[MultiValue(value="ADA@example.com", primary=True)],
        ),
        ctx=SCIM,
    )
    assert scim.meta.id == jit.user.meta.id  # adopted, not duplicated
    assert scim.managed_by == "scim" and scim.name.family_name == "Lovelace"
    assert client.list_users(tenant.id).total_results == 1


def test_scim_create_can_be_disabled(client: IdentityClient, tenant: Tenant) -> None:
    client.set_policy(tenant.id, TenantPolicy(scim_create_disabled=True))
    with pytest.raises(PermissionDenied) as exc:
        client.create_user(tenant.id, User(user_name="ada@example.com"), ctx=SCIM)
    assert "sign in first" in str(exc.value)
    client.jit_provision(tenant.id, user_name="ada@example.com")
    adopted = client.create_user(tenant.id, User(user_name="ADA@example.com", title="x"), ctx=SCIM)
    assert adopted.managed_by == "scim" and adopted.title == "x"


def test_local_edits_of_scim_users(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, User(user_name="ada"), ctx=SCIM)
    u.title = "local edit"
    assert client.replace_user(tenant.id, u, ctx=ADMIN).title == "local edit"  # default: allowed
    client.set_policy(tenant.id, TenantPolicy(local_edits=LocalEdits.LOCAL_EDITS_REFUSED))
    u.title = "refused"
    with pytest.raises(PermissionDenied) as exc:
        client.replace_user(tenant.id, u, ctx=ADMIN)
    assert "identity provider" in str(exc.value)
    with pytest.raises(PermissionDenied):
        client.delete_user(tenant.id, u.meta.id, ctx=ADMIN)
    local = client.create_user(tenant.id, User(user_name="local-only"), ctx=ADMIN)
    assert local.managed_by == "local"
    local.title = "fine"
    assert client.replace_user(tenant.id, local, ctx=ADMIN).title == "fine"
    u.title = "the IdP may"
    assert client.replace_user(tenant.id, u, ctx=SCIM).title == "the IdP may"


def test_attribute_mappings(client: IdentityClient, tenant: Tenant) -> None:
    client.set_policy(
        tenant.id,
        TenantPolicy(
            user_mappings=[
                AttributeMapping(field="login", source=AttributePath(attribute="userName")),
                AttributeMapping(
                    field="email",
                    source=AttributePath(attribute="emails", sub_attribute="value"),
                    primary_only=True,
                ),
                AttributeMapping(
                    field="manager",
                    source=AttributePath(
                        schema=ENTERPRISE, attribute="manager", sub_attribute="value"
                    ),
                    kind=MappingKind.MAPPING_KIND_REFERENCE,
                ),
                AttributeMapping(
                    field="teams",
                    source=AttributePath(attribute="groups"),
                    kind=MappingKind.MAPPING_KIND_LIST_OF_REFERENCES,
                ),
            ]
        ),
    )
    boss = client.create_user(tenant.id, User(user_name="boss"), ctx=SCIM)
    u = client.create_user(
        tenant.id,
        User(
            user_name="ada",
            emails=[MultiValue(value="home@x"), MultiValue(value="work@x", primary=True)],
            enterprise=EnterpriseUser(manager=Manager(value=boss.meta.id)),
        ),
        ctx=SCIM,
    )
    g = client.create_group(
        tenant.id, Group(display_name="eng", members=[Member(value=u.meta.id)]), ctx=SCIM
    )
    got = client.get_user(tenant.id, u.meta.id).mapped
    assert got["login"] == "ada" and got["email"] == "work@x"
    assert got["manager"] == boss.meta.id
    assert list(got["teams"]) == [g.meta.id]
    client.delete_user(tenant.id, boss.meta.id, ctx=SCIM)
    assert client.get_user(tenant.id, u.meta.id).mapped["manager"] is None  # dangling: null


def test_identityctl_policy_and_jit(
    identity_target: str, client: IdentityClient, tenant: Tenant
) -> None:
    import subprocess

    from ..support import ROOT, VENV_BIN

    def ctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "identityctl"), "--target", identity_target, *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            check=False,
        )

    ok = ctl("policy", "set", tenant.name, str(ROOT / "docs" / "policies" / "panther.json"))
    assert ok.returncode == 0, ok.stderr
    assert client.get_policy(tenant.id).scim_create_disabled
    assert '"pantherRole"' in ctl("policy", "show", tenant.name).stdout
    bad = ctl("policy", "set", tenant.name, "-", stdin='{"groupRoleRules": [{"pattern": "x"}]}')
    assert bad.returncode == 1 and "{role}" in bad.stderr and "Traceback" not in bad.stderr
    junk = ctl("policy", "set", tenant.name, "-", stdin="{not json")
    assert junk.returncode == 1 and "not a TenantPolicy" in junk.stderr
    jit = ctl("user", "jit", tenant.name, "--email", "ada@example.com")
    assert jit.returncode == 0 and jit.stdout.strip().endswith("created")
    assert "ada@example.com" in ctl("user", "list", tenant.name).stdout


LEVEL = TenantPolicy(
    extension_schemas=[
        ExtensionSchema(
            schema="urn:acme:ext",
            resource_type="User",
            attributes=[SchemaAttribute(name="level", type="integer")],
        )
    ]
)


def test_cursor_paging_by_a_sometimes_absent_attribute_sees_everyone(
    client: IdentityClient, tenant: Tenant
) -> None:
    """Review finding: NULL sort keys were skipped by the keyset (PostgreSQL) or a 500 (SQLite)."""
    from scim_identity_client.types import Sort

    client.set_policy(tenant.id, LEVEL)
    ids = []
    for i in range(7):
        u = User(user_name=f"g{i}")
        if i % 3 == 0:
            u.extensions.update({"urn:acme:ext": {"level": i}})
        ids.append(client.create_user(tenant.id, u, ctx=SCIM).meta.id)
    for descending in (False, True):
        sort = Sort(
            path=AttributePath(schema="urn:acme:ext", attribute="level"), descending=descending
        )
        seen: list[str] = []
        cursor = ""
        while True:
            page = client.list_users(tenant.id, sort=sort, cursor=cursor, count=2)
            seen += [u.meta.id for u in page.users]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(ids) and len(seen) == 7


def test_extension_values_must_have_the_declared_type(
    client: IdentityClient, tenant: Tenant
) -> None:
    """Review finding: a string stored in an integer attribute made filters a 500 on PostgreSQL."""
    from ..core.test_filters import cmp

    client.set_policy(tenant.id, LEVEL)
    bad = User(user_name="bad")
    bad.extensions.update({"urn:acme:ext": {"level": "high"}})
    with pytest.raises(InvalidArgument) as exc:
        client.create_user(tenant.id, bad, ctx=SCIM)
    assert exc.value.field == "level" and "integer" in str(exc.value)
    ok = User(user_name="ok")
    ok.extensions.update({"urn:acme:ext": {"level": 3}})
    client.create_user(tenant.id, ok, ctx=SCIM)
    found = client.list_users(tenant.id, filter=cmp("level", "gt", 1, schema="urn:acme:ext"))
    assert [u.user_name for u in found.users] == ["ok"]
    retyped = TenantPolicy()
    retyped.CopyFrom(LEVEL)
    retyped.extension_schemas[0].attributes[0].type = "string"
    with pytest.raises(InvalidArgument) as change:
        client.set_policy(tenant.id, retyped)
    assert "cannot change" in str(change.value)


def test_policy_delete_runs_even_when_admin_edits_are_refused(
    client: IdentityClient, tenant: Tenant
) -> None:
    """Review finding: an admin's group change that triggered the last-role delete failed."""
    client.create_role(tenant.id, "Admin")
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[GroupRoleRule(pattern="R_{role}")],
            on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DELETE,
            local_edits=LocalEdits.LOCAL_EDITS_REFUSED,
        ),
    )
    u = client.create_user(tenant.id, User(user_name="ada"), ctx=SCIM)
    g = client.create_group(
        tenant.id, Group(display_name="R_Admin", members=[Member(value=u.meta.id)]), ctx=SCIM
    )
    client.update_group(tenant.id, g.meta.id, remove_members=[u.meta.id], ctx=ADMIN)
    assert client.list_users(tenant.id).total_results == 0


def test_required_tenant_attributes_are_enforced(client: IdentityClient, tenant: Tenant) -> None:
    client.set_policy(
        tenant.id,
        TenantPolicy(
            extension_schemas=[
                ExtensionSchema(
                    schema=CORE,
                    resource_type="User",
                    attributes=[SchemaAttribute(name="costCode", type="string", required=True)],
                ),
                ExtensionSchema(
                    schema="urn:acme:hr",
                    resource_type="User",
                    attributes=[SchemaAttribute(name="badge", type="string", required=True)],
                ),
            ]
        ),
    )
    with pytest.raises(InvalidArgument) as exc:
        client.create_user(tenant.id, User(user_name="no-code"), ctx=SCIM)
    assert exc.value.field == "costCode" and "required" in str(exc.value)
    u = User(user_name="with-code")
    u.extensions.update({CORE: {"costCode": "C1"}})
    client.create_user(tenant.id, u, ctx=SCIM)  # urn:acme:hr not used: badge not needed
    u2 = User(user_name="hr")
    u2.extensions.update({CORE: {"costCode": "C2"}, "urn:acme:hr": {"floor": 3}})
    with pytest.raises(InvalidArgument) as hr:
        client.create_user(tenant.id, u2, ctx=SCIM)
    assert hr.value.field == "badge"
    assert client.jit_provision(tenant.id, email="first@sign.in").created  # before the IdP knows


def test_each_read_sees_its_tenants_current_policy(client: IdentityClient, tenant: Tenant) -> None:
    """A parsed policy (and the filter catalog made from it) is kept per stored policy
    and shared by tenants that store the same one: a change is seen by the next
    read, and only in its own tenant."""
    from ..core.test_filters import cmp

    other = client.create_tenant(f"{tenant.name}-twin")
    for t in (tenant, other):
        client.set_policy(t.id, LEVEL)
        u = User(user_name=f"{t.name}-u")
        u.extensions.update({"urn:acme:ext": {"level": 2}})
        client.create_user(t.id, u, ctx=SCIM)
        assert (
            len(client.list_users(t.id, filter=cmp("level", "eq", 2, schema="urn:acme:ext")).users)
            == 1
        )
    ranked = TenantPolicy()
    ranked.CopyFrom(LEVEL)
    ranked.extension_schemas[0].attributes.add(name="rank", type="string")
    client.set_policy(tenant.id, ranked)
    by_rank = cmp("rank", "eq", "x", schema="urn:acme:ext")
    assert client.list_users(tenant.id, filter=by_rank).users == []  # known at once
    with pytest.raises(InvalidArgument):
        client.list_users(other.id, filter=by_rank)  # not in the other tenant
    assert [a.name for a in client.get_policy(other.id).extension_schemas[0].attributes] == [
        "level"
    ]
    assert [a.name for a in client.get_policy(tenant.id).extension_schemas[0].attributes] == [
        "level",
        "rank",
    ]


def test_jit_finds_the_user_by_any_unique_key_of_its_own_tenant_only(
    client: IdentityClient, tenant: Tenant
) -> None:
    """Under the email identifier a sign-in matches an existing user by an email
    (whatever its userName) or by its userName (whatever the email), case-
    insensitively; a user of another tenant with the same name is never matched."""
    client.set_policy(
        tenant.id, TenantPolicy(unique_identifier=UniqueIdentifier.UNIQUE_IDENTIFIER_EMAIL)
    )
    ada = client.create_user(
        tenant.id,
        User(user_name="ada.l", emails=[MultiValue(value="alias@example.com", type="work")]),
        ctx=SCIM,
    )
    by_email = client.jit_provision(tenant.id, user_name="someone-new", email="ALIAS@example.com")
    assert not by_email.created and by_email.user.meta.id == ada.meta.id
    by_name = client.jit_provision(tenant.id, user_name="Ada.L", email="other@example.com")
    assert not by_name.created and by_name.user.meta.id == ada.meta.id

    other = client.create_tenant(f"jit-other-{tenant.name[-8:]}")
    theirs = client.create_user(other.id, User(user_name="grace.h"), ctx=SCIM)
    mine = client.jit_provision(tenant.id, user_name="grace.h", email="grace@example.com")
    assert mine.created and mine.user.meta.id != theirs.meta.id
    assert mine.user.user_name == "grace.h"


def test_jit_matches_whichever_of_several_keys_is_taken(
    client: IdentityClient, tenant: Tenant
) -> None:
    """A sign-in with a userName and an email looks up both keys: it finds a user
    by its userName when the email is new, and a user whose userName is the email
    when that user has no email value. Twelve of each, since which key a broken
    lookup would try first depends on the process's string hash seed."""
    client.set_policy(
        tenant.id, TenantPolicy(unique_identifier=UniqueIdentifier.UNIQUE_IDENTIFIER_EMAIL)
    )
    for i in range(12):
        named = client.create_user(tenant.id, User(user_name=f"person-{i}"), ctx=SCIM)
        found = client.jit_provision(
            tenant.id, user_name=f"Person-{i}", email=f"new-{i}@example.com"
        )
        assert not found.created and found.user.meta.id == named.meta.id, i
        mailed = client.create_user(tenant.id, User(user_name=f"mail-{i}@example.com"), ctx=SCIM)
        found = client.jit_provision(
            tenant.id, user_name=f"fresh-{i}", email=f"MAIL-{i}@example.com"
        )
        assert not found.created and found.user.meta.id == mailed.meta.id, i
    assert client.list_users(tenant.id).total_results == 24
