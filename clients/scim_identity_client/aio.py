"""The asyncio identity-service client: reads and change streams.

    async with AsyncIdentityClient("127.0.0.1:50051") as client:
        page = await client.list_users(tenant_id, cursor="")
        async for event in client.watch(tenant_id, since=page.revision):
            ...

A separate class from the blocking `IdentityClient`, never one that guesses
which world it runs in. Failures raise the same typed `scim_identity_client.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from scim_identity_api.v1 import (
    changes_pb2,
    changes_pb2_grpc,
    common_pb2,
    groups_pb2,
    groups_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)

from ._common import (
    CallContext,
    auth_metadata,
    channel_credentials,
    channel_options,
    page,
    tenant_ref,
)
from .checkpoint import Checkpoint
from .errors import from_rpc_error
from .watch import BATCH_EVENTS, AsyncWatchIterator, Backoff, _Resume

_T = TypeVar("_T")
_NO_CONTEXT = CallContext()

#: A subscriber should find a restarted service within seconds, not after gRPC's
#: default reconnect backoff (up to two minutes).


class AsyncIdentityClient:
    """A grpc.aio client over one channel. Create and use it inside one event loop."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        options: Iterable[tuple[str, Any]] = (),
        token: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> None:
        """`token`: a service credential, sent as `authorization: Bearer` on every
        call. TLS: ready `credentials`, or PEM files (`tls_ca_file` to verify the
        server; `tls_cert_file` + `tls_key_file` for a client certificate)."""
        credentials = channel_credentials(
            credentials=credentials,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
        )
        self._credentials = credentials
        self._token = token
        self._auth = auth_metadata(token)
        opts = channel_options(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self.target = target
        self.timeout = timeout
        self._tenants = tenants_pb2_grpc.TenantServiceStub(self._channel)
        self._users = users_pb2_grpc.UserServiceStub(self._channel)
        self._groups = groups_pb2_grpc.GroupServiceStub(self._channel)
        self._changes = changes_pb2_grpc.ChangeServiceStub(self._channel)
        self._policy = policy_pb2_grpc.PolicyServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncIdentityClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, method: Callable[..., Awaitable[_T]], request: Any, ctx: CallContext | None
    ) -> _T:
        ctx = ctx or _NO_CONTEXT
        call = method(
            request,
            timeout=ctx.timeout if ctx.timeout is not None else self.timeout,
            metadata=ctx.metadata() + self._auth,
        )
        try:
            return await call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            if ctx.on_authenticated is not None:
                ctx.report(await call.trailing_metadata())  # type: ignore[attr-defined]

    async def get_tenant(
        self, tenant: str, *, ctx: CallContext | None = None
    ) -> tenants_pb2.Tenant:
        """`tenant` is an id or a name."""
        req = tenants_pb2.GetTenantRequest(tenant=tenant_ref(tenant))
        return await self._call(self._tenants.GetTenant, req, ctx)

    async def get_revision(
        self, tenant_id: str, *, ctx: CallContext | None = None
    ) -> changes_pb2.GetRevisionResponse:
        req = changes_pb2.GetRevisionRequest(tenant_id=tenant_id)
        return await self._call(self._changes.GetRevision, req, ctx)

    async def get_user(
        self, tenant_id: str, user_id: str, *, ctx: CallContext | None = None
    ) -> users_pb2.User:
        req = users_pb2.GetUserRequest(tenant_id=tenant_id, id=user_id)
        return await self._call(self._users.GetUser, req, ctx)

    async def list_users(
        self,
        tenant_id: str,
        *,
        filter: common_pb2.Filter | None = None,
        sort: common_pb2.Sort | None = None,
        start_index: int | None = None,
        count: int | None = None,
        cursor: str | None = None,
        ctx: CallContext | None = None,
    ) -> users_pb2.ListUsersResponse:
        """One page; `.revision` is the tenant revision it reflects."""
        req = users_pb2.ListUsersRequest(
            tenant_id=tenant_id, filter=filter, sort=sort, page=page(start_index, count, cursor)
        )
        return await self._call(self._users.ListUsers, req, ctx)

    async def get_schemas(
        self, tenant_id: str = "", *, ctx: CallContext | None = None
    ) -> policy_pb2.GetSchemasResponse:
        """The attribute catalogue (RFC 7643 §7) and resource types; with `tenant_id`,
        the tenant's own schemas too."""
        req = policy_pb2.GetSchemasRequest(tenant_id=tenant_id)
        return await self._call(self._policy.GetSchemas, req, ctx)

    async def patch_user(
        self,
        tenant_id: str,
        user_id: str,
        operations: Iterable[common_pb2.PatchOperation],
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> users_pb2.User:
        """Applies PATCH operations atomically under the user's lock; the stored user."""
        req = users_pb2.PatchUserRequest(
            tenant_id=tenant_id,
            id=user_id,
            operations=list(operations),
            expected_version=expected_version,
        )
        return await self._call(self._users.PatchUser, req, ctx)

    async def patch_group(
        self,
        tenant_id: str,
        group_id: str,
        operations: Iterable[common_pb2.PatchOperation],
        *,
        expected_version: int = 0,
        include_members: bool = False,
        member_limit: int = 0,
        ctx: CallContext | None = None,
    ) -> groups_pb2.Group:
        """Applies PATCH operations atomically; members change in O(members named).
        `include_members`: the members too, unless there are more than `member_limit`."""
        req = groups_pb2.PatchGroupRequest(
            tenant_id=tenant_id,
            id=group_id,
            operations=list(operations),
            expected_version=expected_version,
            include_members=include_members,
            member_limit=member_limit,
        )
        return await self._call(self._groups.PatchGroup, req, ctx)

    async def get_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        include_members: bool = True,
        member_limit: int = 0,
        ctx: CallContext | None = None,
    ) -> groups_pb2.Group:
        """`member_limit`: with members, leave them out when there are more than
        that many (then `member_count` > len(members))."""
        req = groups_pb2.GetGroupRequest(
            tenant_id=tenant_id,
            id=group_id,
            include_members=include_members,
            member_limit=member_limit,
        )
        return await self._call(self._groups.GetGroup, req, ctx)

    async def list_groups(
        self,
        tenant_id: str,
        *,
        filter: common_pb2.Filter | None = None,
        sort: common_pb2.Sort | None = None,
        start_index: int | None = None,
        count: int | None = None,
        cursor: str | None = None,
        include_members: bool = False,
        ctx: CallContext | None = None,
    ) -> groups_pb2.ListGroupsResponse:
        req = groups_pb2.ListGroupsRequest(
            tenant_id=tenant_id,
            filter=filter,
            sort=sort,
            page=page(start_index, count, cursor),
            include_members=include_members,
        )
        return await self._call(self._groups.ListGroups, req, ctx)

    def watch(
        self,
        tenant_id: str,
        *,
        since: int | None = None,
        checkpoint: Checkpoint | None = None,
        resource_types: Iterable[str] = (),
        event_types: Iterable[int | str] = (),
        heartbeat_seconds: int = 5,
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
        max_batch_events: int = BATCH_EVENTS,
        ctx: CallContext | None = None,
    ) -> AsyncWatchIterator:
        """`async for event in client.watch(...)`: as IdentityClient.watch. The
        checkpoint's save() runs on the event loop: keep it quick (a file, SQLite)."""
        core = _Resume(
            tenant_id,
            since=since,
            checkpoint=checkpoint,
            resource_types=resource_types,
            event_types=event_types,
            heartbeat_seconds=heartbeat_seconds,
            backoff=backoff,
            give_up_after=give_up_after,
            max_batch_events=max_batch_events,
        )
        return AsyncWatchIterator(self._changes, core, (ctx or _NO_CONTEXT).metadata() + self._auth)
