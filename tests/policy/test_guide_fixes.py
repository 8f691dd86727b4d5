"""What the setup guides promise and the product got wrong (issue #17), each tried as
the guide's admin or IdP would: through the gateway against a real core, on SQLite
and PostgreSQL (tests/conftest.py), and through identityctl where the guide uses it.

- Panther: a SCIM create of someone who never signed in is 403 with the core's
  reason; a default role for users Okta sends without pantherRole; /Groups off.
- Banyan: the primary email unique per tenant (409 uniqueness); a JIT sign-in
  resolves to the active user.
- identityctl: `token rotate` rotates without --revoke; `tenant show` prints the
  SCIM base URLs; `user show`, `group show`; `role revoke` of a SCIM-managed role.
"""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

from scim_identity_client import IdentityClient, InvalidArgument, PermissionDenied, Unauthenticated
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import Tenant, TenantPolicy

from ..gateway.conftest import GROUP_SCHEMA, USER_SCHEMA, ScimClient, assert_scim_error
from .test_vendors import LOCAL_ROLE, SCIM_ROLE, configure, patch, roles


def _user(user_name: str, *emails: tuple[str, bool]) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "emails": [{"value": v, "primary": p, "type": "work"} for v, p in emails],
    }


def _with(client: IdentityClient, tenant: Tenant, **changes: Any) -> TenantPolicy:
    """The tenant's policy with `changes` (fields of TenantPolicy) set."""
    pol = TenantPolicy()
    pol.CopyFrom(client.get_policy(tenant.id))
    for name, value in changes.items():
        setattr(pol, name, value)
    return client.set_policy(tenant.id, pol)


# -- Panther -------------------------------------------------------------------------------------


def test_panther_create_before_sign_in_is_403_with_the_cores_reason(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "panther", ("Admin", "ReadOnlyAnalyst"))
    r = scim.post("/Users", _user("grace@panther.io", ("grace@panther.io", True)))
    assert_scim_error(r, 403)
    # Okta's admin reads why, not a generic scope message.
    assert "sign in first" in r.json["detail"], r.json
    assert "grace@panther.io" in r.json["detail"] and "scope" not in r.json["detail"]
    assert client.list_users(tenant.id).total_results == 0
    # After the first sign-in, the same create adopts the user.
    jit = client.jit_provision(tenant.id, email="grace@panther.io")
    r = scim.post("/Users", _user("grace@panther.io", ("grace@panther.io", True)))
    assert r.status_code == 201 and r.json["id"] == jit.user.meta.id, r.text


def test_panther_default_role_for_users_without_panther_role(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "panther", ("Admin", "ReadOnlyAnalyst", "Billing"))
    ada = client.jit_provision(tenant.id, email="ada@panther.io").user.meta.id
    assert roles(client, tenant, ada) == set()  # no default yet
    # Setting the default applies it at once to the users the rules give nothing.
    _with(client, tenant, default_role="ReadOnlyAnalyst")
    assert roles(client, tenant, ada) == {("ReadOnlyAnalyst", SCIM_ROLE)}
    # A new sign-in gets it too, and Okta's push without pantherRole keeps it.
    bob = client.jit_provision(tenant.id, email="bob@panther.io").user.meta.id
    assert roles(client, tenant, bob) == {("ReadOnlyAnalyst", SCIM_ROLE)}
    r = scim.patch(f"/Users/{bob}", patch({"op": "replace", "value": {"displayName": "Bob"}}))
    assert r.status_code == 200, r.text
    assert roles(client, tenant, bob) == {("ReadOnlyAnalyst", SCIM_ROLE)}
    # A pantherRole replaces the default; removing it brings the default back.
    r = scim.patch(f"/Users/{bob}", patch({"op": "replace", "value": {"pantherRole": "Admin"}}))
    assert r.status_code == 200, r.text
    assert roles(client, tenant, bob) == {("Admin", SCIM_ROLE)}
    r = scim.patch(f"/Users/{bob}", patch({"op": "remove", "path": "pantherRole"}))
    assert r.status_code == 200, r.text
    assert roles(client, tenant, bob) == {("ReadOnlyAnalyst", SCIM_ROLE)}
    # Local roles are not rules: the default still applies beside them.
    client.assign_role(tenant.id, ada, "Billing")
    assert roles(client, tenant, ada) == {("ReadOnlyAnalyst", SCIM_ROLE), ("Billing", LOCAL_ROLE)}
    # Clearing the default takes it back from those who held it by default only.
    _with(client, tenant, default_role="")
    assert roles(client, tenant, ada) == {("Billing", LOCAL_ROLE)}
    assert roles(client, tenant, bob) == set()


