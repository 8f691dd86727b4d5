"""Where a tenant's SCIM connector is reached: the one definition of the gateway's
base URLs, shared by the gateway (which serves them), identityctl and the admin
console (which show them to the admin who configures the IdP)."""

from __future__ import annotations

from typing import NamedTuple

#: The gateway's SCIM root (RFC 7644 §3.2 leaves the base URL to the provider).
SCIM_PATH = "/scim/v2"


class ScimUrls(NamedTuple):
    #: The tenant in the path: what an IdP is configured with.
    by_name: str
    #: The same connector by the tenant's id (stable across renames).
    by_id: str
    #: No tenant in the path: the bearer token names it.
    by_token: str


def scim_urls(public_base: str, tenant_name: str, tenant_id: str) -> ScimUrls:
    """The SCIM base URLs of a tenant behind a gateway whose public URL (scheme,
    host and any path prefix, no /scim/v2) is `public_base`."""
    root = public_base.strip().rstrip("/") + SCIM_PATH
    return ScimUrls(f"{root}/{tenant_name}", f"{root}/{tenant_id}", root)
