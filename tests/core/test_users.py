"""Users: CRUD, uniqueness (also under races), versions, events, bad input."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, text

from identity_service.storage.db import normalise_url
from scim_identity_client import (
    AlreadyExists,
    IdentityClient,
    InvalidArgument,
    NotFound,
    VersionMismatch,
)
from scim_identity_client.types import (
    Address,
    EnterpriseUser,
    ErrorReason,
    Manager,
    MultiValue,
    Name,
    Tenant,
    User,
)


def ada(**kw: object) -> User:
    u = User(
        user_name="Ada.Lovelace@example.com",
        external_id="okta-00u1",
        name=Name(given_name="Ada", family_name="Lovelace"),
        display_name="Ada Lovelace",
        emails=[MultiValue(value="ada@example.com", type="work", primary=True)],
        addresses=[Address(locality="London", country="GB", type="work")],
        enterprise=EnterpriseUser(employee_number="1815", department="Analytics"),
    )
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(u, k).extend(v)
        else:
            setattr(u, k, v)
    return u


def test_create_and_get(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, ada())
    assert uuid.UUID(u.meta.id) and u.meta.version == 1
    assert u.active  # absent active means true
    assert u.meta.created == u.meta.last_modified
    got = client.get_user(tenant.id, u.meta.id)
    assert got == u
    assert got.enterprise.employee_number == "1815"
    assert got.addresses[0].locality == "London"


def test_username_unique_case_insensitively(client: IdentityClient, tenant: Tenant) -> None:
    client.create_user(tenant.id, ada())
    with pytest.raises(AlreadyExists) as exc:
        client.create_user(tenant.id, User(user_name="ADA.LOVELACE@EXAMPLE.COM"))
    assert exc.value.reason == ErrorReason.ERROR_REASON_UNIQUENESS
    assert exc.value.field == "userName"


def test_same_username_in_two_tenants(client: IdentityClient, tenant: Tenant) -> None:
    other = client.create_tenant(f"t-{uuid.uuid4().hex[:10]}")
    client.create_user(tenant.id, ada())
    client.create_user(other.id, ada())


def test_racing_creates_yield_one_user(client: IdentityClient, tenant: Tenant) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        try:
            client.create_user(
                tenant.id, User(user_name="Racer@Example.com" if i % 2 else "racer@EXAMPLE.com")
            )
            results.append("ok")
        except AlreadyExists:
            results.append("conflict")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert client.list_users(tenant.id).total_results == 1


def test_replace_bumps_version_and_checks_it(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, ada())
    changed = User()
    changed.CopyFrom(u)
    changed.title = "Countess"
    changed.ClearField("addresses")  # replace semantics: absent means removed
    v2 = client.replace_user(tenant.id, changed, expected_version=1)
    assert v2.meta.version == 2 and v2.title == "Countess" and not v2.addresses
    with pytest.raises(VersionMismatch) as exc:
        client.replace_user(tenant.id, changed, expected_version=1)
    assert exc.value.detail.current_version == 2
    same = client.replace_user(tenant.id, v2)  # no change: no new version
    assert same.meta.version == 2


def test_rename_to_taken_username_is_conflict(client: IdentityClient, tenant: Tenant) -> None:
    client.create_user(tenant.id, User(user_name="grace@example.com"))
    u = client.create_user(tenant.id, ada())
    u.user_name = "GRACE@example.com"
    with pytest.raises(AlreadyExists):
        client.replace_user(tenant.id, u)
    assert client.get_user(tenant.id, u.meta.id).user_name == "Ada.Lovelace@example.com"


def test_rename_case_only_is_allowed(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, ada())
    u.user_name = "ada.lovelace@example.com"
    assert client.replace_user(tenant.id, u).user_name == "ada.lovelace@example.com"


def test_deactivated_user_is_still_found(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, ada())
    u.active = False
    client.replace_user(tenant.id, u)
    got = client.get_user(tenant.id, u.meta.id)
    assert got.active is False
    assert client.list_users(tenant.id).total_results == 1


def test_delete(client: IdentityClient, tenant: Tenant) -> None:
    u = client.create_user(tenant.id, ada())
    client.delete_user(tenant.id, u.meta.id)
    with pytest.raises(NotFound):
        client.get_user(tenant.id, u.meta.id)
    with pytest.raises(NotFound):
        client.delete_user(tenant.id, u.meta.id)
    client.create_user(tenant.id, ada())  # the userName is free again


def test_bad_input_changes_nothing(client: IdentityClient, tenant: Tenant) -> None:
    before = client.get_revision(tenant.id).revision
    for bad, field in (
        (User(user_name=""), "userName"),
        (User(user_name="   "), "userName"),
        (User(user_name="x" * 513), "userName"),
        (User(user_name="ok", emails=[MultiValue(value="e" * 600)]), "emails.value"),
    ):
        with pytest.raises(InvalidArgument) as exc:
            client.create_user(tenant.id, bad)
        assert exc.value.reason == ErrorReason.ERROR_REASON_INVALID_VALUE
        assert exc.value.field == field
    assert client.get_revision(tenant.id).revision == before
    assert client.list_users(tenant.id).total_results == 0


def test_unknown_tenant_and_malformed_ids(client: IdentityClient, tenant: Tenant) -> None:
    with pytest.raises(NotFound) as exc:
        client.create_user(str(uuid.uuid4()), ada())
    assert exc.value.field == "tenant_id"
    with pytest.raises(NotFound):
        client.create_user("not-a-uuid", ada())
    for bad_id in ("", "123", "../etc/passwd", str(uuid.uuid4())):
        with pytest.raises(NotFound):
            client.get_user(tenant.id, bad_id)


def test_users_are_isolated_by_tenant(client: IdentityClient, tenant: Tenant) -> None:
    other = client.create_tenant(f"t-{uuid.uuid4().hex[:10]}")
    u = client.create_user(tenant.id, ada())
    with pytest.raises(NotFound):
        client.get_user(other.id, u.meta.id)
    with pytest.raises(NotFound):
        client.delete_user(other.id, u.meta.id)
    assert client.list_users(other.id).total_results == 0


def test_manager_reference_round_trips(client: IdentityClient, tenant: Tenant) -> None:
    boss = client.create_user(tenant.id, User(user_name="boss"))
    u = client.create_user(
        tenant.id,
        User(user_name="worker", enterprise=EnterpriseUser(manager=Manager(value=boss.meta.id))),
    )
    assert client.get_user(tenant.id, u.meta.id).enterprise.manager.value == boss.meta.id


def test_nothing_stored_but_a_row_per_value(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    u = client.create_user(
        tenant.id,
        ada(phone_numbers=[MultiValue(value="+44 1", type="work")]),
    )
    u.ClearField("emails")
    client.replace_user(tenant.id, u)
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as conn:
        attrs = (
            conn.execute(
                text(
                    "SELECT attr FROM user_values v JOIN users u ON u.pk = v.user_pk "
                    "WHERE u.id = :id"
                ),
                {"id": u.meta.id},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert sorted(attrs) == ["addresses", "phoneNumbers"]


def test_nul_characters_and_deep_json_are_refused(client: IdentityClient, tenant: Tenant) -> None:
    from scim_identity_client.types import Group

    before = client.get_revision(tenant.id).revision
    with pytest.raises(InvalidArgument) as exc:
        client.create_user(tenant.id, User(user_name="a\x00b"))
    assert exc.value.field == "userName"
    with pytest.raises(InvalidArgument):
        client.create_user(tenant.id, User(user_name="ok", emails=[MultiValue(value="x\x00")]))
    deep: dict[str, object] = {"leaf": "x"}
    for _ in range(30):
        deep = {"n": deep}
    u = User(user_name="deep")
    u.extensions.update({"urn:example:ext": deep})
    with pytest.raises(InvalidArgument) as deep_exc:
        client.create_user(tenant.id, u)
    assert "nested deeper" in str(deep_exc.value)
    ok = User(user_name="shallow")
    ok.extensions.update({"urn:example:ext": {"a": {"b": [1, "two", {"c": True}]}}})
    created = client.create_user(tenant.id, ok)
    assert client.get_user(tenant.id, created.meta.id).extensions == ok.extensions
    with pytest.raises(InvalidArgument):
        client.create_group(tenant.id, Group(display_name="g\x00"))
    with pytest.raises(InvalidArgument):
        client.replace_user(tenant.id, created, expected_version=-1)
    assert client.get_revision(tenant.id).revision == before + 1  # only the shallow user
