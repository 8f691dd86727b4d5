"""SCIM_PUBLIC_URL: behind a proxy the gateway cannot see the URL clients use, so
every URL it writes (Location, meta.location, the ServiceProviderConfig's and
ResourceTypes' locations) starts with the configured one (RFC 7644 §3.1, §3.2)."""

from __future__ import annotations

from typing import Any

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .conftest import ScimClient, core_client

PUBLIC = "https://scim.example.com/idp"


def _urls(doc: Any) -> list[str]:
    """Every meta.location in a document, wherever it sits."""
    found: list[str] = []
    if isinstance(doc, dict):
        meta = doc.get("meta")
        if isinstance(meta, dict) and "location" in meta:
            found.append(meta["location"])
        for v in doc.values():
            found += _urls(v)
    elif isinstance(doc, list):
        for v in doc:
            found += _urls(v)
    return found


def test_every_url_written_starts_with_the_public_url(
    client: IdentityClient, tenant: Tenant, token: str
) -> None:
    settings = Settings.from_env({"SCIM_PUBLIC_URL": PUBLIC + "/"})
    app = create_app(settings, core_client(client.target))
    scim = ScimClient(app, f"/scim/v2/{tenant.name}", token)
    base = f"{PUBLIC}/scim/v2/{tenant.name}"

    r = scim.post("/Users", {"schemas": [], "userName": "pub@example.com"})
    assert r.status_code == 201, r.text
    uid = r.json["id"]
    assert r.headers["location"] == f"{base}/Users/{uid}"
    assert r.json["meta"]["location"] == f"{base}/Users/{uid}"
    g = scim.create_group("public", [uid])
    assert g["meta"]["location"] == f"{base}/Groups/{g['id']}"

    answers = [
        scim.get("/Users"),
        scim.get(f"/Users/{uid}"),
        scim.get("/Groups"),
        scim.get("/ServiceProviderConfig"),
        scim.get("/ResourceTypes"),
        scim.get("/Schemas"),
    ]
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers]
    locations = [url for r in answers for url in _urls(r.json)]
    assert len(locations) >= 6, locations
    assert all(url.startswith(base + "/") for url in locations), locations

    # Without it, URLs follow the request's own host.
    local = ScimClient(
        create_app(Settings(), core_client(client.target)), f"/scim/v2/{tenant.name}", token
    )
    r = local.get(f"/Users/{uid}")
    assert r.status_code == 200, r.text
    loc = r.json["meta"]["location"]
    assert loc.endswith(f"/scim/v2/{tenant.name}/Users/{uid}") and not loc.startswith(PUBLIC)
