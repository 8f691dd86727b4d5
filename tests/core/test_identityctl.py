"""`identityctl` commands no other test runs: the whole `role` group, `tenant
activate/deactivate/update`, `user delete` (with and without a policy that keeps
users), `token issue --scope/--expires-in-days` and `history --status CODE
--request-id`. In-process (`main(argv)`)
against the real service on SQLite and PostgreSQL; each command's effect is read
back through the client, not from its output alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scim_identity_api.v1 import history_pb2, policy_pb2, tenants_pb2, users_pb2
from scim_identity_client import FailedPrecondition, IdentityClient, NotFound
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import Tenant


def _run(capsys: pytest.CaptureFixture[str], client: IdentityClient, *argv: str) -> str:
    code = identityctl(["--target", client.target, *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return out


def _user(client: IdentityClient, tenant: Tenant, name: str) -> str:
    return client.create_user(tenant.id, users_pb2.User(user_name=name)).meta.id


def test_role_group(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    uid = _user(client, tenant, "roles@example.com")
    assert (
        _run(capsys, client, "role", "create", tenant.name, "auditor", "--description", "reads")
        == "auditor\n"
    )
    _run(capsys, client, "role", "create", tenant.id, "admin")  # by id too
    listed = _run(capsys, client, "role", "list", tenant.name).splitlines()
    assert [line.split()[0] for line in listed] == ["admin", "auditor"]
    assert listed[1].split(None, 1)[1].strip() == "reads"

    _run(capsys, client, "role", "assign", tenant.name, uid, "auditor")
    _run(capsys, client, "role", "assign", tenant.name, uid, "admin")
    assigned = client.list_assignments(tenant.id, user_id=uid)
    assert sorted((a.role, a.source) for a in assigned) == [
        ("admin", users_pb2.ROLE_SOURCE_LOCAL),
        ("auditor", users_pb2.ROLE_SOURCE_LOCAL),
    ]
    lines = _run(capsys, client, "role", "assignments", tenant.name, "--role", "auditor")
    assert lines.split() == [uid, "auditor", "local"]
    by_user = _run(capsys, client, "role", "assignments", tenant.name, "--user", uid)
    assert len(by_user.splitlines()) == 2

    _run(capsys, client, "role", "revoke", tenant.name, uid, "admin")
    assert [a.role for a in client.list_assignments(tenant.id, user_id=uid)] == ["auditor"]
    _run(capsys, client, "role", "delete", tenant.name, "admin")
    assert [r.name for r in client.list_roles(tenant.id)] == ["auditor"]

    # A refusal is one clear line and exit 1, not a traceback.
    assert identityctl(["--target", client.target, "role", "assign", tenant.name, uid, "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("identityctl: ") and "Traceback" not in err


def test_tenant_activate_deactivate_update(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, client, "tenant", "deactivate", tenant.name)
    assert tenant.id in out and "inactive" in out
    assert not client.get_tenant(tenant.id).active
    secret = client.issue_token(tenant.id).secret
    with pytest.raises(FailedPrecondition):  # an inactive connector refuses its tokens
        client.authenticate(secret, tenant=tenant.name)

    out = _run(capsys, client, "tenant", "activate", tenant.id)
    assert tenant.id in out and "inactive" not in out
    assert client.get_tenant(tenant.id).active
    assert client.authenticate(secret, tenant=tenant.name).tenant.id == tenant.id

    new_name = f"Acme {uuid.uuid4().hex[:6]}"
    _run(capsys, client, "tenant", "update", tenant.name, "--display-name", new_name)
    t = client.get_tenant(tenant.id)
    assert (t.name, t.display_name) == (tenant.name, new_name)  # the name stays
    assert f"display name: {new_name}" in _run(capsys, client, "tenant", "show", tenant.name)


def test_user_delete_follows_the_policy_unless_hard(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = _user(client, tenant, "gone@example.com")
    assert _run(capsys, client, "user", "delete", tenant.name, gone) == "deleted\n"
    with pytest.raises(NotFound):
        client.get_user(tenant.id, gone)

    policy = client.get_policy(tenant.id)
    policy.on_scim_delete = policy_pb2.DELETE_ACTION_DEACTIVATE
    client.set_policy(tenant.id, policy)
    kept = _user(client, tenant, "kept@example.com")
    out = _run(capsys, client, "user", "delete", tenant.name, kept)
    assert out.startswith("deactivated")
    assert client.get_user(tenant.id, kept).active is False
    assert _run(capsys, client, "user", "delete", tenant.name, kept, "--hard") == "deleted\n"
    with pytest.raises(NotFound):
        client.get_user(tenant.id, kept)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("full", tenants_pb2.TOKEN_SCOPE_FULL),
        ("read-only", tenants_pb2.TOKEN_SCOPE_READ_ONLY),
        ("users-only", tenants_pb2.TOKEN_SCOPE_USERS_ONLY),
    ],
)
def test_token_issue_with_scope_and_expiry(
    client: IdentityClient,
    tenant: Tenant,
    capsys: pytest.CaptureFixture[str],
    scope: str,
    expected: int,
) -> None:
    before = datetime.now(UTC)
    out = _run(
        capsys, client, "token", "issue", tenant.name, "--scope", scope, "--expires-in-days", "3"
    )
    secret = out.splitlines()[-1]
    auth = client.authenticate(secret, tenant=tenant.name)
    assert auth.token.scope == expected
    expires = auth.token.expires.ToDatetime(tzinfo=UTC)
    # Three days from when the command ran (the CLI reads the clock; so do we).
    assert before + timedelta(days=3) <= expires <= datetime.now(UTC) + timedelta(days=3)
    listed = _run(capsys, client, "token", "list", tenant.name)
    assert f"scope={scope}" in listed and expires.strftime("%Y-%m-%d") in listed


def test_token_issue_without_expiry_never_expires(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _run(capsys, client, "token", "issue", tenant.name).splitlines()[-1]
    token = client.authenticate(secret, tenant=tenant.name).token
    assert not token.HasField("expires") and token.scope == tenants_pb2.TOKEN_SCOPE_FULL


def test_history_by_exact_status_and_request_id(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    ops = [
        history_pb2.Operation(
            tenant_id=tenant.id, method=m, kind=2, status=code, request_id=rid, token_id="t"
        )
        for m, code, rid in (("GET", 200, "ok-1"), ("GET", 401, "dead-1"), ("POST", 403, "off-1"))
    ]
    client.record_operations(ops)
    lines = _run(capsys, client, "history", tenant.name, "--status", "401").splitlines()
    assert len(lines) == 1 and " 401 " in lines[0] and "req=dead-1" in lines[0]
    lines = _run(capsys, client, "history", tenant.name, "--request-id", "off-1").splitlines()
    assert len(lines) == 1 and " 403 " in lines[0]
    assert len(_run(capsys, client, "history", tenant.name, "--status", "error").splitlines()) == 2
    for bad in ("4xx", "99", "600"):
        with pytest.raises(SystemExit):
            identityctl(["--target", client.target, "history", tenant.name, "--status", bad])
        assert "HTTP status" in capsys.readouterr().err
