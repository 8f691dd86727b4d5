"""gRPC servicers: translate requests to domain calls inside one transaction, nothing else.
Who may make each call, and what a tenant's API token may see, is edge.auth's (Caller)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
from sqlalchemy.orm import Session

from scim_identity_api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    changes_pb2,
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

from .. import schema
from ..changes.streams import StreamHub, watch_handler
from ..context import CURRENT_CALL, RequestContext
from ..domain import admin_access, connector, groups, history, policy, roles, tenants, users
from ..domain.policy_apply import preview_policy, set_policy
from ..errors import Unavailable
from ..settings import Settings
from ..storage.db import Database, Reader
from ..storage.filters import (
    GROUPS,
    USERS,
    Catalog,
)
from ..storage.listing import idp_lookup
from ..storage.models import utcnow
from .auth import Caller
from .token_uses import TokenUses

T = TypeVar("T")


class _Base:
    def __init__(self, db: Database, settings: Settings, uses: TokenUses | None = None) -> None:
        self.db = db
        self.settings = settings
        #: Where calls note tokens whose last_used is stale (written off the call).
        self.uses = uses or TokenUses(db)

    async def write(self, context: Any, fn: Callable[[Session, Caller], T]) -> T:
        return await self._run(context, lambda c: self.db.run(self._write, fn, c))

    async def read(self, context: Any, fn: Callable[[Session, Caller], T]) -> T:
        return await self._run(context, lambda c: self.db.run(self._read, fn, c))

    async def rehearse(self, context: Any, fn: Callable[[Session, Caller], T]) -> T:
        """`fn` in a write transaction that is always rolled back: what a write would
        do, computed by the write's own code, with nothing kept."""
        return await self._run(context, lambda c: self.db.run(self._rehearse, fn, c))

    async def read_quick(self, context: Any, fn: Callable[[Reader, Caller], T]) -> T:
        """A read of a few rows by index, made of prepared statements only (its type
        says so: `fn` gets a Reader, which may be a QuickRead), on the event loop
        without a Session (Database.read_quick). Chosen by the servicer before it
        starts; it never falls back."""
        return await self._run(context, lambda c: self.db.read_quick(lambda q: fn(q, c)))

    async def _run(self, context: Any, job: Callable[[Caller], Awaitable[T]]) -> T:
        ctx, method = call_of(context)
        caller = Caller(ctx, method, commit_by=_commit_by(ctx, context))
        try:
            result = await job(caller)
        except asyncio.CancelledError:
            # The pool thread goes on with the transaction; it must not commit.
            caller.abandoned.set()
            raise
        finally:
            if caller.trailer():
                context.set_trailing_metadata(caller.trailer())
            if caller.bearer is not None:
                record = CURRENT_CALL.get()
                if record is not None:  # for the access line
                    record.tenant, record.token = caller.bearer.tenant.id, caller.bearer.token.id
        if caller.touch is not None:
            self.uses.note(caller.touch)  # authentication stays a read
        return result

    def _write(self, fn: Callable[[Session, Any], T], caller: Caller | None) -> T:
        if caller is not None:
            caller.check_commit()  # already too late: do not even queue for the lock
        with self.db.write() as s:
            result = fn(s, caller)
            if caller is not None:
                caller.check_commit()  # the lock may have taken the time: last check
            return result

    def _rehearse(self, fn: Callable[[Session, Any], T], caller: Caller | None) -> T:
        try:
            with self.db.write() as s:
                raise _RolledBack(fn(s, caller))
        except _RolledBack as done:
            result: T = done.result
            return result

    def _read(self, fn: Callable[[Session, Any], T], caller: Caller | None) -> T:
        with self.db.read() as s:
            return fn(s, caller)


class _RolledBack(Exception):
    """Raised out of a write transaction to roll it back, carrying the answer."""

    def __init__(self, result: Any) -> None:
        super().__init__("rolled back")
        self.result = result


#: Most rows a lookup may ask for and still count as a quick read.
QUICK_COUNT = 100


