"""Where things are reached: the one definition of the gateway's SCIM base URLs
(served by the gateway, shown by identityctl and the admin console to the admin who
configures the IdP) and of the admin console's sign-in link (served by the console,
printed by identityctl)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

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


#: The admin console's sign-in path: `{console}/signin?token={link secret}`.
SIGN_IN_PATH = "/signin"


def admin_sign_in_url(console_base: str, secret: str) -> str:
    """The URL a one-time admin link secret signs in with, on the console whose
    public URL is `console_base`."""
    return f"{console_base.strip().rstrip('/')}{SIGN_IN_PATH}?token={quote(secret, safe='')}"
