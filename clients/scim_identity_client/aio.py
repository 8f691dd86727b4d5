"""The asyncio identity-service client: reads and change streams.

    async with AsyncIdentityClient("127.0.0.1:50051") as client:
        page = await client.list_users(tenant_id, cursor="")
        async for event in client.watch(tenant_id, since=page.revision):
            ...

A separate class from the blocking `IdentityClient`, never one that guesses
which world it runs in. Failures raise the same typed `scim_identity_client.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import struct_pb2, timestamp_pb2

from scim_identity_api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    changes_pb2,
    changes_pb2_grpc,
    common_pb2,
    groups_pb2,
    groups_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    roles_pb2,
    roles_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)

from ._common import (
    CallContext,
    OperationQuery,
    auth_metadata,
    authenticate_request,
    channel_credentials,
    channel_options,
    delete_user_request,
    get_group_request,
    issue_token_request,
    list_groups_request,
    page,
    tenant_ref,
    update_group_request,
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
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        """`token`: a service credential, sent as `authorization: Bearer` on every
        call. TLS: ready `credentials`, or PEM files (`tls_ca_file` to verify the
        server; `tls_cert_file` + `tls_key_file` for a client certificate).
        `interceptors`: grpc.aio client interceptors on the channel (e.g.
        `scim_identity_api.tracing.ClientTracingInterceptor`, which sends W3C `traceparent`)."""
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
            self._channel = grpc.aio.insecure_channel(
                target, options=opts, interceptors=interceptors or None
            )
        else:
            self._channel = grpc.aio.secure_channel(
                target, credentials, options=opts, interceptors=interceptors or None
            )
        self.target = target
        self.timeout = timeout
        self._tenants = tenants_pb2_grpc.TenantServiceStub(self._channel)
        self._users = users_pb2_grpc.UserServiceStub(self._channel)
        self._groups = groups_pb2_grpc.GroupServiceStub(self._channel)
        self._changes = changes_pb2_grpc.ChangeServiceStub(self._channel)
        self._history = history_pb2_grpc.HistoryServiceStub(self._channel)
        self._policy = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._roles = roles_pb2_grpc.RoleServiceStub(self._channel)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

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
            timeout=ctx.call_timeout(self.timeout),
            metadata=ctx.metadata() + self._auth,
        )
        try:
            answer = await call
        except grpc.RpcError as err:
            if ctx.on_authenticated is not None and isinstance(err, grpc.aio.AioRpcError):
                ctx.report(err.trailing_metadata())
            raise from_rpc_error(err) from None
        if ctx.on_authenticated is not None:
            # (the ignore below) the aio call object is untyped in types-grpcio
            ctx.report(await call.trailing_metadata())  # type: ignore[attr-defined]
        return answer

    async def get_tenant(
        self, tenant: str, *, ctx: CallContext | None = None
    ) -> tenants_pb2.Tenant:
        """`tenant` is an id or a name."""
        req = tenants_pb2.GetTenantRequest(tenant=tenant_ref(tenant))
        return await self._call(self._tenants.GetTenant, req, ctx)

    async def authenticate(
        self, secret: str, *, tenant: str | None = None, ctx: CallContext | None = None
    ) -> tenants_pb2.AuthenticateTokenResponse:
        """Checks a bearer secret, optionally for one tenant (id or name)."""
        req = authenticate_request(secret, tenant)
        return await self._call(self._tenants.AuthenticateToken, req, ctx)

    async def get_policy(
        self, tenant_id: str, *, ctx: CallContext | None = None
    ) -> policy_pb2.TenantPolicy:
        req = policy_pb2.GetPolicyRequest(tenant_id=tenant_id)
        return await self._call(self._policy.GetPolicy, req, ctx)

    async def record_operations(
        self, operations: Iterable[history_pb2.Operation], *, ctx: CallContext | None = None
    ) -> history_pb2.RecordOperationsResponse:
        """Records many operations (of any tenants) in one call."""
        req = history_pb2.RecordOperationsRequest(operations=list(operations))
        return await self._call(self._history.RecordOperations, req, ctx)

    async def list_operations(
        self,
        tenant_id: str,
        query: OperationQuery | None = None,
        *,
        page_size: int = 100,
        page_token: str = "",
        ctx: CallContext | None = None,
    ) -> history_pb2.ListOperationsResponse:
        """One page of the tenant's operations history that `query` selects (as
        IdentityClient.list_operations, whose keywords are its fields)."""
        req = (query or OperationQuery()).request(tenant_id, page_size, page_token)
        return await self._call(self._history.ListOperations, req, ctx)

    async def get_operation(
        self, tenant_id: str, operation_id: str, *, ctx: CallContext | None = None
    ) -> history_pb2.Operation:
        """One record of the tenant's history (NotFound: none of that id in the tenant)."""
        req = history_pb2.GetOperationRequest(tenant_id=tenant_id, operation_id=operation_id)
        return await self._call(self._history.GetOperation, req, ctx)

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

    async def create_user(
        self, tenant_id: str, user: users_pb2.User, *, ctx: CallContext | None = None
    ) -> users_pb2.User:
        req = users_pb2.CreateUserRequest(tenant_id=tenant_id, user=user)
        return await self._call(self._users.CreateUser, req, ctx)

    async def replace_user(
        self,
        tenant_id: str,
        user: users_pb2.User,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> users_pb2.User:
        """Replaces every writable attribute of the user named by `user.meta.id`."""
        req = users_pb2.ReplaceUserRequest(
            tenant_id=tenant_id, user=user, expected_version=expected_version
        )
        return await self._call(self._users.ReplaceUser, req, ctx)

    async def delete_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> users_pb2.DeleteUserResponse:
        """Deletes the user, or deactivates it when the tenant's policy says so."""
        req = delete_user_request(tenant_id, user_id, expected_version, hard=False)
        return await self._call(self._users.DeleteUser, req, ctx)

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
        req = get_group_request(tenant_id, group_id, include_members, member_limit)
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
        req = list_groups_request(
            tenant_id, filter, sort, page(start_index, count, cursor), include_members
        )
        return await self._call(self._groups.ListGroups, req, ctx)

    async def create_group(
        self, tenant_id: str, group: groups_pb2.Group, *, ctx: CallContext | None = None
    ) -> groups_pb2.Group:
        req = groups_pb2.CreateGroupRequest(tenant_id=tenant_id, group=group)
        return await self._call(self._groups.CreateGroup, req, ctx)

    async def replace_group(
        self,
        tenant_id: str,
        group: groups_pb2.Group,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> groups_pb2.Group:
        req = groups_pb2.ReplaceGroupRequest(
            tenant_id=tenant_id, group=group, expected_version=expected_version
        )
        return await self._call(self._groups.ReplaceGroup, req, ctx)

    async def update_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        display_name: str | None = None,
        external_id: str | None = None,
        extensions: struct_pb2.Struct | None = None,
        clear_members: bool = False,
        add_members: Iterable[str | groups_pb2.Member] = (),
        remove_members: Iterable[str] = (),
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> groups_pb2.Group:
        """Attribute and membership changes in one transaction; O(members changed)."""
        req = update_group_request(
            tenant_id,
            group_id,
            display_name=display_name,
            external_id=external_id,
            extensions=extensions,
            clear_members=clear_members,
            add_members=add_members,
            remove_members=remove_members,
            expected_version=expected_version,
        )
        return await self._call(self._groups.UpdateGroup, req, ctx)

    async def delete_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> None:
        req = groups_pb2.DeleteGroupRequest(
            tenant_id=tenant_id, id=group_id, expected_version=expected_version
        )
        await self._call(self._groups.DeleteGroup, req, ctx)

    async def list_members(
        self,
        tenant_id: str,
        group_id: str,
        *,
        page_size: int = 1000,
        ctx: CallContext | None = None,
    ) -> AsyncIterator[groups_pb2.Member]:
        """Every member of a group, fetched page by page (one page held at a time)."""
        token = ""
        while True:
            req = groups_pb2.ListMembersRequest(
                tenant_id=tenant_id, group_id=group_id, page_size=page_size, page_token=token
            )
            resp = await self._call(self._groups.ListMembers, req, ctx)
            for m in resp.members:
                yield m
            token = resp.next_page_token
            if not token:
                return

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

    # -- the admin console's calls: its tenant's connector and tokens, sign-in ----------

    async def create_tenant(
        self,
        name: str,
        *,
        display_name: str = "",
        inactive: bool = False,
        ctx: CallContext | None = None,
    ) -> tenants_pb2.Tenant:
        """`inactive`: the connector starts off, so rules and mappings are set first."""
        req = tenants_pb2.CreateTenantRequest(
            name=name, display_name=display_name, inactive=inactive
        )
        return await self._call(self._tenants.CreateTenant, req, ctx)

    async def list_tenants(self, *, ctx: CallContext | None = None) -> list[tenants_pb2.Tenant]:
        """Every tenant, by name."""
        out: list[tenants_pb2.Tenant] = []
        token = ""
        while True:
            req = tenants_pb2.ListTenantsRequest(page_size=500, page_token=token)
            resp = await self._call(self._tenants.ListTenants, req, ctx)
            out.extend(resp.tenants)
            token = resp.next_page_token
            if not token:
                return out

    async def update_tenant(
        self, tenant: str, *, active: bool | None = None, ctx: CallContext | None = None
    ) -> tenants_pb2.Tenant:
        req = tenants_pb2.UpdateTenantRequest(tenant=tenant_ref(tenant))
        if active is not None:
            req.active = active
        return await self._call(self._tenants.UpdateTenant, req, ctx)

    async def list_tokens(
        self, tenant: str, *, include_inactive: bool = False, ctx: CallContext | None = None
    ) -> list[tenants_pb2.Token]:
        req = tenants_pb2.ListTokensRequest(
            tenant=tenant_ref(tenant), include_inactive=include_inactive
        )
        return list((await self._call(self._tenants.ListTokens, req, ctx)).tokens)

    async def issue_token(
        self,
        tenant: str,
        *,
        description: str = "",
        scope: int = tenants_pb2.TOKEN_SCOPE_FULL,
        expires: timestamp_pb2.Timestamp | None = None,
        ctx: CallContext | None = None,
    ) -> tenants_pb2.IssueTokenResponse:
        req = issue_token_request(tenant, description, scope, expires)
        return await self._call(self._tenants.IssueToken, req, ctx)

    async def rotate_token(
        self, tenant: str, *, revoke_token_id: str, ctx: CallContext | None = None
    ) -> tenants_pb2.RotateTokenResponse:
        """The successor of `revoke_token_id` (its description and scope), issued as
        the old one is revoked, in one transaction."""
        req = tenants_pb2.RotateTokenRequest(
            tenant=tenant_ref(tenant), revoke_token_id=revoke_token_id
        )
        return await self._call(self._tenants.RotateToken, req, ctx)

    async def revoke_token(
        self, tenant: str, token_id: str, *, ctx: CallContext | None = None
    ) -> tenants_pb2.Token:
        req = tenants_pb2.RevokeTokenRequest(tenant=tenant_ref(tenant), token_id=token_id)
        return await self._call(self._tenants.RevokeToken, req, ctx)

    async def redeem_admin_link(
        self, secret: str, *, ctx: CallContext | None = None
    ) -> admin_pb2.AdminSession:
        req = admin_pb2.RedeemAdminLinkRequest(secret=secret)
        return await self._call(self._admin.RedeemAdminLink, req, ctx)

    async def get_admin_session(
        self, secret: str, *, ctx: CallContext | None = None
    ) -> admin_pb2.AdminSession:
        req = admin_pb2.GetAdminSessionRequest(secret=secret)
        return await self._call(self._admin.GetAdminSession, req, ctx)

    async def end_admin_session(self, secret: str, *, ctx: CallContext | None = None) -> None:
        req = admin_pb2.EndAdminSessionRequest(secret=secret)
        await self._call(self._admin.EndAdminSession, req, ctx)

    # -- the admin console's roles, rules and mappings -----------------------------------

    async def list_roles(
        self, tenant_id: str, *, ctx: CallContext | None = None
    ) -> list[roles_pb2.Role]:
        req = roles_pb2.ListRolesRequest(tenant_id=tenant_id)
        return list((await self._call(self._roles.ListRoles, req, ctx)).roles)

    async def create_role(
        self, tenant_id: str, name: str, *, description: str = "", ctx: CallContext | None = None
    ) -> roles_pb2.Role:
        req = roles_pb2.CreateRoleRequest(tenant_id=tenant_id, name=name, description=description)
        return await self._call(self._roles.CreateRole, req, ctx)

    async def delete_role(
        self, tenant_id: str, name: str, *, ctx: CallContext | None = None
    ) -> None:
        req = roles_pb2.DeleteRoleRequest(tenant_id=tenant_id, name=name)
        await self._call(self._roles.DeleteRole, req, ctx)

    async def list_assignments(
        self,
        tenant_id: str,
        *,
        user_id: str = "",
        role: str = "",
        include_grants: bool = False,
        ctx: CallContext | None = None,
    ) -> list[roles_pb2.Assignment]:
        """Role assignments; with `user_id` and `include_grants`, each SCIM-managed one
        with the rules that grant it (its provenance)."""
        req = roles_pb2.ListAssignmentsRequest(
            tenant_id=tenant_id, user_id=user_id, role=role, include_grants=include_grants
        )
        return list((await self._call(self._roles.ListAssignments, req, ctx)).assignments)

    async def preview_policy(
        self,
        tenant_id: str,
        policy: policy_pb2.TenantPolicy,
        *,
        max_effects: int = 0,
        ctx: CallContext | None = None,
    ) -> policy_pb2.PolicyPreview:
        """What set_policy would do now (roles gained and lost, deactivations,
        deletions), computed by the core's own apply path and rolled back."""
        req = policy_pb2.PreviewPolicyRequest(
            tenant_id=tenant_id, policy=policy, max_effects=max_effects
        )
        return await self._call(self._policy.PreviewPolicy, req, ctx)

    async def set_policy(
        self,
        tenant_id: str,
        policy: policy_pb2.TenantPolicy,
        *,
        expected_digest: str = "",
        ctx: CallContext | None = None,
    ) -> policy_pb2.TenantPolicy:
        """Replaces the tenant's whole policy. With `expected_digest` (a preview's),
        VersionMismatch and nothing applied unless it does exactly what was previewed."""
        req = policy_pb2.SetPolicyRequest(
            tenant_id=tenant_id, policy=policy, expected_digest=expected_digest
        )
        return await self._call(self._policy.SetPolicy, req, ctx)