def _is_lookup(
    catalog: Catalog, req: users_pb2.ListUsersRequest | groups_pb2.ListGroupsRequest
) -> bool:
    """The IdP lookup (listing.idp_lookup) of at most QUICK_COUNT rows: a quick read."""
    page = req.page
    return (
        req.HasField("filter")
        and (not page.HasField("count") or page.count <= QUICK_COUNT)
        and idp_lookup(catalog, req.filter, req.sort if req.HasField("sort") else None, page)
        is not None
    )


def _commit_by(ctx: RequestContext, context: Any) -> float | None:
    """When the call stops being allowed to commit: the caller's commit deadline
    (metadata), and at the latest its gRPC deadline (an answer after it is lost)."""
    commit_by = ctx.commit_by
    remaining = context.time_remaining() if hasattr(context, "time_remaining") else None
    if remaining is not None:
        by_grpc = time.monotonic() + remaining
        commit_by = by_grpc if commit_by is None else min(commit_by, by_grpc)
    return commit_by


def call_of(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[RequestContext, str]:
    """The call's context and RPC method, parsed once by the interceptor."""
    record = CURRENT_CALL.get()
    if record is None:  # a servicer called without the server's interceptors
        raise Unavailable("the call was not received through the server")
    return record.ctx, record.method


class TenantServicer(_Base, tenants_pb2_grpc.TenantServiceServicer):
    async def CreateTenant(
        self, request: tenants_pb2.CreateTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        return await self.write(
            context,
            lambda s, c: tenants.create(
                s, request.name, request.display_name, c.ctx, active=not request.inactive
            ),
        )

    async def GetTenant(
        self, request: tenants_pb2.GetTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        return await self.read(
            context, lambda s, c: tenants.to_proto(tenants.resolve(s, request.tenant))
        )

    async def ListTenants(
        self, request: tenants_pb2.ListTenantsRequest, context: Any
    ) -> tenants_pb2.ListTenantsResponse:
        return await self.read(
            context, lambda s, c: tenants.list_page(s, request.page_size, request.page_token)
        )

    async def UpdateTenant(
        self, request: tenants_pb2.UpdateTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        return await self.write(context, lambda s, c: tenants.update(s, request, c.ctx))

    async def IssueToken(
        self, request: tenants_pb2.IssueTokenRequest, context: Any
    ) -> tenants_pb2.IssueTokenResponse:
        return await self.write(context, lambda s, c: tenants.issue_token(s, request, c.ctx))

    async def ListTokens(
        self, request: tenants_pb2.ListTokensRequest, context: Any
    ) -> tenants_pb2.ListTokensResponse:
        return await self.read(context, lambda s, c: tenants.list_tokens(s, request))

    async def RevokeToken(
        self, request: tenants_pb2.RevokeTokenRequest, context: Any
    ) -> tenants_pb2.Token:
        return await self.write(context, lambda s, c: tenants.revoke_token(s, request, c.ctx))

    async def RotateToken(
        self, request: tenants_pb2.RotateTokenRequest, context: Any
    ) -> tenants_pb2.RotateTokenResponse:
        return await self.write(context, lambda s, c: tenants.rotate_token(s, request, c.ctx))

    async def ResetConnector(
        self, request: tenants_pb2.ResetConnectorRequest, context: Any
    ) -> tenants_pb2.ResetConnectorResponse:
        return await self.write(context, lambda s, c: connector.reset(s, request, c.ctx))

    async def AuthenticateToken(
        self, request: tenants_pb2.AuthenticateTokenRequest, context: Any
    ) -> tenants_pb2.AuthenticateTokenResponse:
        answer, touch = await self.read(context, lambda s, c: c.authenticate(s, request))
        if touch is not None:
            self.uses.note(touch)
        return answer


class UserServicer(_Base, users_pb2_grpc.UserServiceServicer):
    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: Any
    ) -> users_pb2.User:
        return await self.write(
            context,
            lambda s, c: c.users_view(
                s, users.create(s, c.tenant(s, request.tenant_id), request.user, c.ctx)
            ),
        )

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Any) -> users_pb2.User:
        return await self.read_quick(
            context,
            lambda r, c: c.users_view(r, users.get(r, c.tenant(r, request.tenant_id), request.id)),
        )

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Any
    ) -> users_pb2.ListUsersResponse:
        if _is_lookup(USERS, request):

            def lookup(r: Reader, c: Caller) -> users_pb2.ListUsersResponse:
                tenant = c.tenant(r, request.tenant_id)
                c.check_user_filter(request)
                return c.users_view(r, users.lookup_users(r, tenant, request, self.settings))

            return await self.read_quick(context, lookup)

        def list_users(s: Session, c: Caller) -> users_pb2.ListUsersResponse:
            tenant = c.tenant(s, request.tenant_id)
            c.check_user_filter(request)
            return c.users_view(s, users.list_users(s, tenant, request, self.settings))

        return await self.read(context, list_users)

    async def ReplaceUser(
        self, request: users_pb2.ReplaceUserRequest, context: Any
    ) -> users_pb2.User:
        return await self.write(
            context,
            lambda s, c: c.users_view(
                s,
                users.replace(
                    s, c.tenant(s, request.tenant_id), request.user, request.expected_version, c.ctx
                ),
            ),
        )

    async def PatchUser(self, request: users_pb2.PatchUserRequest, context: Any) -> users_pb2.User:
        return await self.write(
            context,
            lambda s, c: c.users_view(
                s, users.patch(s, c.tenant(s, request.tenant_id), request, c.ctx)
            ),
        )

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: Any
    ) -> users_pb2.DeleteUserResponse:
        return await self.write(
            context,
            lambda s, c: c.users_view(
                s,
                users.remove(
                    s,
                    c.tenant(s, request.tenant_id),
                    request.id,
                    request.expected_version,
                    c.ctx,
                    mode=request.mode,
                ),
            ),
        )

    async def JitProvision(
        self, request: users_pb2.JitProvisionRequest, context: Any
    ) -> users_pb2.JitProvisionResponse:
        return await self.write(
            context,
            lambda s, c: c.users_view(
                s, users.jit_provision(s, c.tenant(s, request.tenant_id), request, c.ctx)
            ),
        )


