"""The gateway as the policy tests' IdP talks to it: the real app against the real
core of tests/conftest.py (both databases)."""

from __future__ import annotations

from typing import Any

import pytest

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..gateway.conftest import ScimClient, core_client


@pytest.fixture
def app(client: IdentityClient) -> Any:
    return create_app(Settings(max_page_size=50, default_page_size=20), core_client(client.target))


@pytest.fixture
def scim(app: Any, tenant: Tenant, token: str) -> ScimClient:
    """The IdP: SCIM under /scim/v2/{tenant}/ with the tenant's bearer token."""
    return ScimClient(app, f"/scim/v2/{tenant.name}", token)
