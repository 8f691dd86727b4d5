"""A role's provenance (ListAssignments with include_grants), over gRPC on both
databases: which group and rule, the role attribute, or the default role grants each
SCIM-managed role, computed by the same rules a sync applies; local roles have none."""

from __future__ import annotations

import pytest

from scim_identity_client import IdentityClient, InvalidArgument, NotFound
from scim_identity_client.types import (
    AttributePath,
    AttributeRoleRule,
    ExtensionSchema,
    Group,
    GroupRoleRule,
    Member,
    RoleGrant,
    RoleGrantKind,
    RoleSource,
    SchemaAttribute,
    Tenant,
    TenantPolicy,
    User,
)

from .test_policy_core import BIGPANDA, CORE, SCIM

PANTHER_ROLE = AttributePath(schema=CORE, attribute="pantherRole")


def _grants(client: IdentityClient, tenant: Tenant, user_id: str) -> dict[str, list[RoleGrant]]:
    """The SCIM-managed roles' grants; local assignments must carry none."""
    out = {}
    for a in client.list_assignments(tenant.id, user_id=user_id, include_grants=True):
        if a.source == RoleSource.ROLE_SOURCE_LOCAL:
            assert not a.grants, a
        else:
            out[a.role] = list(a.grants)
    return out


def test_each_scim_role_names_the_groups_rules_and_attribute_that_grant_it(
    client: IdentityClient, tenant: Tenant
) -> None:
    for r in ("Admin", "Read Only", "Local Thing", "Viewer"):
        client.create_role(tenant.id, r)
    okta = GroupRoleRule(pattern="Okta-{role}")
    client.set_policy(
        tenant.id,
        TenantPolicy(
            group_role_rules=[BIGPANDA, okta],
            extension_schemas=[
                ExtensionSchema(
                    schema=CORE,
                    resource_type="User",
                    attributes=[SchemaAttribute(name="pantherRole", type="string")],
                )
            ],
            attribute_role=AttributeRoleRule(path=PANTHER_ROLE),
            default_role="Viewer",
        ),
    )
    u = User(user_name="ada")
    u.extensions.update({CORE: {"pantherRole": "Admin"}})
    ada = client.create_user(tenant.id, u, ctx=SCIM).meta.id
    client.assign_role(tenant.id, ada, "Local Thing", source=RoleSource.ROLE_SOURCE_LOCAL)
    client.assign_role(tenant.id, ada, "Read Only", source=RoleSource.ROLE_SOURCE_LOCAL)
    member = [Member(value=ada)]
    # (made out of name order: grants are listed by group name)
    ok = client.create_group(tenant.id, Group(display_name="Okta-Admin", members=member), ctx=SCIM)
    bp = client.create_group(
        tenant.id, Group(display_name="BigPanda_Acme_Corp_BPRole_Admin", members=member), ctx=SCIM
    )
    ro = client.create_group(
        tenant.id,
        Group(display_name="BigPanda_Acme_Corp_BPRole_Read_Only", members=member),
        ctx=SCIM,
    )
    client.create_group(  # another org: grants nothing
        tenant.id, Group(display_name="BigPanda_Other_BPRole_Admin", members=member), ctx=SCIM
    )
    G, A = RoleGrantKind.ROLE_GRANT_KIND_GROUP, RoleGrantKind.ROLE_GRANT_KIND_ATTRIBUTE
    assert _grants(client, tenant, ada) == {
        "Admin": [
            RoleGrant(
                kind=G,
                group_id=bp.meta.id,
                group_display_name="BigPanda_Acme_Corp_BPRole_Admin",
                pattern=BIGPANDA.pattern,
            ),
            RoleGrant(
                kind=G, group_id=ok.meta.id, group_display_name="Okta-Admin", pattern=okta.pattern
            ),
            RoleGrant(kind=A, attribute=PANTHER_ROLE),
        ],
        "Read Only": [
            RoleGrant(
                kind=G,
                group_id=ro.meta.id,
                group_display_name="BigPanda_Acme_Corp_BPRole_Read_Only",
                pattern=BIGPANDA.pattern,
            )
        ],
    }
    # The grants are those of the roles the user holds, as a sync gave them.
    held = {(a.role, a.source) for a in client.list_assignments(tenant.id, user_id=ada)}
    assert held == {
        ("Admin", RoleSource.ROLE_SOURCE_SCIM),
        ("Read Only", RoleSource.ROLE_SOURCE_SCIM),
        ("Read Only", RoleSource.ROLE_SOURCE_LOCAL),
        ("Local Thing", RoleSource.ROLE_SOURCE_LOCAL),
    }
    # Without include_grants: none (the cheap listing stays cheap).
    assert all(not a.grants for a in client.list_assignments(tenant.id, user_id=ada))
    # Someone no rule gives a role: the default role, said so.
    bob = client.create_user(tenant.id, User(user_name="bob"), ctx=SCIM).meta.id
    assert _grants(client, tenant, bob) == {
        "Viewer": [RoleGrant(kind=RoleGrantKind.ROLE_GRANT_KIND_DEFAULT_ROLE)]
    }


def test_include_grants_needs_one_existing_user(client: IdentityClient, tenant: Tenant) -> None:
    with pytest.raises(InvalidArgument) as exc:
        client.list_assignments(tenant.id, include_grants=True)
    assert exc.value.field == "include_grants"
    with pytest.raises(NotFound):  # not an id at all
        client.list_assignments(tenant.id, user_id="not-an-id", include_grants=True)
    with pytest.raises(NotFound):
        client.list_assignments(
            tenant.id, user_id="0190a6d4-0000-7000-8000-000000000000", include_grants=True
        )
    other = client.create_tenant(f"{tenant.name}-o")
    theirs = client.create_user(other.id, User(user_name="eve"), ctx=SCIM).meta.id
    with pytest.raises(NotFound):  # another tenant's user is no user here
        client.list_assignments(tenant.id, user_id=theirs, include_grants=True)
