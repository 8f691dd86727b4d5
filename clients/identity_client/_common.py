"""Pieces the sync and async clients share: request building and call metadata."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from identity.v1 import common_pb2, groups_pb2, tenants_pb2

#: gRPC's default reconnect backoff grows to two minutes; a service that restarts
#: should be found again within seconds (streams resume, the gateway recovers).
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

# Metadata keys the core reads. The actor is trusted only from authenticated
# service callers (the gateway); see docs/architecture.md.
REQUEST_ID_KEY = "x-request-id"
ACTOR_KEY = "identity-actor"


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-call facts the core records with the change: who asked, and which request."""

    request_id: str = ""
    #: "token", "admin" or "system".
    actor_kind: str = ""
    #: The token id or the admin's name.
    actor_id: str = ""
    #: Seconds; None uses the client's default.
    timeout: float | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = []
        if self.request_id:
            md.append((REQUEST_ID_KEY, self.request_id))
        if self.actor_kind:
            md.append((ACTOR_KEY, f"{self.actor_kind}:{self.actor_id}"))
        return tuple(md)


def tenant_ref(tenant: str) -> tenants_pb2.TenantRef:
    """A TenantRef from a tenant id (UUID) or name."""
    try:
        uuid.UUID(tenant)
    except ValueError:
        return tenants_pb2.TenantRef(name=tenant)
    return tenants_pb2.TenantRef(id=tenant)


def page(start_index: int | None, count: int | None, cursor: str | None) -> common_pb2.Page:
    """Index paging (start_index/count) or, when cursor is not None, cursor paging."""
    p = common_pb2.Page()
    if cursor is not None:
        p.use_cursor = True
        p.cursor = cursor
    elif start_index is not None:
        p.start_index = start_index
    if count is not None:
        p.count = count
    return p


def member(value: str | groups_pb2.Member) -> groups_pb2.Member:
    return value if isinstance(value, groups_pb2.Member) else groups_pb2.Member(value=value)