class PolicyServicer(_Base, policy_pb2_grpc.PolicyServiceServicer):
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: Any
    ) -> policy_pb2.TenantPolicy:
        return await self.read(context, lambda s, c: policy.load(s, c.tenant(s, request.tenant_id)))

    async def GetSchemas(
        self, request: policy_pb2.GetSchemasRequest, context: Any
    ) -> policy_pb2.GetSchemasResponse:
        if not request.tenant_id and not call_of(context)[0].bearer:
            return schema.definitions(schema.BUILTIN_SCHEMAS)  # no tenant, nothing to read

        def get(s: Session, c: Caller) -> policy_pb2.GetSchemasResponse:
            pol = policy.load(s, c.tenant(s, request.tenant_id))
            return schema.definitions(schema.schema_set(pol.extension_schemas))

        return await self.read(context, get)

    async def SetPolicy(
        self, request: policy_pb2.SetPolicyRequest, context: Any
    ) -> policy_pb2.TenantPolicy:
        return await self.write(
            context,
            lambda s, c: set_policy(
                s, tenants.by_id(s, c.tenant(s, request.tenant_id).id), request, c.ctx
            ),
        )

    async def PreviewPolicy(
        self, request: policy_pb2.PreviewPolicyRequest, context: Any
    ) -> policy_pb2.PolicyPreview:
        return await self.rehearse(
            context,
            lambda s, c: preview_policy(
                s, tenants.by_id(s, c.tenant(s, request.tenant_id).id), request, c.ctx
            ),
        )


