"""Pieces the sync and async clients share: request building and call metadata."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from scim_identity_api.metadata import (
    ACTOR_KEY,
    AUTHORIZATION_KEY,
    BEARER_KEY,
    CALLER_KEY,
    COMMIT_DEADLINE_KEY,
    INTENT_KEY,
    REQUEST_ID_KEY,
    TENANT_KEY,
    WRITE_INTENT,
)
from scim_identity_api.v1 import (
    bearer_pb2,
    common_pb2,
    groups_pb2,
    history_pb2,
    tenants_pb2,
    users_pb2,
)

#: gRPC's default reconnect backoff grows to two minutes; a service that restarts
#: should be found again within seconds (streams resume, the gateway recovers).
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

#: Of a deadline, the part kept for a commit and its answer to arrive in time: at
#: most this many seconds...
COMMIT_MARGIN_SECONDS = 1.0
#: ...and at most this share of the time left when the call is sent.
COMMIT_MARGIN_SHARE = 0.2


def channel_options(options: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The options every client channel uses, then the caller's."""
    return [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        *RECONNECT_OPTIONS,
        *options,
    ]


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The service credential as call metadata (sent on every call, streams too)."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()


def channel_credentials(
    *,
    credentials: grpc.ChannelCredentials | None = None,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS channel credentials: `credentials` as given, else built from PEM files
    (`tls_ca_file` verifies the server, else the system roots; a cert and key
    present a client certificate for mTLS). None when nothing asks for TLS."""
    if credentials is not None:
        return credentials
    if not (tls_ca_file or tls_cert_file or tls_key_file):
        return None
    if bool(tls_cert_file) != bool(tls_key_file):
        raise ValueError("a client certificate needs both tls_cert_file and tls_key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls_ca_file).read_bytes() if tls_ca_file else None,
        private_key=Path(tls_key_file).read_bytes() if tls_key_file else None,
        certificate_chain=Path(tls_cert_file).read_bytes() if tls_cert_file else None,
    )


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
    #: time.monotonic() by which the call must be answered (instead of `timeout`).
    #: The core is told to begin committing only while enough of it is left for
    #: the commit and the answer to arrive in time (COMMIT_MARGIN_*); past that it
    #: rolls back and answers DEADLINE_EXCEEDED, so an answer that did not arrive
    #: in time almost always means nothing was committed.
    deadline: float | None = None
    #: A tenant's API token (e.g. the SCIM bearer) for the core to check within the
    #: call itself: the call then needs no tenant id, is refused unless the token
    #: is valid (for `tenant`, when given) and its scope allows it, and is
    #: attributed to that token (the actor fields are then ignored).
    bearer: str = field(default="", repr=False)
    #: With `bearer`: the tenant (name or id) the token must belong to.
    tenant: str = ""
    #: The call is made for a request that writes, though it may itself only read
    #: (bearer.proto, `identity-intent`): a read-only token, passed as `bearer` or
    #: checked by AuthenticateToken, is refused by the core as for a write.
    write: bool = False
    #: With `bearer`: called with what the core authenticated, even when the call
    #: itself fails after authenticating.
    on_authenticated: Callable[[Authenticated], None] | None = field(
        default=None, compare=False, repr=False
    )

    def call_timeout(self, default: float) -> float:
        """Seconds the call may take: what is left of the deadline, else `timeout`,
        else `default`."""
        if self.deadline is not None:
            return max(0.0, self.deadline - time.monotonic())
        return self.timeout if self.timeout is not None else default

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = []
        if self.deadline is not None:
            left = max(0.0, self.deadline - time.monotonic())
            commit_by = left - min(COMMIT_MARGIN_SECONDS, COMMIT_MARGIN_SHARE * left)
            md.append((COMMIT_DEADLINE_KEY, str(int(commit_by * 1000))))
        if self.request_id:
            md.append((REQUEST_ID_KEY, self.request_id))
        if self.actor_kind:
            md.append((ACTOR_KEY, f"{self.actor_kind}:{self.actor_id}"))
        if self.bearer:
            md.append((BEARER_KEY, self.bearer))
            if self.tenant:
                md.append((TENANT_KEY, self.tenant))
        if self.write:
            md.append((INTENT_KEY, WRITE_INTENT))
        return tuple(md)

    def report(self, trailing: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Passes the core's `identity-caller-bin` trailer (an AuthenticatedCaller) to
        on_authenticated."""
        if self.on_authenticated is None:
            return
        for key, value in trailing or ():
            if key == CALLER_KEY and isinstance(value, bytes):
                who = bearer_pb2.AuthenticatedCaller.FromString(value)
                self.on_authenticated(
                    Authenticated(who.tenant_id, who.token_id, who.scope, refused=who.refused)
                )
                return


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Which tenant and token a call's bearer authenticated as, and its scope."""

    tenant_id: str
    token_id: str
    #: identity.v1.TokenScope
    scope: int
    #: The tenant's token, but revoked or expired: the call was refused (the caller
    #: records the refusal in the tenant's history).
    refused: bool = False


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


def issue_token_request(
    tenant: str, description: str, scope: int, expires: timestamp_pb2.Timestamp | None
) -> tenants_pb2.IssueTokenRequest:
    """IssueToken's request, as both clients send it."""
    req = tenants_pb2.IssueTokenRequest(
        tenant=tenant_ref(tenant),
        description=description,
        # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
        scope=scope,  # type: ignore[arg-type]
    )
    if expires is not None:
        req.expires.CopyFrom(expires)
    return req


def member(value: str | groups_pb2.Member) -> groups_pb2.Member:
    return value if isinstance(value, groups_pb2.Member) else groups_pb2.Member(value=value)


# -- requests both clients send (built here once) -------------------------------------------------


def authenticate_request(secret: str, tenant: str | None) -> tenants_pb2.AuthenticateTokenRequest:
    req = tenants_pb2.AuthenticateTokenRequest(secret=secret)
    if tenant:
        req.tenant.CopyFrom(tenant_ref(tenant))
    return req


def delete_user_request(
    tenant_id: str, user_id: str, expected_version: int, hard: bool
) -> users_pb2.DeleteUserRequest:
    return users_pb2.DeleteUserRequest(
        tenant_id=tenant_id,
        id=user_id,
        expected_version=expected_version,
        mode=users_pb2.DELETE_MODE_HARD if hard else users_pb2.DELETE_MODE_POLICY,
    )


def get_group_request(
    tenant_id: str, group_id: str, include_members: bool, member_limit: int
) -> groups_pb2.GetGroupRequest:
    return groups_pb2.GetGroupRequest(
        tenant_id=tenant_id,
        id=group_id,
        include_members=include_members,
        member_limit=member_limit,
    )


def list_groups_request(
    tenant_id: str,
    filter: common_pb2.Filter | None,
    sort: common_pb2.Sort | None,
    page_: common_pb2.Page,
    include_members: bool,
) -> groups_pb2.ListGroupsRequest:
    return groups_pb2.ListGroupsRequest(
        tenant_id=tenant_id, filter=filter, sort=sort, page=page_, include_members=include_members
    )


def update_group_request(
    tenant_id: str,
    group_id: str,
    *,
    display_name: str | None,
    external_id: str | None,
    extensions: struct_pb2.Struct | None,
    clear_members: bool,
    add_members: Iterable[str | groups_pb2.Member],
    remove_members: Iterable[str],
    expected_version: int,
) -> groups_pb2.UpdateGroupRequest:
    req = groups_pb2.UpdateGroupRequest(
        tenant_id=tenant_id,
        id=group_id,
        expected_version=expected_version,
        clear_members=clear_members,
        add_members=[member(m) for m in add_members],
        remove_members=list(remove_members),
    )
    if display_name is not None:
        req.display_name = display_name
    if external_id is not None:
        req.external_id = external_id
    if extensions is not None:
        req.extensions.CopyFrom(extensions)
    return req


@dataclass(frozen=True)
class OperationQuery:
    """What ListOperations filters by (every field optional), for both clients."""

    kinds: Iterable[int] = ()
    resource_type: str = ""
    outcome: int = history_pb2.OUTCOME_FILTER_ANY
    since: timestamp_pb2.Timestamp | None = None
    until: timestamp_pb2.Timestamp | None = None
    #: An exact x-request-id.
    request_id: str = ""
    #: An exact HTTP status; 0: any.
    status: int = 0
    #: history_pb2.OperationSource: SCIM requests, API-token requests or admins' actions.
    source: int = history_pb2.OPERATION_SOURCE_ANY
    oldest_first: bool = False

    def request(
        self, tenant_id: str, page_size: int, page_token: str
    ) -> history_pb2.ListOperationsRequest:
        req = history_pb2.ListOperationsRequest(
            tenant_id=tenant_id,
            # (the ignores below) ints where the stubs want the enums' ValueType (a NewType)
            kinds=list(self.kinds),  # type: ignore[arg-type]
            resource_type=self.resource_type,
            outcome=self.outcome,  # type: ignore[arg-type]
            request_id=self.request_id,
            status=self.status,
            source=self.source,  # type: ignore[arg-type]
            oldest_first=self.oldest_first,
            page_size=page_size,
            page_token=page_token,
        )
        if self.since is not None:
            req.since.CopyFrom(self.since)
        if self.until is not None:
            req.until.CopyFrom(self.until)
        return req
