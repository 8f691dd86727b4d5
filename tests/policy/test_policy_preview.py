"""A policy change's preview (PreviewPolicy) and saving exactly what was previewed
(SetPolicy's expected_digest), over gRPC on both databases; and tenants created with
their connector inactive, so rules and mappings are set before the IdP's first call."""

from __future__ import annotations

import uuid

import pytest

from scim_identity_client import (
    CallContext,
    IdentityClient,
    InvalidArgument,
    VersionMismatch,
)
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import (
    Group,
    GroupRoleRule,
    LastRoleAction,
    Member,
    PolicyEffect,
    RoleSource,
    Tenant,
    TenantPolicy,
    User,
)

SCIM = CallContext(actor_kind="token", actor_id="tok")
ADMIN = CallContext(actor_kind="admin", actor_id="console:ada")


def _rule(org: str) -> GroupRoleRule:
    return GroupRoleRule(pattern="BigPanda_{org}_BPRole_{role}", org=org)


def scim_roles(client: IdentityClient, tenant: Tenant, user_id: str) -> list[str]:
    u = client.get_user(tenant.id, user_id)
    return sorted(r.role for r in u.role_assignments if r.source == RoleSource.ROLE_SOURCE_SCIM)


def effects(preview: object) -> list[tuple[str, list[str], list[str], bool, bool]]:
    found: list[PolicyEffect] = list(preview.effects)  # type: ignore[attr-defined]
    return [
        (e.user_name, list(e.roles_gained), list(e.roles_lost), e.deactivated, e.deleted)
        for e in found
    ]


@pytest.fixture
def people(client: IdentityClient, tenant: Tenant) -> dict[str, str]:
    """ada in Acme's Admin group, bob in its Viewer group, cy in none; roles defined."""
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


def test_the_preview_names_each_change_writes_nothing_and_saving_applies_it(
    client: IdentityClient, tenant: Tenant, people: dict[str, str]
) -> None:
    policy = TenantPolicy(
        group_role_rules=[_rule("Acme")],
        on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DEACTIVATE,
    )
    revision = client.get_revision(tenant.id).revision
    preview = client.preview_policy(tenant.id, policy, ctx=ADMIN)
    assert effects(preview) == [
        ("ada", ["Admin"], [], False, False),
        ("bob", ["Viewer"], [], False, False),
    ]
    assert preview.effect_count == 2 and preview.revision == revision
    assert preview.current == TenantPolicy()  # what it would replace
    assert len(preview.digest) == 64
    # Nothing was written: no revision, no policy, no role.
    assert client.get_revision(tenant.id).revision == revision
    assert client.get_policy(tenant.id) == TenantPolicy()
    assert all(scim_roles(client, tenant, uid) == [] for uid in people.values())
    # The same preview again: the same digest (nothing moved).
    assert client.preview_policy(tenant.id, policy).digest == preview.digest

    client.set_policy(tenant.id, policy, expected_digest=preview.digest, ctx=ADMIN)
    assert client.get_policy(tenant.id) == policy
    assert scim_roles(client, tenant, people["ada"]) == ["Admin"]
    assert scim_roles(client, tenant, people["bob"]) == ["Viewer"]
    assert scim_roles(client, tenant, people["cy"]) == []

    # Another org: both lose their role, and the last-role action deactivates them.
    other = TenantPolicy(
        group_role_rules=[_rule("Globex")],
        on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DEACTIVATE,
    )
    preview = client.preview_policy(tenant.id, other)
    assert preview.current == policy
    assert effects(preview) == [
        ("ada", [], ["Admin"], True, False),
        ("bob", [], ["Viewer"], True, False),
    ]
    assert client.get_user(tenant.id, people["ada"]).active  # still: nothing written
    # ... or deletes them, named all the same.
    deleting = TenantPolicy(
        group_role_rules=[_rule("Globex")],
        on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DELETE,
    )
    assert effects(client.preview_policy(tenant.id, deleting)) == [
        ("ada", [], ["Admin"], False, True),
        ("bob", [], ["Viewer"], False, True),
    ]
    assert client.list_users(tenant.id).total_results == 3
    client.set_policy(tenant.id, other, expected_digest=preview.digest)
    assert not client.get_user(tenant.id, people["ada"]).active
    assert not client.get_user(tenant.id, people["bob"]).active
    assert client.get_user(tenant.id, people["cy"]).active