class GroupServicer(_Base, groups_pb2_grpc.GroupServiceServicer):
    async def CreateGroup(
        self, request: groups_pb2.CreateGroupRequest, context: Any
    ) -> groups_pb2.Group:
        return await self.write(
            context,
            lambda s, c: groups.create(s, c.tenant(s, request.tenant_id), request.group, c.ctx),
        )

    async def GetGroup(self, request: groups_pb2.GetGroupRequest, context: Any) -> groups_pb2.Group:
        if not request.include_members:
            return await self.read_quick(
                context,
                lambda r, c: groups.get_without_members(
                    r, c.tenant(r, request.tenant_id), request.id
                ),
            )
        return await self.read(
            context,
            lambda s, c: groups.get(
                s,
                c.tenant(s, request.tenant_id),
                request.id,
                request.include_members,
                self.settings,
                member_limit=request.member_limit,
            ),
        )

    async def ListGroups(
        self, request: groups_pb2.ListGroupsRequest, context: Any
    ) -> groups_pb2.ListGroupsResponse:
        # With members, a matched group may have any number of them: the pool.
        if not request.include_members and _is_lookup(GROUPS, request):
            return await self.read_quick(
                context,
                lambda r, c: groups.lookup_groups(
                    r, c.tenant(r, request.tenant_id), request, self.settings
                ),
            )
        return await self.read(
            context,
            lambda s, c: groups.list_groups(
                s, c.tenant(s, request.tenant_id), request, self.settings
            ),
        )

    async def ReplaceGroup(
        self, request: groups_pb2.ReplaceGroupRequest, context: Any
    ) -> groups_pb2.Group:
        return await self.write(
            context,
            lambda s, c: groups.replace(
                s, c.tenant(s, request.tenant_id), request.group, request.expected_version, c.ctx
            ),
        )

    async def UpdateGroup(
        self, request: groups_pb2.UpdateGroupRequest, context: Any
    ) -> groups_pb2.Group:
        return await self.write(
            context,
            lambda s, c: groups.update_group(s, c.tenant(s, request.tenant_id), request, c.ctx),
        )

    async def PatchGroup(
        self, request: groups_pb2.PatchGroupRequest, context: Any
    ) -> groups_pb2.Group:
        return await self.write(
            context,
            lambda s, c: groups.patch(
                s, c.tenant(s, request.tenant_id), request, c.ctx, self.settings
            ),
        )

    async def DeleteGroup(
        self, request: groups_pb2.DeleteGroupRequest, context: Any
    ) -> groups_pb2.DeleteGroupResponse:
        await self.write(
            context,
            lambda s, c: groups.remove(
                s, c.tenant(s, request.tenant_id), request.id, request.expected_version, c.ctx
            ),
        )
        return groups_pb2.DeleteGroupResponse()

    async def ListMembers(
        self, request: groups_pb2.ListMembersRequest, context: Any
    ) -> groups_pb2.ListMembersResponse:
        return await self.read(
            context, lambda s, c: groups.list_members(s, c.tenant(s, request.tenant_id), request)
        )


class RoleServicer(_Base, roles_pb2_grpc.RoleServiceServicer):
    async def CreateRole(
        self, request: roles_pb2.CreateRoleRequest, context: Any
    ) -> roles_pb2.Role:
        return await self.write(
            context,
            lambda s, c: roles.create_role(
                s, c.tenant(s, request.tenant_id), request.name, request.description, c.ctx
            ),
        )

    async def ListRoles(
        self, request: roles_pb2.ListRolesRequest, context: Any
    ) -> roles_pb2.ListRolesResponse:
        return await self.read(
            context, lambda s, c: roles.list_roles(s, c.tenant(s, request.tenant_id))
        )

    async def DeleteRole(
        self, request: roles_pb2.DeleteRoleRequest, context: Any
    ) -> roles_pb2.DeleteRoleResponse:
        await self.write(
            context,
            lambda s, c: roles.delete_role(s, c.tenant(s, request.tenant_id), request.name, c.ctx),
        )
        return roles_pb2.DeleteRoleResponse()

    async def AssignRole(
        self, request: roles_pb2.AssignRoleRequest, context: Any
    ) -> roles_pb2.Assignment:
        return await self.write(
            context, lambda s, c: roles.assign(s, c.tenant(s, request.tenant_id), request, c.ctx)
        )

    async def RevokeRole(
        self, request: roles_pb2.RevokeRoleRequest, context: Any
    ) -> roles_pb2.Assignment:
        return await self.write(
            context, lambda s, c: roles.revoke(s, c.tenant(s, request.tenant_id), request, c.ctx)
        )

    async def ListAssignments(
        self, request: roles_pb2.ListAssignmentsRequest, context: Any
    ) -> roles_pb2.ListAssignmentsResponse:
        return await self.read(
            context, lambda s, c: roles.list_assignments(s, c.tenant(s, request.tenant_id), request)
        )


