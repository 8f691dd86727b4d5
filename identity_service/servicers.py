"""gRPC servicers: translate requests to domain calls inside one transaction, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy.orm import Session

from identity.v1 import (
    changes_pb2,
    changes_pb2_grpc,
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

from . import connector, groups, history, policy, roles, tenants, users
from .context import RequestContext
from .db import Database
from .errors import Unavailable
from .models import TenantRow
from .policy_apply import apply_policy
from .settings import Settings
from .streams import StreamHub

T = TypeVar("T")


class _Base:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.db.run(self._write, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.db.run(self._read, fn, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        with self.db.write() as s:
            return fn(s, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.db.read() as s:
            return fn(s, *args)


def ctx_of(context: grpc.aio.ServicerContext[Any, Any]) -> RequestContext:
    return RequestContext.from_metadata(tuple(context.invocation_metadata() or ()))


def _tenant(s: Session, tenant_id: str) -> TenantRow:
    return tenants.by_id(s, tenant_id)


class TenantServicer(_Base, tenants_pb2_grpc.TenantServiceServicer):
    async def CreateTenant(
        self, request: tenants_pb2.CreateTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: tenants.create(s, request.name, request.display_name, ctx)
        )

    async def GetTenant(
        self, request: tenants_pb2.GetTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        return await self.read(lambda s: tenants.to_proto(tenants.resolve(s, request.tenant)))

    async def ListTenants(
        self, request: tenants_pb2.ListTenantsRequest, context: Any
    ) -> tenants_pb2.ListTenantsResponse:
        return await self.read(
            lambda s: tenants.list_page(s, request.page_size, request.page_token)
        )

    async def UpdateTenant(
        self, request: tenants_pb2.UpdateTenantRequest, context: Any
    ) -> tenants_pb2.Tenant:
        ctx = ctx_of(context)
        return await self.write(lambda s: tenants.update(s, request, ctx))

    async def IssueToken(
        self, request: tenants_pb2.IssueTokenRequest, context: Any
    ) -> tenants_pb2.IssueTokenResponse:
        ctx = ctx_of(context)
        return await self.write(lambda s: tenants.issue_token(s, request, ctx))

    async def ListTokens(
        self, request: tenants_pb2.ListTokensRequest, context: Any
    ) -> tenants_pb2.ListTokensResponse:
        return await self.read(lambda s: tenants.list_tokens(s, request))

    async def RevokeToken(
        self, request: tenants_pb2.RevokeTokenRequest, context: Any
    ) -> tenants_pb2.Token:
        ctx = ctx_of(context)
        return await self.write(lambda s: tenants.revoke_token(s, request, ctx))

    async def RotateToken(
        self, request: tenants_pb2.RotateTokenRequest, context: Any
    ) -> tenants_pb2.RotateTokenResponse:
        ctx = ctx_of(context)
        return await self.write(lambda s: tenants.rotate_token(s, request, ctx))

    async def ResetConnector(
        self, request: tenants_pb2.ResetConnectorRequest, context: Any
    ) -> tenants_pb2.ResetConnectorResponse:
        ctx = ctx_of(context)
        return await self.write(lambda s: connector.reset(s, request, ctx))

    async def AuthenticateToken(
        self, request: tenants_pb2.AuthenticateTokenRequest, context: Any
    ) -> tenants_pb2.AuthenticateTokenResponse:
        answer, touch = await self.read(lambda s: tenants.authenticate(s, request))
        if touch is not None:
            await self.write(lambda s: tenants.touch_token(s, touch))
        return answer


class UserServicer(_Base, users_pb2_grpc.UserServiceServicer):
    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: Any
    ) -> users_pb2.User:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: users.create(s, _tenant(s, request.tenant_id), request.user, ctx)
        )

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Any) -> users_pb2.User:
        return await self.read(lambda s: users.get(s, _tenant(s, request.tenant_id), request.id))

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Any
    ) -> users_pb2.ListUsersResponse:
        return await self.read(
            lambda s: users.list_users(s, _tenant(s, request.tenant_id), request, self.settings)
        )

    async def ReplaceUser(
        self, request: users_pb2.ReplaceUserRequest, context: Any
    ) -> users_pb2.User:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: users.replace(
                s, _tenant(s, request.tenant_id), request.user, request.expected_version, ctx
            )
        )

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: Any
    ) -> users_pb2.DeleteUserResponse:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: users.remove(
                s,
                _tenant(s, request.tenant_id),
                request.id,
                request.expected_version,
                ctx,
                mode=request.mode,
            )
        )

    async def JitProvision(
        self, request: users_pb2.JitProvisionRequest, context: Any
    ) -> users_pb2.JitProvisionResponse:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: users.jit_provision(s, _tenant(s, request.tenant_id), request, ctx)
        )


class PolicyServicer(_Base, policy_pb2_grpc.PolicyServiceServicer):
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: Any
    ) -> policy_pb2.TenantPolicy:
        return await self.read(lambda s: policy.load(_tenant(s, request.tenant_id)))

    async def SetPolicy(
        self, request: policy_pb2.SetPolicyRequest, context: Any
    ) -> policy_pb2.TenantPolicy:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: apply_policy(s, _tenant(s, request.tenant_id), request.policy, ctx)
        )


class GroupServicer(_Base, groups_pb2_grpc.GroupServiceServicer):
    async def CreateGroup(
        self, request: groups_pb2.CreateGroupRequest, context: Any
    ) -> groups_pb2.Group:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: groups.create(s, _tenant(s, request.tenant_id), request.group, ctx)
        )

    async def GetGroup(self, request: groups_pb2.GetGroupRequest, context: Any) -> groups_pb2.Group:
        return await self.read(
            lambda s: groups.get(
                s, _tenant(s, request.tenant_id), request.id, request.include_members, self.settings
            )
        )

    async def ListGroups(
        self, request: groups_pb2.ListGroupsRequest, context: Any
    ) -> groups_pb2.ListGroupsResponse:
        return await self.read(
            lambda s: groups.list_groups(s, _tenant(s, request.tenant_id), request, self.settings)
        )

    async def ReplaceGroup(
        self, request: groups_pb2.ReplaceGroupRequest, context: Any
    ) -> groups_pb2.Group:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: groups.replace(
                s, _tenant(s, request.tenant_id), request.group, request.expected_version, ctx
            )
        )

    async def UpdateGroup(
        self, request: groups_pb2.UpdateGroupRequest, context: Any
    ) -> groups_pb2.Group:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: groups.update_group(s, _tenant(s, request.tenant_id), request, ctx)
        )

    async def DeleteGroup(
        self, request: groups_pb2.DeleteGroupRequest, context: Any
    ) -> groups_pb2.DeleteGroupResponse:
        ctx = ctx_of(context)
        await self.write(
            lambda s: groups.remove(
                s, _tenant(s, request.tenant_id), request.id, request.expected_version, ctx
            )
        )
        return groups_pb2.DeleteGroupResponse()

    async def ListMembers(
        self, request: groups_pb2.ListMembersRequest, context: Any
    ) -> groups_pb2.ListMembersResponse:
        return await self.read(
            lambda s: groups.list_members(s, _tenant(s, request.tenant_id), request)
        )


class RoleServicer(_Base, roles_pb2_grpc.RoleServiceServicer):
    async def CreateRole(
        self, request: roles_pb2.CreateRoleRequest, context: Any
    ) -> roles_pb2.Role:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: roles.create_role(
                s, _tenant(s, request.tenant_id), request.name, request.description, ctx
            )
        )

    async def ListRoles(
        self, request: roles_pb2.ListRolesRequest, context: Any
    ) -> roles_pb2.ListRolesResponse:
        return await self.read(lambda s: roles.list_roles(s, _tenant(s, request.tenant_id)))

    async def DeleteRole(
        self, request: roles_pb2.DeleteRoleRequest, context: Any
    ) -> roles_pb2.DeleteRoleResponse:
        ctx = ctx_of(context)
        await self.write(
            lambda s: roles.delete_role(s, _tenant(s, request.tenant_id), request.name, ctx)
        )
        return roles_pb2.DeleteRoleResponse()

    async def AssignRole(
        self, request: roles_pb2.AssignRoleRequest, context: Any
    ) -> roles_pb2.Assignment:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: roles.assign(s, _tenant(s, request.tenant_id), request, ctx)
        )

    async def RevokeRole(
        self, request: roles_pb2.RevokeRoleRequest, context: Any
    ) -> roles_pb2.Assignment:
        ctx = ctx_of(context)
        return await self.write(
            lambda s: roles.revoke(s, _tenant(s, request.tenant_id), request, ctx)
        )

    async def ListAssignments(
        self, request: roles_pb2.ListAssignmentsRequest, context: Any
    ) -> roles_pb2.ListAssignmentsResponse:
        return await self.read(
            lambda s: roles.list_assignments(s, _tenant(s, request.tenant_id), request)
        )


class HistoryServicer(_Base, history_pb2_grpc.HistoryServiceServicer):
    async def RecordOperation(
        self, request: history_pb2.RecordOperationRequest, context: Any
    ) -> history_pb2.RecordOperationResponse:
        op = request.operation
        recorded = await self.write(lambda s: history.record(s, _tenant(s, op.tenant_id), op))
        return history_pb2.RecordOperationResponse(operation=recorded)

    async def ListOperations(
        self, request: history_pb2.ListOperationsRequest, context: Any
    ) -> history_pb2.ListOperationsResponse:
        return await self.read(
            lambda s: history.list_operations(s, _tenant(s, request.tenant_id), request)
        )


class ChangeServicer(_Base, changes_pb2_grpc.ChangeServiceServicer):
    """GetRevision here; Watch is served by identity_service.streams."""

    #: Set by IdentityService: the process's stream hub.
    streams: StreamHub | None = None

    async def Watch(
        self,
        request: changes_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[changes_pb2.WatchRequest, changes_pb2.WatchResponse],
    ) -> AsyncIterator[changes_pb2.WatchResponse]:
        if self.streams is None:
            raise Unavailable("change streams are not running on this server")
        async for item in self.streams.watch(request, context):
            yield item

    async def GetRevision(
        self, request: changes_pb2.GetRevisionRequest, context: Any
    ) -> changes_pb2.GetRevisionResponse:
        def get(s: Session) -> changes_pb2.GetRevisionResponse:
            t = _tenant(s, request.tenant_id)
            return changes_pb2.GetRevisionResponse(
                revision=t.revision,
                # The oldest revision still kept; 0 while nothing was compacted.
                oldest_revision=t.compacted_through + 1 if t.compacted_through else 0,
            )

        return await self.read(get)