def test_saving_refuses_a_stale_preview_and_changes_nothing(
    client: IdentityClient, tenant: Tenant, people: dict[str, str]
) -> None:
    policy = TenantPolicy(group_role_rules=[_rule("Acme")])
    preview = client.preview_policy(tenant.id, policy)
    assert [e[0] for e in effects(preview)] == ["ada", "bob"]
    # cy joins the Admin group since: saving would now change cy too.
    (admins,) = [
        g for g in client.list_groups(tenant.id).groups if g.display_name.endswith("Admin")
    ]
    client.update_group(tenant.id, admins.meta.id, add_members=[people["cy"]], ctx=SCIM)
    revision = client.get_revision(tenant.id).revision
    with pytest.raises(VersionMismatch, match="preview it again"):
        client.set_policy(tenant.id, policy, expected_digest=preview.digest)
    assert client.get_policy(tenant.id) == TenantPolicy()
    assert client.get_revision(tenant.id).revision == revision
    assert all(scim_roles(client, tenant, uid) == [] for uid in people.values())

    # A fresh preview names cy, and saves.
    fresh = client.preview_policy(tenant.id, policy)
    assert [e[0] for e in effects(fresh)] == ["ada", "bob", "cy"]
    # Not with a different policy under the same digest, though.
    with pytest.raises(VersionMismatch):
        client.set_policy(
            tenant.id,
            TenantPolicy(group_role_rules=[_rule("Acme")], default_role="Viewer"),
            expected_digest=fresh.digest,
        )
    # Nor after the stored policy changed, even when no user's roles would differ.
    unrelated = TenantPolicy(groups_disabled=True)
    client.set_policy(tenant.id, unrelated)
    moved = TenantPolicy(group_role_rules=[_rule("Acme")], groups_disabled=False)
    with pytest.raises(VersionMismatch):
        client.set_policy(tenant.id, moved, expected_digest=fresh.digest)
    assert client.get_policy(tenant.id) == unrelated
    again = client.preview_policy(tenant.id, moved)
    client.set_policy(tenant.id, moved, expected_digest=again.digest)
    assert scim_roles(client, tenant, people["cy"]) == ["Admin"]


def test_a_preview_refuses_what_saving_refuses(
    client: IdentityClient, tenant: Tenant, people: dict[str, str]
) -> None:
    for bad in (
        TenantPolicy(group_role_rules=[GroupRoleRule(pattern="BigPanda_Admins")]),
        TenantPolicy(default_role="Nobody"),
    ):
        with pytest.raises(InvalidArgument) as previewed:
            client.preview_policy(tenant.id, bad)
        with pytest.raises(InvalidArgument) as saved:
            client.set_policy(tenant.id, bad)
        assert str(previewed.value) == str(saved.value)
    assert client.get_policy(tenant.id) == TenantPolicy()


def test_a_large_preview_answers_some_effects_and_counts_them_all(
    client: IdentityClient, tenant: Tenant, people: dict[str, str]
) -> None:
    client.create_role(tenant.id, "Member")
    policy = TenantPolicy(default_role="Member")
    preview = client.preview_policy(tenant.id, policy, max_effects=2)
    assert preview.effect_count == 3
    assert effects(preview) == [
        ("ada", ["Member"], [], False, False),
        ("bob", ["Member"], [], False, False),
    ]
    # The digest covers every effect, answered or not: it is the full preview's.
    assert preview.digest == client.preview_policy(tenant.id, policy).digest
    client.set_policy(tenant.id, policy, expected_digest=preview.digest)
    assert scim_roles(client, tenant, people["cy"]) == ["Member"]


def test_a_tenant_can_start_with_its_connector_inactive(
    client: IdentityClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    t = client.create_tenant(name, inactive=True)
    assert not t.active and not client.get_tenant(t.id).active
    assert client.create_tenant(f"{name}-on").active  # the default stays active
    code = identityctl(["--target", client.target, "tenant", "create", f"{name}-cli", "--inactive"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not client.get_tenant(out.strip()).active
