"""Authentication stays a read (issue #15): a token's `last_used` is recorded off
the request path, batched, so a GET never waits on the write lock. With every
write blocked (SQLite: another connection holds BEGIN IMMEDIATE; PostgreSQL: the
tokens table locked against writes), a GET with a token whose last_used is stale
is answered (before, it waited for the lock and got 503 once its deadline
passed); once writes are possible again, the use is recorded. Against the real
core, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

from scim_gateway.app import create_app
from scim_gateway.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from ..support import eventually, writes_held
from .conftest import ScimClient, core_client


def test_a_get_with_a_stale_token_does_not_wait_for_writes(
    settings: Settings,
    identity_target: str,
    database_url: str,
    client: IdentityClient,
    tenant: Tenant,
) -> None:
    issued = client.issue_token(tenant.id)  # never used: its last_used is stale
    # A short deadline: a GET that waited on the lock would answer 504 in 3 s.
    quick = dataclasses.replace(settings, request_timeout_seconds=3)
    scim = ScimClient(
        create_app(quick, core_client(identity_target)), f"/scim/v2/{tenant.name}", issued.secret
    )
    # Reads go on (ACCESS SHARE); every write of a token waits.
    with writes_held(database_url, "LOCK TABLE tokens IN EXCLUSIVE MODE"):
        r = scim.get("/Users")
        assert r.status_code == 200, r.text
        assert not client.list_tokens(tenant.id)[0].HasField("last_used")
    # Recorded once writes can be made again.
    eventually(lambda: client.list_tokens(tenant.id)[0].HasField("last_used"), 40, "last_used")
