"""The one table of who may call what (identity_service.edge.auth.METHODS) and the
bearer protocol's keys, read from the contract (bearer.proto)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace

import pytest

import scim_identity_api.v1
from identity_service.edge.auth import BOTH, GATEWAY, METHODS, NOBODY, SUBSCRIBER, Access
from scim_identity_api import metadata
from scim_identity_api.v1 import bearer_pb2, tenants_pb2, users_pb2
from scim_identity_client import CallContext, IdentityClient, PermissionDenied
from scim_identity_client.types import Tenant

READ_ONLY = tenants_pb2.TOKEN_SCOPE_READ_ONLY


def _contract_methods() -> set[str]:
    names = set()
    for info in pkgutil.iter_modules(scim_identity_api.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"scim_identity_api.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return names


def test_the_table_names_every_rpc_of_the_contract_and_nothing_else() -> None:
    assert set(METHODS) == _contract_methods()


def test_roles_and_scopes_as_the_table_says() -> None:
    assert Access(GATEWAY, write=True).scopes == {
        tenants_pb2.TOKEN_SCOPE_FULL,
        tenants_pb2.TOKEN_SCOPE_USERS_ONLY,
    }
    assert Access(BOTH, groups=True).scopes == {tenants_pb2.TOKEN_SCOPE_FULL, READ_ONLY}
    assert METHODS["/identity.v1.ChangeService/Watch"].roles == SUBSCRIBER
    assert METHODS["/identity.v1.TenantService/CreateTenant"].roles == NOBODY
    assert METHODS["/identity.v1.UserService/GetUser"].roles == BOTH


def test_metadata_keys_come_from_the_contract() -> None:
    keys = [
        v.GetOptions().Extensions[bearer_pb2.key]
        for v in bearer_pb2.MetadataKey.DESCRIPTOR.values
        if v.number
    ]
    assert len(set(keys)) == len(keys) == len(bearer_pb2.MetadataKey.DESCRIPTOR.values) - 1
    assert metadata.BEARER_KEY == "identity-bearer"
    # Binary trailers must say so in their key (gRPC: `-bin` values are bytes).
    assert metadata.CALLER_KEY.endswith("-bin")


def test_a_write_request_of_a_read_only_token_is_refused_even_its_reads(
    client: IdentityClient, tenant: Tenant
) -> None:
    """`identity-intent: write`: the gateway's PATCH that reads, then finds nothing to
    change, and its up-front AuthenticateToken, are refused as the write would be."""
    created = client.create_user(tenant.id, users_pb2.User(user_name="iris"))
    secret = client.issue_token(tenant.id, scope=READ_ONLY).secret
    reading = CallContext(bearer=secret)
    assert client.get_user("", created.meta.id, ctx=reading).user_name == "iris"
    assert client.authenticate(secret).token.scope == READ_ONLY
    writing = replace(reading, write=True)
    with pytest.raises(PermissionDenied, match="read-only"):
        client.get_user("", created.meta.id, ctx=writing)
    with pytest.raises(PermissionDenied, match="read-only"):
        client.authenticate(secret, ctx=CallContext(write=True))
    full = client.issue_token(tenant.id).secret
    assert client.get_user("", created.meta.id, ctx=CallContext(bearer=full, write=True))