class HistoryServicer(_Base, history_pb2_grpc.HistoryServiceServicer):
    async def RecordOperation(
        self, request: history_pb2.RecordOperationRequest, context: Any
    ) -> history_pb2.RecordOperationResponse:
        op = request.operation
        recorded = await self.write(
            context, lambda s, c: history.record(s, c.tenant(s, op.tenant_id), op)
        )
        return history_pb2.RecordOperationResponse(operation=recorded)

    async def RecordOperations(
        self, request: history_pb2.RecordOperationsRequest, context: Any
    ) -> history_pb2.RecordOperationsResponse:
        return await self.write(context, lambda s, c: history.record_many(s, request.operations))

    async def ListOperations(
        self, request: history_pb2.ListOperationsRequest, context: Any
    ) -> history_pb2.ListOperationsResponse:
        return await self.read(
            context,
            lambda s, c: history.list_operations(s, c.tenant(s, request.tenant_id), request),
        )

    async def GetOperation(
        self, request: history_pb2.GetOperationRequest, context: Any
    ) -> history_pb2.Operation:
        return await self.read(
            context,
            lambda s, c: history.get_operation(
                s, c.tenant(s, request.tenant_id), request.operation_id
            ),
        )


class ChangeServicer(_Base):
    """GetRevision here; Watch is served by identity_service.changes.streams, which yields
    serialized responses, so the service's handlers are built by `add_to_server`
    rather than by the generated code (whose Watch serializer expects messages)."""

    #: Set by IdentityService: the process's stream hub.
    streams: StreamHub | None = None

    def Watch(
        self, request: changes_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        if self.streams is None:
            raise Unavailable("change streams are not running on this server")
        return self.streams.watch(request, context)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Watch": watch_handler(self.Watch),
            "GetRevision": grpc.unary_unary_rpc_method_handler(
                self.GetRevision,
                request_deserializer=changes_pb2.GetRevisionRequest.FromString,
                response_serializer=changes_pb2.GetRevisionResponse.SerializeToString,
            ),
        }
        name = changes_pb2.DESCRIPTOR.services_by_name["ChangeService"].full_name
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))

    async def GetRevision(
        self, request: changes_pb2.GetRevisionRequest, context: Any
    ) -> changes_pb2.GetRevisionResponse:
        def get(r: Reader, c: Caller) -> changes_pb2.GetRevisionResponse:
            t = c.tenant(r, request.tenant_id)
            return changes_pb2.GetRevisionResponse(
                revision=t.revision,
                # The oldest revision still kept; 0 while nothing was compacted.
                oldest_revision=t.compacted_through + 1 if t.compacted_through else 0,
            )

        return await self.read_quick(context, get)


class AdminServicer(_Base, admin_pb2_grpc.AdminServiceServicer):
    """Sign-in to the admin console (admin_access)."""

    #: The time links and sessions are checked against; tests set their own.
    clock: Callable[[], datetime] = staticmethod(utcnow)

    async def CreateAdminLink(
        self, request: admin_pb2.CreateAdminLinkRequest, context: Any
    ) -> admin_pb2.AdminLink:
        return await self.write(
            context, lambda s, c: admin_access.create_link(s, request, self.clock())
        )

    async def RedeemAdminLink(
        self, request: admin_pb2.RedeemAdminLinkRequest, context: Any
    ) -> admin_pb2.AdminSession:
        lifetime = timedelta(seconds=self.settings.admin_session_seconds)
        return await self.write(
            context, lambda s, c: admin_access.redeem(s, request.secret, self.clock(), lifetime)
        )

    async def GetAdminSession(
        self, request: admin_pb2.GetAdminSessionRequest, context: Any
    ) -> admin_pb2.AdminSession:
        return await self.read(
            context, lambda s, c: admin_access.get_session(s, request.secret, self.clock())
        )

    async def EndAdminSession(
        self, request: admin_pb2.EndAdminSessionRequest, context: Any
    ) -> admin_pb2.EndAdminSessionResponse:
        await self.write(
            context, lambda s, c: admin_access.end_session(s, request.secret, self.clock())
        )
        return admin_pb2.EndAdminSessionResponse()
