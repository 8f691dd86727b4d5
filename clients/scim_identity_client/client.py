"""The synchronous identity-service client.

    with IdentityClient("127.0.0.1:50051") as client:
        tenant = client.create_tenant("acme")
        issued = client.issue_token("acme")
        user = client.create_user(tenant.id, User(user_name="ada@example.com"))

Every method raises a subclass of `scim_identity_client.errors.IdentityError` on
failure. Messages are the contract's types, re-exported by `scim_identity_client.types`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from scim_identity_api.env import secret
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
from .errors import Unavailable, from_rpc_error
from .watch import BATCH_EVENTS, Backoff, WatchIterator, _Resume

_T = TypeVar("_T")
#: A tenant id (a UUID as the core writes them); anything else names a tenant.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NO_CONTEXT = CallContext()


class _Start(_Resume):
    """A watch's resume state whose tenant name and "now" are looked up when the stream
    first connects (so watch() itself makes no call, and its errors come from the
    iteration, as every other stream error does)."""

    def __init__(
        self, tenant: str, *, resolve: Callable[[], tuple[str, int | None]], **kwargs: Any
    ) -> None:
        super().__init__(tenant, **kwargs)
        self._resolve: Callable[[], tuple[str, int | None]] | None = resolve

    def request(self) -> changes_pb2.WatchRequest:
        if self._resolve is not None:
            self.tenant_id, now = self._resolve()
            if now is not None:
                self.cursor = now
            self._resolve = None
        return super().request()


class IdentityClient:
    """A blocking client over one gRPC channel. Thread-safe; open one per process
    (after fork, under gunicorn)."""

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
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        self.target = target
        self.timeout = timeout
        self._tenant_ids: dict[str, str] = {}
        self._tenants = tenants_pb2_grpc.TenantServiceStub(self._channel)
        self._users = users_pb2_grpc.UserServiceStub(self._channel)
        self._groups = groups_pb2_grpc.GroupServiceStub(self._channel)
        self._roles = roles_pb2_grpc.RoleServiceStub(self._channel)
        self._changes = changes_pb2_grpc.ChangeServiceStub(self._channel)
        self._history = history_pb2_grpc.HistoryServiceStub(self._channel)
        self._policy = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, target: str | None = None, **kwargs: Any
    ) -> IdentityClient:
        """A client configured as identityctl and the example subscribers are:
        IDENTITY_TARGET (default 127.0.0.1:50051), IDENTITY_TOKEN or IDENTITY_TOKEN_FILE,
        IDENTITY_TLS_CA_FILE, IDENTITY_TLS_CERT_FILE, IDENTITY_TLS_KEY_FILE. `target` and
        other keyword arguments override. ValueError names a setting that cannot work."""
        env = os.environ if env is None else env
        return cls(
            target or env.get("IDENTITY_TARGET", "").strip() or "127.0.0.1:50051",
            **{
                "token": secret(env, "IDENTITY_TOKEN") or None,
                "tls_ca_file": env.get("IDENTITY_TLS_CA_FILE", "").strip() or None,
                "tls_cert_file": env.get("IDENTITY_TLS_CERT_FILE", "").strip() or None,
                "tls_key_file": env.get("IDENTITY_TLS_KEY_FILE", "").strip() or None,
                **kwargs,
            },
        )

    # -- plumbing ---------------------------------------------------------------

    def _tenant_id(self, tenant: str) -> str:
        """The id of `tenant`, a tenant id or name: every call that names a tenant takes
        either. A name is looked up once per client (names and ids never change)."""
        if not tenant or _UUID.fullmatch(tenant):
            return tenant  # "": the call names its tenant through a bearer
        known = self._tenant_ids.get(tenant)
        if known is None:
            known = self._tenant_ids[tenant] = self.get_tenant(tenant).id
        return known

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> IdentityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel connects; Unavailable after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise Unavailable(f"identity service at {self.target} not reachable") from exc

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def clone(self, *, options: Iterable[tuple[str, Any]] = ()) -> IdentityClient:
        """A new client (its own channel) to the same target with the same TLS
        credentials and service token."""
        return IdentityClient(
            self.target,
            credentials=self._credentials,
            timeout=self.timeout,
            options=options,
            token=self._token,
        )

    def _call(self, method: Callable[..., _T], request: Any, ctx: CallContext | None) -> _T:
        ctx = ctx or _NO_CONTEXT
        timeout = ctx.call_timeout(self.timeout)
        try:
            if ctx.on_authenticated is None:
                return method(request, timeout=timeout, metadata=ctx.metadata() + self._auth)
            # (the ignore below) multicallables are typed as plain callables
            answer, call = method.with_call(  # type: ignore[attr-defined]
                request, timeout=timeout, metadata=ctx.metadata() + self._auth
            )
            ctx.report(call.trailing_metadata())
            return answer  # type: ignore[no-any-return]  # with_call is untyped
        except grpc.RpcError as err:
            if ctx.on_authenticated is not None and isinstance(err, grpc.Call):
                ctx.report(err.trailing_metadata())
            raise from_rpc_error(err) from None

    # -- tenants and tokens -------------------------------------------------------

    def create_tenant(
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
        return self._call(self._tenants.CreateTenant, req, ctx)

    def get_tenant(self, tenant: str, *, ctx: CallContext | None = None) -> tenants_pb2.Tenant:
        """`tenant` is an id or a name."""
        req = tenants_pb2.GetTenantRequest(tenant=tenant_ref(tenant))
        return self._call(self._tenants.GetTenant, req, ctx)

    def list_tenants(self, *, ctx: CallContext | None = None) -> Iterator[tenants_pb2.Tenant]:
        token = ""
        while True:
            req = tenants_pb2.ListTenantsRequest(page_size=500, page_token=token)
            resp = self._call(self._tenants.ListTenants, req, ctx)
            yield from resp.tenants
            token = resp.next_page_token
            if not token:
                return

    def update_tenant(
        self,
        tenant: str,
        *,
        active: bool | None = None,
        display_name: str | None = None,
        ctx: CallContext | None = None,
    ) -> tenants_pb2.Tenant:
        req = tenants_pb2.UpdateTenantRequest(tenant=tenant_ref(tenant))
        if active is not None:
            req.active = active
        if display_name is not None:
            req.display_name = display_name
        return self._call(self._tenants.UpdateTenant, req, ctx)

    def issue_token(
        self,
        tenant: str,
        *,
        description: str = "",
        scope: int = tenants_pb2.TOKEN_SCOPE_FULL,
        expires: timestamp_pb2.Timestamp | None = None,
        ctx: CallContext | None = None,
    ) -> tenants_pb2.IssueTokenResponse:
        req = issue_token_request(tenant, description, scope, expires)
        return self._call(self._tenants.IssueToken, req, ctx)

    def list_tokens(
        self, tenant: str, *, include_inactive: bool = False, ctx: CallContext | None = None
    ) -> list[tenants_pb2.Token]:
        req = tenants_pb2.ListTokensRequest(
            tenant=tenant_ref(tenant), include_inactive=include_inactive
        )
        return list(self._call(self._tenants.ListTokens, req, ctx).tokens)

    def revoke_token(
        self, tenant: str, token_id: str, *, ctx: CallContext | None = None
    ) -> tenants_pb2.Token:
        req = tenants_pb2.RevokeTokenRequest(tenant=tenant_ref(tenant), token_id=token_id)
        return self._call(self._tenants.RevokeToken, req, ctx)

    def rotate_token(
        self,
        tenant: str,
        *,
        revoke_token_id: str = "",
        description: str = "",
        scope: int = tenants_pb2.TOKEN_SCOPE_UNSPECIFIED,
        expires: timestamp_pb2.Timestamp | None = None,
        ctx: CallContext | None = None,
    ) -> tenants_pb2.RotateTokenResponse:
        """Issues a token and revokes `revoke_token_id` in one transaction (works at
        the two-token limit). Description and scope default to the revoked token's."""
        req = tenants_pb2.RotateTokenRequest(
            tenant=tenant_ref(tenant),
            revoke_token_id=revoke_token_id,
            description=description,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            scope=scope,  # type: ignore[arg-type]
        )
        if expires is not None:
            req.expires.CopyFrom(expires)
        return self._call(self._tenants.RotateToken, req, ctx)

    def create_admin_link(
        self,
        tenant: str | None = None,
        *,
        operator: bool = False,
        subject: str = "",
        ctx: CallContext | None = None,
    ) -> admin_pb2.AdminLink:
        """A one-time admin console sign-in secret (15 minutes) for the admin of
        `tenant` (an id or a name), or for an operator (every tenant)."""
        req = admin_pb2.CreateAdminLinkRequest(operator=operator, subject=subject)
        if tenant is not None:
            req.tenant.CopyFrom(tenant_ref(tenant))
        return self._call(self._admin.CreateAdminLink, req, ctx)

    def redeem_admin_link(
        self, secret: str, *, ctx: CallContext | None = None
    ) -> admin_pb2.AdminSession:
        req = admin_pb2.RedeemAdminLinkRequest(secret=secret)
        return self._call(self._admin.RedeemAdminLink, req, ctx)

    def get_admin_session(
        self, secret: str, *, ctx: CallContext | None = None
    ) -> admin_pb2.AdminSession:
        req = admin_pb2.GetAdminSessionRequest(secret=secret)
        return self._call(self._admin.GetAdminSession, req, ctx)

    def reset_connector(
        self, tenant: str, *, purge: bool = False, ctx: CallContext | None = None
    ) -> tenants_pb2.ResetConnectorResponse:
        """ "Deletes the connector": revokes every token, clears the policy's rules,
        schemas and mappings, deactivates. Users and groups stay unless `purge`."""
        req = tenants_pb2.ResetConnectorRequest(tenant=tenant_ref(tenant), purge=purge)
        return self._call(self._tenants.ResetConnector, req, ctx)

    def authenticate(
        self, secret: str, *, tenant: str | None = None, ctx: CallContext | None = None
    ) -> tenants_pb2.AuthenticateTokenResponse:
        """Checks a bearer secret, optionally for one tenant (id or name)."""
        req = authenticate_request(secret, tenant)
        return self._call(self._tenants.AuthenticateToken, req, ctx)

    # -- users ------------------------------------------------------------------

    def create_user(
        self, tenant_id: str, user: users_pb2.User, *, ctx: CallContext | None = None
    ) -> users_pb2.User:
        tenant_id = self._tenant_id(tenant_id)
        req = users_pb2.CreateUserRequest(tenant_id=tenant_id, user=user)
        return self._call(self._users.CreateUser, req, ctx)

    def get_user(
        self, tenant_id: str, user_id: str, *, ctx: CallContext | None = None
    ) -> users_pb2.User:
        tenant_id = self._tenant_id(tenant_id)
        req = users_pb2.GetUserRequest(tenant_id=tenant_id, id=user_id)
        return self._call(self._users.GetUser, req, ctx)

    def list_users(
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
        """One page. `cursor=""` starts cursor paging; None uses index paging."""
        tenant_id = self._tenant_id(tenant_id)
        req = users_pb2.ListUsersRequest(
            tenant_id=tenant_id, filter=filter, sort=sort, page=page(start_index, count, cursor)
        )
        return self._call(self._users.ListUsers, req, ctx)

    def iter_users(
        self,
        tenant_id: str,
        *,
        filter: common_pb2.Filter | None = None,
        sort: common_pb2.Sort | None = None,
        page_size: int = 500,
        ctx: CallContext | None = None,
    ) -> Iterator[users_pb2.User]:
        """Every user (matching `filter`), page by page with cursor paging: each page
        a keyset read, so walking a million users costs what the first page does."""
        tenant_id = self._tenant_id(tenant_id)
        cursor = ""
        while True:
            resp = self.list_users(
                tenant_id, filter=filter, sort=sort, count=page_size, cursor=cursor, ctx=ctx
            )
            yield from resp.users
            if not resp.next_cursor:
                return
            cursor = resp.next_cursor

    def replace_user(
        self,
        tenant_id: str,
        user: users_pb2.User,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> users_pb2.User:
        """Replaces every writable attribute of the user named by `user.meta.id`."""
        tenant_id = self._tenant_id(tenant_id)
        req = users_pb2.ReplaceUserRequest(
            tenant_id=tenant_id, user=user, expected_version=expected_version
        )
        return self._call(self._users.ReplaceUser, req, ctx)

    def patch_user(
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
        return self._call(self._users.PatchUser, req, ctx)

    def delete_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        expected_version: int = 0,
        hard: bool = False,
        ctx: CallContext | None = None,
    ) -> users_pb2.DeleteUserResponse:
        """Deletes the user, or deactivates it when the tenant's policy makes DELETE a
        deactivation (`.deleted` says which). `hard=True` deletes whatever the policy."""
        tenant_id = self._tenant_id(tenant_id)
        req = delete_user_request(tenant_id, user_id, expected_version, hard)
        return self._call(self._users.DeleteUser, req, ctx)

    def jit_provision(
        self,
        tenant_id: str,
        *,
        user_name: str = "",
        email: str = "",
        given_name: str = "",
        family_name: str = "",
        display_name: str = "",
        ctx: CallContext | None = None,
    ) -> users_pb2.JitProvisionResponse:
        """Finds or creates a user at first sign-in; a later SCIM create adopts it."""
        tenant_id = self._tenant_id(tenant_id)
        req = users_pb2.JitProvisionRequest(
            tenant_id=tenant_id,
            user_name=user_name,
            email=email,
            given_name=given_name,
            family_name=family_name,
            display_name=display_name,
        )
        return self._call(self._users.JitProvision, req, ctx)

    # -- policy -----------------------------------------------------------------

    def get_policy(
        self, tenant_id: str, *, ctx: CallContext | None = None
    ) -> policy_pb2.TenantPolicy:
        tenant_id = self._tenant_id(tenant_id)
        req = policy_pb2.GetPolicyRequest(tenant_id=tenant_id)
        return self._call(self._policy.GetPolicy, req, ctx)

    def get_schemas(
        self, tenant_id: str = "", *, ctx: CallContext | None = None
    ) -> policy_pb2.GetSchemasResponse:
        """The attribute catalogue (RFC 7643 §7) and resource types; with `tenant_id`,
        the tenant's own schemas too."""
        req = policy_pb2.GetSchemasRequest(tenant_id=tenant_id)
        return self._call(self._policy.GetSchemas, req, ctx)

    def set_policy(
        self,
        tenant_id: str,
        policy: policy_pb2.TenantPolicy,
        *,
        expected_digest: str = "",
        ctx: CallContext | None = None,
    ) -> policy_pb2.TenantPolicy:
        """Replaces the tenant's whole policy; role rules are re-applied at once. With
        `expected_digest` (a preview's), VersionMismatch and nothing applied unless
        saving does exactly what that preview showed."""
        tenant_id = self._tenant_id(tenant_id)
        req = policy_pb2.SetPolicyRequest(
            tenant_id=tenant_id, policy=policy, expected_digest=expected_digest
        )
        return self._call(self._policy.SetPolicy, req, ctx)

    def preview_policy(
        self,
        tenant_id: str,
        policy: policy_pb2.TenantPolicy,
        *,
        max_effects: int = 0,
        ctx: CallContext | None = None,
    ) -> policy_pb2.PolicyPreview:
        """What set_policy would do now (roles gained and lost, deactivations,
        deletions), computed by the core's own apply path and rolled back."""
        tenant_id = self._tenant_id(tenant_id)
        req = policy_pb2.PreviewPolicyRequest(
            tenant_id=tenant_id, policy=policy, max_effects=max_effects
        )
        return self._call(self._policy.PreviewPolicy, req, ctx)

    # -- groups -----------------------------------------------------------------

    def create_group(
        self, tenant_id: str, group: groups_pb2.Group, *, ctx: CallContext | None = None
    ) -> groups_pb2.Group:
        tenant_id = self._tenant_id(tenant_id)
        req = groups_pb2.CreateGroupRequest(tenant_id=tenant_id, group=group)
        return self._call(self._groups.CreateGroup, req, ctx)

    def get_group(
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
        tenant_id = self._tenant_id(tenant_id)
        req = get_group_request(tenant_id, group_id, include_members, member_limit)
        return self._call(self._groups.GetGroup, req, ctx)

    def list_groups(
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
        tenant_id = self._tenant_id(tenant_id)
        req = list_groups_request(
            tenant_id, filter, sort, page(start_index, count, cursor), include_members
        )
        return self._call(self._groups.ListGroups, req, ctx)

    def iter_groups(
        self,
        tenant_id: str,
        *,
        filter: common_pb2.Filter | None = None,
        sort: common_pb2.Sort | None = None,
        page_size: int = 500,
        include_members: bool = False,
        ctx: CallContext | None = None,
    ) -> Iterator[groups_pb2.Group]:
        """Every group (matching `filter`), page by page with cursor paging."""
        tenant_id = self._tenant_id(tenant_id)
        cursor = ""
        while True:
            resp = self.list_groups(
                tenant_id,
                filter=filter,
                sort=sort,
                count=page_size,
                cursor=cursor,
                include_members=include_members,
                ctx=ctx,
            )
            yield from resp.groups
            if not resp.next_cursor:
                return
            cursor = resp.next_cursor

    def replace_group(
        self,
        tenant_id: str,
        group: groups_pb2.Group,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> groups_pb2.Group:
        tenant_id = self._tenant_id(tenant_id)
        req = groups_pb2.ReplaceGroupRequest(
            tenant_id=tenant_id, group=group, expected_version=expected_version
        )
        return self._call(self._groups.ReplaceGroup, req, ctx)

    def update_group(
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
        tenant_id = self._tenant_id(tenant_id)
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
        return self._call(self._groups.UpdateGroup, req, ctx)

    def patch_group(
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
        return self._call(self._groups.PatchGroup, req, ctx)

    def delete_group(
        self,
        tenant_id: str,
        group_id: str,
        *,
        expected_version: int = 0,
        ctx: CallContext | None = None,
    ) -> None:
        tenant_id = self._tenant_id(tenant_id)
        req = groups_pb2.DeleteGroupRequest(
            tenant_id=tenant_id, id=group_id, expected_version=expected_version
        )
        self._call(self._groups.DeleteGroup, req, ctx)

    def list_members(
        self,
        tenant_id: str,
        group_id: str,
        *,
        page_size: int = 1000,
        ctx: CallContext | None = None,
    ) -> Iterator[groups_pb2.Member]:
        """Every member of a group, fetched page by page."""
        tenant_id = self._tenant_id(tenant_id)
        token = ""
        while True:
            req = groups_pb2.ListMembersRequest(
                tenant_id=tenant_id, group_id=group_id, page_size=page_size, page_token=token
            )
            resp = self._call(self._groups.ListMembers, req, ctx)
            yield from resp.members
            token = resp.next_page_token
            if not token:
                return

    # -- roles ------------------------------------------------------------------

    def create_role(
        self, tenant_id: str, name: str, *, description: str = "", ctx: CallContext | None = None
    ) -> roles_pb2.Role:
        tenant_id = self._tenant_id(tenant_id)
        req = roles_pb2.CreateRoleRequest(tenant_id=tenant_id, name=name, description=description)
        return self._call(self._roles.CreateRole, req, ctx)

    def list_roles(self, tenant_id: str, *, ctx: CallContext | None = None) -> list[roles_pb2.Role]:
        tenant_id = self._tenant_id(tenant_id)
        req = roles_pb2.ListRolesRequest(tenant_id=tenant_id)
        return list(self._call(self._roles.ListRoles, req, ctx).roles)

    def delete_role(self, tenant_id: str, name: str, *, ctx: CallContext | None = None) -> None:
        tenant_id = self._tenant_id(tenant_id)
        self._call(
            self._roles.DeleteRole, roles_pb2.DeleteRoleRequest(tenant_id=tenant_id, name=name), ctx
        )

    def assign_role(
        self,
        tenant_id: str,
        user_id: str,
        role: str,
        *,
        source: int = users_pb2.ROLE_SOURCE_LOCAL,
        ctx: CallContext | None = None,
    ) -> roles_pb2.Assignment:
        tenant_id = self._tenant_id(tenant_id)
        req = roles_pb2.AssignRoleRequest(
            tenant_id=tenant_id,
            user_id=user_id,
            role=role,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            source=source,  # type: ignore[arg-type]
        )
        return self._call(self._roles.AssignRole, req, ctx)

    def revoke_role(
        self,
        tenant_id: str,
        user_id: str,
        role: str,
        *,
        source: int = users_pb2.ROLE_SOURCE_LOCAL,
        ctx: CallContext | None = None,
    ) -> roles_pb2.Assignment:
        tenant_id = self._tenant_id(tenant_id)
        req = roles_pb2.RevokeRoleRequest(
            tenant_id=tenant_id,
            user_id=user_id,
            role=role,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            source=source,  # type: ignore[arg-type]
        )
        return self._call(self._roles.RevokeRole, req, ctx)

    def list_assignments(
        self,
        tenant_id: str,
        *,
        user_id: str = "",
        role: str = "",
        include_grants: bool = False,
        ctx: CallContext | None = None,
    ) -> list[roles_pb2.Assignment]:
        """With `user_id` and `include_grants`: each SCIM-managed assignment with the
        rules that grant it (its provenance)."""
        tenant_id = self._tenant_id(tenant_id)
        req = roles_pb2.ListAssignmentsRequest(
            tenant_id=tenant_id, user_id=user_id, role=role, include_grants=include_grants
        )
        return list(self._call(self._roles.ListAssignments, req, ctx).assignments)

    # -- changes and history ------------------------------------------------------

    def get_revision(
        self, tenant_id: str, *, ctx: CallContext | None = None
    ) -> changes_pb2.GetRevisionResponse:
        tenant_id = self._tenant_id(tenant_id)
        req = changes_pb2.GetRevisionRequest(tenant_id=tenant_id)
        return self._call(self._changes.GetRevision, req, ctx)

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
    ) -> WatchIterator:
        """The tenant's events after revision `since`, then live ones, resuming by
        itself across disconnects; see scim_identity_client.watch.

        Where it starts, by default (`since=None`): after the checkpoint's revision when
        the checkpoint has one, else now (the tenant's revision when the stream first
        connects): only changes made from then on, as `identityctl watch` prints them.
        `since=0` replays every event still kept first; list, then watch from the
        revision the list reports, for a copy without a gap.

        `resource_types` ("User", "Group", ...) and `event_types` (EventType numbers or
        names such as "user.created") filter on the server. `give_up_after`: seconds
        of failed reconnects before raising Unavailable (None: never).
        `max_batch_events`: events the server may send in one message (they are still
        returned one at a time, and the cursor and checkpoint move per event returned);
        0 asks for one event per message."""
        start_now = since is None and (checkpoint is None or checkpoint.load() is None)
        core = _Start(
            tenant_id,
            resolve=lambda: self._start(tenant_id, start_now, ctx),
            since=since,
            checkpoint=checkpoint,
            resource_types=resource_types,
            event_types=event_types,
            heartbeat_seconds=heartbeat_seconds,
            backoff=backoff,
            give_up_after=give_up_after,
            max_batch_events=max_batch_events,
        )
        return WatchIterator(self._changes, core, (ctx or _NO_CONTEXT).metadata() + self._auth)

    def _start(self, tenant: str, now: bool, ctx: CallContext | None) -> tuple[str, int | None]:
        """(tenant id, revision to start after when starting now) of a new watch."""
        tenant_id = self._tenant_id(tenant)
        return tenant_id, self.get_revision(tenant_id, ctx=ctx).revision if now else None

    def record_operation(
        self, operation: history_pb2.Operation, *, ctx: CallContext | None = None
    ) -> history_pb2.Operation:
        req = history_pb2.RecordOperationRequest(operation=operation)
        return self._call(self._history.RecordOperation, req, ctx).operation

    def record_operations(
        self, operations: Iterable[history_pb2.Operation], *, ctx: CallContext | None = None
    ) -> history_pb2.RecordOperationsResponse:
        """Records many operations (of any tenants) in one call."""
        req = history_pb2.RecordOperationsRequest(operations=list(operations))
        return self._call(self._history.RecordOperations, req, ctx)

    def list_operations(
        self,
        tenant_id: str,
        *,
        kinds: Iterable[int] = (),
        resource_type: str = "",
        outcome: int = history_pb2.OUTCOME_FILTER_ANY,
        since: timestamp_pb2.Timestamp | None = None,
        until: timestamp_pb2.Timestamp | None = None,
        request_id: str = "",
        status: int = 0,
        source: int = history_pb2.OPERATION_SOURCE_ANY,
        oldest_first: bool = False,
        page_size: int = 100,
        page_token: str = "",
        ctx: CallContext | None = None,
    ) -> history_pb2.ListOperationsResponse:
        """One page of the operations history, newest first (or oldest first);
        `request_id` and `status` match exactly, `source` picks SCIM requests,
        API-token requests or admins' actions."""
        query = OperationQuery(
            kinds=kinds,
            resource_type=resource_type,
            outcome=outcome,
            since=since,
            until=until,
            request_id=request_id,
            status=status,
            source=source,
            oldest_first=oldest_first,
        )
        req = query.request(self._tenant_id(tenant_id), page_size, page_token)
        return self._call(self._history.ListOperations, req, ctx)

    def get_operation(
        self, tenant_id: str, operation_id: str, *, ctx: CallContext | None = None
    ) -> history_pb2.Operation:
        """One record of the tenant's history (NotFound: none of that id in the tenant)."""
        req = history_pb2.GetOperationRequest(
            tenant_id=self._tenant_id(tenant_id), operation_id=operation_id
        )
        return self._call(self._history.GetOperation, req, ctx)

    def iter_operations(
        self,
        tenant_id: str,
        *,
        kinds: Iterable[int] = (),
        resource_type: str = "",
        outcome: int = history_pb2.OUTCOME_FILTER_ANY,
        since: timestamp_pb2.Timestamp | None = None,
        until: timestamp_pb2.Timestamp | None = None,
        page_size: int = 100,
        ctx: CallContext | None = None,
    ) -> Iterator[history_pb2.Operation]:
        """Every operation-history record that matches, newest first, page by page."""
        tenant_id = self._tenant_id(tenant_id)
        token = ""
        while True:
            resp = self.list_operations(
                tenant_id,
                kinds=kinds,
                resource_type=resource_type,
                outcome=outcome,
                since=since,
                until=until,
                page_size=page_size,
                page_token=token,
                ctx=ctx,
            )
            yield from resp.operations
            token = resp.next_page_token
            if not token:
                return