def test_default_role_must_be_defined(client: IdentityClient, tenant: Tenant) -> None:
    with pytest.raises(InvalidArgument) as exc:
        client.set_policy(tenant.id, TenantPolicy(default_role="Nobody"))
    assert "Nobody" in exc.value.message and exc.value.field == "default_role"
    assert client.get_policy(tenant.id) == TenantPolicy()


def test_panther_groups_off_is_404_for_any_token(
    client: IdentityClient, tenant: Tenant, scim: ScimClient, app: Any
) -> None:
    group = scim.create_group("Engineering")  # before the switch: groups work
    configure(client, tenant, "panther", ("Admin",))
    _with(client, tenant, groups_disabled=True)
    users_only = client.issue_token(tenant.id, scope=3).secret  # TOKEN_SCOPE_USERS_ONLY
    for token in (scim.token, users_only):
        idp = ScimClient(app, scim.base, token)
        for method, path, body in (
            ("GET", "/Groups", None),
            ("GET", f"/Groups/{group['id']}", None),
            ("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "New"}),
            ("DELETE", f"/Groups/{group['id']}", None),
        ):
            assert_scim_error(idp.request(method, path, body), 404)
    # Users are untouched by the switch.
    client.jit_provision(tenant.id, email="ada@panther.io")
    r = scim.get("/Users", params={"filter": 'userName eq "ada@panther.io"'})
    assert r.status_code == 200 and r.json["totalResults"] == 1, r.text
    # The admin still sees the group (the switch is about the IdP's SCIM).
    assert client.get_group(tenant.id, group["id"]).display_name == "Engineering"
    # Off again: the endpoint is back.
    _with(client, tenant, groups_disabled=False)
    assert scim.get(f"/Groups/{group['id']}").status_code == 200


# -- Banyan --------------------------------------------------------------------------------------


def test_banyan_primary_email_unique_per_tenant(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "banyan")
    # Without the switch two users may share an email (RFC 7643 does not make it unique).
    a = scim.post("/Users", _user("ann", ("shared@banyan.io", True)))
    b = scim.post("/Users", _user("ann2", ("shared@banyan.io", True)))
    assert a.status_code == b.status_code == 201
    scim.delete(f"/Users/{b.json['id']}")

    _with(client, tenant, unique_email=True)
    # Same primary email, another case: 409 uniqueness (RFC 7644 §3.3), nothing created.
    r = scim.post("/Users", _user("ann3", ("Shared@Banyan.IO", True)))
    assert_scim_error(r, 409, "uniqueness")
    assert "shared@banyan.io" in r.json["detail"]
    # The first email counts as primary when none is marked.
    assert_scim_error(
        scim.post("/Users", _user("ann4", ("shared@banyan.io", False))), 409, "uniqueness"
    )
    assert client.list_users(tenant.id).total_results == 1
    # A secondary email may be another's primary one: only primaries identify.
    c = scim.post("/Users", _user("cid", ("cid@banyan.io", True), ("shared@banyan.io", False)))
    assert c.status_code == 201, c.text
    # A replace that takes another's primary email is refused, and changes nothing.
    body = _user("cid", ("shared@banyan.io", True))
    assert_scim_error(scim.put(f"/Users/{c.json['id']}", body), 409, "uniqueness")
    assert scim.get(f"/Users/{c.json['id']}").json["emails"][0]["value"] == "cid@banyan.io"
    # So is a PATCH (Okta's way) that makes it cid's primary email.
    r = scim.patch(
        f"/Users/{c.json['id']}",
        patch(
            {
                "op": "replace",
                "path": "emails",
                "value": [{"value": "SHARED@banyan.io", "primary": True}],
            }
        ),
    )
    assert_scim_error(r, 409, "uniqueness")
    # Its own email, unchanged, is of course fine.
    r = scim.put(f"/Users/{c.json['id']}", {**c.json, "displayName": "Cid"})
    assert r.status_code == 200, r.text
    # A JIT sign-in under another userName with a taken email is refused as well.
    _with(client, tenant, unique_identifier=0)  # match by userName only
    with pytest.raises(Exception) as exc:
        client.jit_provision(tenant.id, user_name="other", email="SHARED@banyan.io")
    assert "already another user's primary email" in str(exc.value)


def test_banyan_jit_sign_in_resolves_to_the_active_user(
    client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "banyan")
    # Okta deactivated Dana's first account and pushed a new one with her email.
    old = scim.post("/Users", _user("dana.old", ("dana@banyan.io", True)))
    assert old.status_code == 201, old.text
    r = scim.patch(f"/Users/{old.json['id']}", patch({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200 and r.json["active"] is False, r.text
    new = scim.post("/Users", _user("dana", ("dana@banyan.io", True)))
    assert new.status_code == 201, new.text
    found = client.jit_provision(tenant.id, email="DANA@banyan.io")
    assert not found.created
    assert found.user.meta.id == new.json["id"] and found.user.active


# -- identityctl ---------------------------------------------------------------------------------


def ctl(target: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = identityctl(["--target", target, *args])
    return code, out.getvalue(), err.getvalue()


def test_token_rotate_without_revoke_rotates_at_the_limit(
    identity_target: str, client: IdentityClient, tenant: Tenant
) -> None:
    first = client.issue_token(tenant.id, description="okta")
    second = client.issue_token(tenant.id)
    code, out, err = ctl(identity_target, "token", "rotate", tenant.name)
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    # The successor works; the oldest live token is dead at once; the other lives on.
    assert client.authenticate(secret, tenant=tenant.name).token.description == "okta"
    with pytest.raises(Unauthenticated):
        client.authenticate(first.secret, tenant=tenant.name)
    assert client.authenticate(second.secret).token.id == second.token.id
    assert f"revoked {first.token.id}" in err
    assert len(client.list_tokens(tenant.id)) == 2
    # No live token: refused with a line saying what to do, nothing issued.
    for t in client.list_tokens(tenant.id):
        client.revoke_token(tenant.id, t.id)
    code, out, err = ctl(identity_target, "token", "rotate", tenant.name)
    assert code == 1 and "token issue" in err and "Traceback" not in err
    assert client.list_tokens(tenant.id) == []


def test_tenant_show_prints_the_scim_base_urls(
    identity_target: str, client: IdentityClient, tenant: Tenant
) -> None:
    code, out, err = ctl(
        identity_target,
        "tenant",
        "show",
        tenant.name,
        "--scim-base-url",
        "https://scim.example.com/",
    )
    assert code == 0, err
    assert f"SCIM base URL: https://scim.example.com/scim/v2/{tenant.name}\n" in out
    assert f"https://scim.example.com/scim/v2/{tenant.id}" in out
    assert "https://scim.example.com/scim/v2  (the bearer token names the tenant)" in out
    code, out, _ = ctl(identity_target, "tenant", "show", tenant.id)
    assert f"http://127.0.0.1:8080/scim/v2/{tenant.name}" in out and "IDENTITY_SCIM_BASE_URL" in out


def test_user_and_group_show(
    identity_target: str, client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    client.create_role(tenant.id, "Admin")
    user = scim.create_user(
        "ada@example.com", emails=[{"value": "ada@example.com", "primary": True}]
    )
    client.assign_role(tenant.id, user["id"], "Admin")
    group = scim.create_group("Engineering", [user["id"]])
    code, out, err = ctl(identity_target, "user", "show", tenant.name, user["id"])
    assert code == 0, err
    assert f"id:           {user['id']}" in out and "userName:     ada@example.com" in out
    assert "email:        ada@example.com (primary)" in out and "managed by:   scim" in out
    assert f"group:        {group['id']}  Engineering" in out
    assert "role:         Admin  (local)" in out
    code, out, err = ctl(identity_target, "group", "show", tenant.name, group["id"])
    assert code == 0, err
    assert "displayName:  Engineering" in out and "members:      1" in out
    assert f"  user  {user['id']}" in out
    code, out, err = ctl(identity_target, "group", "list", tenant.name)
    assert code == 0 and group["id"] in out and "members=1" in out
    code, _, err = ctl(identity_target, "user", "show", tenant.name, str(uuid.uuid4()))
    assert code == 1 and "no user" in err and "Traceback" not in err


def test_role_revoke_says_when_the_role_is_scim_managed(
    identity_target: str, client: IdentityClient, tenant: Tenant, scim: ScimClient
) -> None:
    configure(client, tenant, "bigpanda", ("Admin",))
    user = scim.create_user("ada@acme.com")
    scim.create_group("BigPanda_Acme_Corp_BPRole_Admin", [user["id"]])
    assert roles(client, tenant, user["id"]) == {("Admin", SCIM_ROLE)}
    code, _, err = ctl(identity_target, "role", "revoke", tenant.name, user["id"], "Admin")
    assert code == 1 and "SCIM-managed" in err and "identity provider" in err, err
    assert roles(client, tenant, user["id"]) == {("Admin", SCIM_ROLE)}
    with pytest.raises(PermissionDenied):
        client.revoke_role(tenant.id, user["id"], "Admin")
    # A role the user does not hold at all stays a plain "not found".
    client.create_role(tenant.id, "Other")
    code, _, err = ctl(identity_target, "role", "revoke", tenant.name, user["id"], "Other")
    assert code == 1 and "does not hold" in err
