"""Tokens, connector state and the operations history in the core, over a real
gRPC server on SQLite and PostgreSQL, and through `identityctl`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format, timestamp_pb2

from identity_service.changes.compaction import run_history_retention
from identity_service.settings import Settings
from scim_identity_api.v1 import changes_pb2, history_pb2, policy_pb2, tenants_pb2
from scim_identity_client import (
    FailedPrecondition,
    IdentityClient,
    NotFound,
    Unauthenticated,
)
from scim_identity_client.cli import main as identityctl
from scim_identity_client.types import Group, Tenant, User

from ..support import ServiceThread, eventually

H = history_pb2


def _events(client: IdentityClient, tenant_id: str) -> list[changes_pb2.ChangeEvent]:
    """Every event of the tenant so far."""
    last = client.get_revision(tenant_id).revision
    out: list[changes_pb2.ChangeEvent] = []
    w = client.watch(tenant_id, since=0)
    for ev in w:
        out.append(ev)
        if ev.revision >= last:
            break
    w.close()
    return out


def test_token_works_until_revoked_and_fails_on_the_next_call(
    client: IdentityClient, tenant: Tenant
) -> None:
    issued = client.issue_token(tenant.name)
    for _ in range(3):
        assert client.authenticate(issued.secret, tenant=tenant.name).token.id == issued.token.id
    client.revoke_token(tenant.name, issued.token.id)
    with pytest.raises(Unauthenticated):
        client.authenticate(issued.secret, tenant=tenant.name)


def test_third_live_token_is_refused(client: IdentityClient, tenant: Tenant) -> None:
    client.issue_token(tenant.id)
    client.issue_token(tenant.id)
    with pytest.raises(FailedPrecondition) as exc:
        client.issue_token(tenant.id)
    assert "2 live tokens" in exc.value.message
    assert len(client.list_tokens(tenant.id)) == 2


def test_tokens_record_creation_last_use_expiry_and_scope(
    client: IdentityClient, tenant: Tenant
) -> None:
    expires = timestamp_pb2.Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(days=3))
    issued = client.issue_token(
        tenant.id, scope=tenants_pb2.TOKEN_SCOPE_READ_ONLY, expires=expires, description="ro"
    )
    client.authenticate(issued.secret)
    # last_used is written off the call, in the next batch (edge.token_uses).
    eventually(lambda: client.list_tokens(tenant.id)[0].HasField("last_used"), 10, "last_used")
    (tok,) = client.list_tokens(tenant.id)
    assert tok.scope == tenants_pb2.TOKEN_SCOPE_READ_ONLY
    assert tok.HasField("created") and tok.HasField("last_used") and tok.expires == expires
    assert issued.secret.startswith("scim_") and tok.prefix == issued.secret[: len(tok.prefix)]


def test_rotate_at_the_limit_is_atomic_and_the_old_token_fails_at_once(
    client: IdentityClient, tenant: Tenant
) -> None:
    old = client.issue_token(tenant.id, scope=tenants_pb2.TOKEN_SCOPE_USERS_ONLY, description="o")
    other = client.issue_token(tenant.id)
    before = client.get_revision(tenant.id).revision
    rotated = client.rotate_token(tenant.id, revoke_token_id=old.token.id)
    # Inherits what it replaces; both changes are one transaction (consecutive revisions).
    assert rotated.token.scope == tenants_pb2.TOKEN_SCOPE_USERS_ONLY
    assert rotated.token.description == "o"
    assert rotated.revoked.id == old.token.id and rotated.revoked.HasField("revoked")
    with pytest.raises(Unauthenticated):
        client.authenticate(old.secret)
    assert client.authenticate(rotated.secret).token.id == rotated.token.id
    assert client.authenticate(other.secret).token.id == other.token.id
    assert {t.id for t in client.list_tokens(tenant.id)} == {rotated.token.id, other.token.id}
    evs = _events(client, tenant.id)[-2:]
    assert [e.type for e in evs] == [
        changes_pb2.EVENT_TYPE_TOKEN_REVOKED,
        changes_pb2.EVENT_TYPE_TOKEN_ISSUED,
    ]
    assert [e.revision for e in evs] == [before + 1, before + 2]


def test_rotate_naming_an_unknown_token_changes_nothing(
    client: IdentityClient, tenant: Tenant
) -> None:
    client.issue_token(tenant.id)
    client.issue_token(tenant.id)
    with pytest.raises(NotFound):
        client.rotate_token(tenant.id, revoke_token_id=str(uuid.uuid4()))
    with pytest.raises(FailedPrecondition):  # without revoking, the limit holds
        client.rotate_token(tenant.id)
    assert len(client.list_tokens(tenant.id)) == 2


def test_identityctl_rotate_uses_one_transaction(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    old = client.issue_token(tenant.name)
    client.issue_token(tenant.name)
    target = client.target
    assert (
        identityctl(["--target", target, "token", "rotate", tenant.name, "--revoke", old.token.id])
        == 0
    )
    out = capsys.readouterr()
    secret = out.out.strip().splitlines()[-1]
    assert f"revoked {old.token.id}" in out.err
    assert client.authenticate(secret, tenant=tenant.name).tenant.id == tenant.id
    with pytest.raises(Unauthenticated):
        client.authenticate(old.secret)


def _policy_with_everything() -> policy_pb2.TenantPolicy:
    return json_format.ParseDict(
        {
            "groupRoleRules": [{"pattern": "App_{role}"}],
            "onScimDelete": "DELETE_ACTION_DEACTIVATE",
            "extensionSchemas": [
                {
                    "schema": "urn:example:params:scim:schemas:extension:acme:2.0:User",
                    "name": "Acme",
                    "resourceType": "User",
                    "attributes": [{"name": "badge", "type": "string"}],
                }
            ],
            "userMappings": [
                {"field": "login", "source": {"attribute": "userName"}},
            ],
        },
        policy_pb2.TenantPolicy(),
    )


def test_delete_connector_keeps_users_and_groups(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    client.set_policy(tenant.id, _policy_with_everything())
    user = client.create_user(tenant.id, User(user_name="kept@example.com"))
    group = client.create_group(tenant.id, Group(display_name="App_admin"))
    t1 = client.issue_token(tenant.id)
    t2 = client.issue_token(tenant.id)
    assert identityctl(["--target", client.target, "tenant", "delete-connector", tenant.name]) == 0
    assert "2 tokens revoked" in capsys.readouterr().out
    after = client.get_tenant(tenant.id)
    assert not after.active
    for secret in (t1.secret, t2.secret):
        with pytest.raises(Unauthenticated):
            client.authenticate(secret)
    pol = client.get_policy(tenant.id)
    assert not pol.group_role_rules and not pol.extension_schemas and not pol.user_mappings
    # Settings that are not the connector's configuration stay.
    assert pol.on_scim_delete == policy_pb2.DELETE_ACTION_DEACTIVATE
    assert client.get_user(tenant.id, user.meta.id).user_name == "kept@example.com"
    assert client.get_group(tenant.id, group.meta.id).display_name == "App_admin"
    # A new connector: activate and issue a token.
    client.update_tenant(tenant.id, active=True)
    assert client.authenticate(client.issue_token(tenant.id).secret).tenant.id == tenant.id


def test_delete_connector_with_purge_deletes_users_and_groups(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    u = client.create_user(tenant.id, User(user_name="gone@example.com"))
    client.create_group(tenant.id, Group(display_name="g", members=[{"value": u.meta.id}]))
    args = ["--target", client.target, "tenant", "delete-connector", tenant.name, "--purge"]
    assert identityctl(args) == 1  # --purge wants --yes
    assert client.list_users(tenant.id).total_results == 1
    assert identityctl([*args, "--yes"]) == 0
    capsys.readouterr()
    assert client.list_users(tenant.id).total_results == 0
    assert client.list_groups(tenant.id).total_results == 0
    types = [e.type for e in _events(client, tenant.id)]
    assert changes_pb2.EVENT_TYPE_USER_DELETED in types
    assert changes_pb2.EVENT_TYPE_GROUP_DELETED in types


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(when)
    return t


def test_history_answers_each_filter(
    client: IdentityClient, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        # (minutes after base, method, kind, resource type, status, scimType)
        (0, "POST", H.OPERATION_KIND_CREATE, "User", 201, ""),
        (1, "POST", H.OPERATION_KIND_CREATE, "User", 409, "uniqueness"),
        (2, "PATCH", H.OPERATION_KIND_UPDATE, "Group", 200, ""),
        (3, "DELETE", H.OPERATION_KIND_DELETE, "User", 404, ""),
        (4, "GET", H.OPERATION_KIND_SEARCH, "User", 200, ""),
        (5, "POST", H.OPERATION_KIND_SEARCH, "Group", 400, "invalidFilter"),
    ]
    for minute, method, kind, rtype, status, scim_type in rows:
        client.record_operation(
            H.Operation(
                tenant_id=tenant.id,
                time=_ts(base + timedelta(minutes=minute)),
                token_id=str(uuid.uuid4()),
                method=method,
                kind=kind,
                resource_type=rtype,
                resource_id=str(uuid.uuid4()),
                status=status,
                scim_type=scim_type,
                detail="boom" if status >= 400 else "",
                duration_ms=1.5,
                request_id=f"req-{minute}",
            )
        )

    def ids(**kw: object) -> list[str]:
        ops = client.list_operations(tenant.id, **kw).operations  # type: ignore[arg-type]
        return [op.request_id for op in ops]

    assert ids() == [f"req-{m}" for m in (5, 4, 3, 2, 1, 0)]  # newest first
    assert ids(kinds=[H.OPERATION_KIND_CREATE]) == ["req-1", "req-0"]
    assert ids(kinds=[H.OPERATION_KIND_UPDATE, H.OPERATION_KIND_DELETE]) == ["req-3", "req-2"]
    assert ids(kinds=[H.OPERATION_KIND_SEARCH]) == ["req-5", "req-4"]
    assert ids(resource_type="Group") == ["req-5", "req-2"]
    assert ids(outcome=H.OUTCOME_FILTER_SUCCESS) == ["req-4", "req-2", "req-0"]
    assert ids(outcome=H.OUTCOME_FILTER_ERROR) == ["req-5", "req-3", "req-1"]
    assert ids(since=_ts(base + timedelta(minutes=2)), until=_ts(base + timedelta(minutes=4))) == [
        "req-3",
        "req-2",
    ]
    assert ids(
        kinds=[H.OPERATION_KIND_CREATE], outcome=H.OUTCOME_FILTER_ERROR, resource_type="User"
    ) == ["req-1"]
    page1 = client.list_operations(tenant.id, page_size=4)
    page2 = client.list_operations(tenant.id, page_size=4, page_token=page1.next_page_token)
    assert [o.request_id for o in (*page1.operations, *page2.operations)] == ids()
    err = client.list_operations(tenant.id, outcome=H.OUTCOME_FILTER_ERROR).operations[0]
    assert (err.status, err.scim_type, err.detail, err.method) == (
        400,
        "invalidFilter",
        "boom",
        "POST",
    )

    # The same filters through identityctl.
    args = ["--target", client.target, "history", tenant.name]
    assert identityctl([*args, "--kind", "create", "--status", "error"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "req=req-1" in out[0] and "uniqueness" in out[0]
    assert identityctl([*args, "--resource-type", "Group", "--since", "2026-01-01T00:03:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("req=")[1].split()[0] for line in out] == ["req-5"]
    assert identityctl([*args, "--kind", "search", "--status", "success"]) == 0
    assert "req=req-4" in capsys.readouterr().out


@pytest.fixture
def history_db_url(fresh_database_url: str) -> str:
    """A database of its own: retention deletes across tenants, so what it
    deleted is only exactly known where no other test writes."""
    return fresh_database_url


def _service(url: str, clock: Callable[[], datetime] | None = None, **kw: int) -> ServiceThread:
    settings = Settings(
        database_url=url,
        listen="127.0.0.1:0",
        db_pool_size=2,  # PostgreSQL connections are shared by every suite here
        event_retention_seconds=0,
        history_retention_seconds=kw.get("history_retention_seconds", 0),
        compaction_interval_seconds=3600,  # one pass at start, the next never in a test
    )
    service = ServiceThread(settings, clock=clock)
    service.start()
    return service


def _record_ages(client: IdentityClient, now: datetime) -> dict[str, list[str]]:
    """Records dated relative to `now` in three tenants; their ids newest first."""
    ages = {"a": (100, 1), "b": (91, 0), "c": (89,)}  # days before now
    out: dict[str, list[str]] = {}
    for name, days in ages.items():
        t = client.create_tenant(f"ret-{name}-{uuid.uuid4().hex[:8]}")
        for age in days:
            client.record_operation(
                H.Operation(
                    tenant_id=t.id,
                    time=_ts(now - timedelta(days=age)),
                    method="GET",
                    kind=H.OPERATION_KIND_READ,
                    resource_type="User",
                    status=200,
                    request_id=f"{name}-{age}d",
                )
            )
        out[t.id] = [f"{name}-{age}d" for age in sorted(days)]
    return out


def _remaining(client: IdentityClient, tenants: dict[str, list[str]]) -> dict[str, list[str]]:
    return {tid: [o.request_id for o in client.list_operations(tid).operations] for tid in tenants}


def test_history_retention_deletes_only_old_records(history_db_url: str) -> None:
    service = _service(history_db_url)
    try:
        with IdentityClient(f"127.0.0.1:{service.port}") as client:
            now = datetime.now(UTC)
            tenants = _record_ages(client, now)
            db = service.service.db  # type: ignore[union-attr]
            assert run_history_retention(db, 0, now) == 0  # 0 keeps everything
            assert _remaining(client, tenants) == tenants
            # Exactly the two records past 90 days, one per tenant, in batches of one.
            assert run_history_retention(db, 90 * 24 * 3600, now, batch=1) == 2
            a, b, c = tenants
            assert _remaining(client, tenants) == {a: ["a-1d"], b: ["b-0d"], c: ["c-89d"]}
            assert run_history_retention(db, 90 * 24 * 3600, now) == 0  # nothing left to do
    finally:
        service.stop()


def test_the_server_applies_history_retention_on_its_clock(history_db_url: str) -> None:
    """The server's own compaction pass deletes what is past retention as of its
    clock, not the wall clock: a server clock 5 days ahead."""
    writer = _service(history_db_url)  # retention off: the records stay while written
    try:
        with IdentityClient(f"127.0.0.1:{writer.port}") as client:
            now = datetime.now(UTC)
            tenants = _record_ages(client, now)
            later = now + timedelta(days=5)
            compacting = _service(
                history_db_url, clock=lambda: later, history_retention_seconds=90 * 24 * 3600
            )
            try:
                compactor = compacting.service.compactor  # type: ignore[union-attr]
                eventually(lambda: compactor.passes >= 1, 30, "the first retention pass")
            finally:
                compacting.stop()
            # Cutoff: 85 days before the wall clock, so c-89d goes too (the wall
            # clock would keep it); a-1d and b-0d stay.
            a, b, c = tenants
            assert _remaining(client, tenants) == {a: ["a-1d"], b: ["b-0d"], c: []}
    finally:
        writer.stop()


def test_secrets_never_appear_in_events_or_history(client: IdentityClient, tenant: Tenant) -> None:
    issued = client.issue_token(tenant.id)
    rotated = client.rotate_token(tenant.id, revoke_token_id=issued.token.id)
    client.reset_connector(tenant.id)
    for ev in _events(client, tenant.id):
        blob = ev.SerializeToString() + json_format.MessageToJson(ev).encode()
        for secret in (issued.secret, rotated.secret):
            assert secret.encode() not in blob
            assert secret[len("scim_") + 6 :].encode() not in blob
    for op in client.list_operations(tenant.id).operations:
        assert issued.secret not in str(op) and rotated.secret not in str(op)
