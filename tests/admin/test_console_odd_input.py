"""Input that passed the console's first checks and then broke deeper (a review of
issue #17 found each as a 500 or a 503): numbers in other scripts or thousands of
digits long, dates that leave the calendar in UTC, JSON strings that are not Unicode,
integers written as 5.0, a NUL in a token's description. Each is a 4xx now, with
nothing changed, through the real console, gateway and core on both databases."""

from __future__ import annotations

import urllib.parse

import pytest

from scim_identity_client import IdentityClient, InvalidArgument
from scim_identity_client.types import Tenant

from ..support import Visitor
from .conftest import ApiClient, Stack, admin_session

HUGE = "9" * 5000  # past Python's 4,300-digit limit on int()


def test_page_numbers_that_int_refuses_are_a_400(
    admin_of: Visitor, tenant: Tenant, client: IdentityClient
) -> None:
    csrf = admin_of.get(f"/tenants/{tenant.name}/connector").csrf()
    for days in ("²", "٣", HUGE, "2.0"):
        form = {"csrf": csrf, "scope": "full", "expires_in_days": days}
        assert admin_of.post(f"/tenants/{tenant.name}/tokens", form).status == 400, days
    for start in ("²", HUGE, "0"):
        query = urllib.parse.urlencode({"start": start})
        assert admin_of.get(f"/tenants/{tenant.name}/directory?{query}").status == 400, start
    assert client.list_tokens(tenant.id) == []


def test_a_nul_in_a_token_description_is_refused_everywhere(
    admin_of: Visitor, tenant: Tenant, client: IdentityClient
) -> None:
    csrf = admin_of.get(f"/tenants/{tenant.name}/connector").csrf()
    form = {"csrf": csrf, "scope": "full", "description": "a\x00b"}
    assert admin_of.post(f"/tenants/{tenant.name}/tokens", form).status == 400
    # The core refuses it too (PostgreSQL's text cannot hold it: it was a 503 there).
    with pytest.raises(InvalidArgument):
        client.issue_token(tenant.id, description="a\x00b")
    assert client.list_tokens(tenant.id) == []


@pytest.mark.parametrize(
    "bound", ["since=0001-01-01T00:00%2B01:00", "until=9999-12-31T23:59-01:00"]
)
def test_history_times_outside_the_calendar_in_utc_are_refused(
    admin_of: Visitor, stack: Stack, client: IdentityClient, tenant: Tenant, bound: str
) -> None:
    assert admin_of.get(f"/tenants/{tenant.name}/history?{bound}").status == 400
    api = ApiClient(stack.console_url, bearer=admin_session(client, tenant.name))
    answer = api.get(f"/api/v1/tenants/{tenant.name}/operations?{bound}")
    assert answer.status == 422 and "out of range" in answer.message  # the API's bad value


def test_api_bodies_that_are_not_unicode_or_not_integers_are_refused(
    operator_api: ApiClient, tenant: Tenant, client: IdentityClient
) -> None:
    base = f"/api/v1/tenants/{tenant.name}"
    lone = "\ud800"  # json.dumps writes it as the escape \ud800: valid JSON, not Unicode
    for path, body in (
        (f"{base}/roles", {"name": lone}),
        ("/api/v1/tenants", {"name": f"{lone}x"}),
        (f"{base}/tokens", {"description": lone}),
        (f"{base}/tokens", {lone: "full"}),
    ):
        answer = operator_api.request("POST", path, body)
        assert answer.status == 400, (path, answer.raw)
        assert "Unicode" in answer.message
    for path, body in (
        (f"{base}/policy/preview", {"policy": {}, "max_effects": 5.0}),
        (f"{base}/tokens", {"expires_in_days": 2.0}),
    ):
        answer = operator_api.request("POST", path, body)
        assert answer.status == 422, (path, answer.raw)
    assert client.list_tokens(tenant.id) == []
    assert client.list_roles(tenant.id) == []
