"""A request refused because the tenant's connector is deactivated is recorded in
that tenant's history (its token is valid), and so is one made with a revoked token
of the tenant (401); an unknown token is recorded nowhere."""

from __future__ import annotations

from scim_identity_client import IdentityClient
from scim_identity_client.types import OperationKind, OutcomeFilter, Tenant

from .conftest import ScimClient, assert_scim_error


def test_inactive_connector_refusals_are_in_the_history(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    client.update_tenant(tenant.id, active=False)
    r = scim.get("/Users")
    assert_scim_error(r, 403)
    assert_scim_error(scim.post("/Groups", {"displayName": "g"}), 403)
    errors = client.list_operations(
        tenant.id, outcome=OutcomeFilter.OUTCOME_FILTER_ERROR
    ).operations
    recorded = {(o.method, o.kind, o.resource_type, o.status) for o in errors}
    # Recorded as what the request was (a list is a search), as when it succeeds.
    assert ("GET", OperationKind.OPERATION_KIND_SEARCH, "User", 403) in recorded
    assert ("POST", OperationKind.OPERATION_KIND_CREATE, "Group", 403) in recorded
    assert all("connector is inactive" in o.detail and o.token_id for o in errors)
    assert r.headers["X-Request-Id"] in {o.request_id for o in errors}
    before = len(client.list_operations(tenant.id).operations)
    scim.token = "scim_not-a-real-token"
    assert_scim_error(scim.get("/Users"), 401)
    assert len(client.list_operations(tenant.id).operations) == before


def test_a_revoked_tokens_refusals_are_in_the_history(
    scim: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    (token,) = client.list_tokens(tenant.id)
    client.revoke_token(tenant.id, token.id)
    listed = scim.get("/Users")
    assert_scim_error(listed, 401)
    assert_scim_error(scim.post("/Bulk", {"Operations": []}), 401)
    assert_scim_error(scim.get("/Users/2819c223-7f76-453a-919d-413861904646"), 401)
    refused = client.list_operations(tenant.id, status=401).operations
    recorded = sorted((o.method, o.resource_type, o.token_id) for o in refused)
    assert recorded == [
        ("GET", "User", token.id),
        ("GET", "User", token.id),
        ("POST", "Bulk", token.id),
    ], recorded
    assert listed.headers["X-Request-Id"] in {o.request_id for o in refused}
    # Sent to another tenant's URL: recorded neither there nor here.
    other = client.create_tenant(f"{tenant.name}-b")
    scim.base = f"/scim/v2/{other.name}"
    assert_scim_error(scim.get("/Users"), 401)
    assert client.list_operations(other.id).operations == []
    assert len(client.list_operations(tenant.id).operations) == len(refused)
