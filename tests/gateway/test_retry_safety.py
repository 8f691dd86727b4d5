"""A retried POST is safe (issue #15): when a create's answer is lost after its
commit (its deadline passed while the commit ran), the IdP retries the same body
and gets the user it created, 201, not a 409 for a user it believes was never
created. Nothing is created twice and no event is written again. SQLite and
PostgreSQL."""

from __future__ import annotations

from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .conftest import PATCH_OP, USER_SCHEMA, ScimClient, assert_scim_error


def test_a_retried_identical_create_answers_the_same_user(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    body = {
        "schemas": [USER_SCHEMA],
        "userName": "ada@example.com",
        "name": {"givenName": "Ada"},
        "emails": [{"value": "ada@example.com", "primary": True}],
    }
    first = scim.post("/Users", body)
    assert first.status_code == 201, first.text
    revision = client.get_revision(tenant.id).revision
    again = scim.post("/Users", body)
    assert again.status_code == 201, again.text
    assert again.json["id"] == first.json["id"]
    assert again.headers["location"] == first.headers["location"]
    assert client.get_revision(tenant.id).revision == revision  # nothing written
    assert client.list_users(tenant.id).total_results == 1


def test_a_different_create_of_a_taken_name_is_still_409(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    user = scim.create_user("ada@example.com", title="Countess")
    other = {"schemas": [USER_SCHEMA], "userName": "ada@example.com", "title": "Queen"}
    assert_scim_error(scim.post("/Users", other), 409, "uniqueness")
    # Once the user changed, even the first body is a conflict: it is no retry.
    patch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "title", "value": "x"}],
    }
    assert scim.patch(f"/Users/{user['id']}", patch).status_code == 200
    first = {"schemas": [USER_SCHEMA], "userName": "ada@example.com", "title": "Countess"}
    assert_scim_error(scim.post("/Users", first), 409, "uniqueness")
    assert client.list_users(tenant.id).total_results == 1
