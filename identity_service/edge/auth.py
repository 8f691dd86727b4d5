"""Who is calling the core and what they may do: the one owner of authentication and
authorization.

Two kinds of caller, two checks, one table (METHODS, keyed by RPC method):

- Service credentials. With `IDENTITY_CREDENTIALS_FILE` set, every call except
  grpc.health (reflection too: it maps the whole API) must carry
  `authorization: Bearer <secret>` metadata naming one of the file's credentials:

      [{"name": "gateway", "secret_sha256": "<hex>", "role": "gateway"},
       {"name": "audit", "secret_sha256": "<hex>", "role": "subscriber", "tenants": ["acme"]}]

  `admin` may call everything; `gateway` and `subscriber` what METHODS lists for
  them. A credential with `tenants` (names or ids) may only name those tenants in
  its requests; a request naming another tenant, or none, is PERMISSION_DENIED. No
  credential (or an unknown one) is UNAUTHENTICATED. Only the secrets' SHA-256 is
  configured, and presented secrets are compared in constant time. Secrets are
  never logged: a refusal logs the method and the credential's name. AuthInterceptor
  runs before the error interceptor, so a refused call never reaches a servicer.
- A tenant's API token (the SCIM bearer, `identity-bearer`), passed on by a service
  caller: Caller checks it in the call's own transaction, refuses what its scope
  does not allow for the method (METHODS: read-only tokens only read, users-only
  tokens never reach groups), shapes what a users-only token sees of users, and
  answers the AuthenticatedCaller trailer (protos/scim_identity_api/v1/bearer.proto).

A stream replica (IDENTITY_ROLE=streams) serves only what METHODS marks `replica`
(ReplicaRoleInterceptor), whoever calls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from sqlalchemy import select
from sqlalchemy.orm import Session

from scim_identity_api.metadata import AUTHORIZATION_KEY, CALLER_KEY
from scim_identity_api.v1 import bearer_pb2, history_pb2, policy_pb2, tenants_pb2, users_pb2

from ..context import RequestContext
from ..domain import policy, tenants
from ..errors import (
    DeadlineExceeded,
    DomainError,
    NotFound,
    PermissionDenied,
    ReplicaReadOnly,
    TokenScope,
    Unauthenticated,
)
from ..schema import USER_SCHEMA
from ..storage.db import Database, Reader
from ..storage.filters import names_attribute, path_is
from ..storage.models import TenantRow
from .status import abort

if TYPE_CHECKING:  # generic only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger("identity_service.auth")

ROLES = ("admin", "gateway", "subscriber")
GATEWAY = frozenset({"gateway"})
SUBSCRIBER = frozenset({"subscriber"})
BOTH = GATEWAY | SUBSCRIBER
NOBODY: frozenset[str] = frozenset()  # admin credentials only

FULL = tenants_pb2.TOKEN_SCOPE_FULL
READ_ONLY = tenants_pb2.TOKEN_SCOPE_READ_ONLY
USERS_ONLY = tenants_pb2.TOKEN_SCOPE_USERS_ONLY


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call one RPC. `roles`: the service roles besides admin (which may call
    every RPC). `scopes`: the token scopes a call passing a tenant's API token may
    have; `write` and `groups` say why (read-only tokens make no changes, users-only
    tokens never reach groups)."""

    roles: frozenset[str]
    write: bool = False
    groups: bool = False
    #: A stream replica (IDENTITY_ROLE=streams) serves it: change streams and the
    #: reads that change nothing (not AuthenticateToken: it records the token's use).
    replica: bool = False

    @property
    def scopes(self) -> frozenset[int]:
        allowed = {FULL}
        if not self.write:
            allowed.add(READ_ONLY)
        if not self.groups:
            allowed.add(USERS_ONLY)
        return frozenset(allowed)


def _service(name: str, **methods: Access) -> dict[str, Access]:
    return {f"/identity.v1.{name}/{method}": access for method, access in methods.items()}


#: THE table: every RPC of the contract, who may call it and with which token scope.
#: The gateway's calls are those of scim_gateway/ through the client library;
#: subscribers read and watch.
METHODS: Mapping[str, Access] = MappingProxyType(
    _service(
        "TenantService",
        CreateTenant=Access(NOBODY, write=True),
        GetTenant=Access(BOTH, replica=True),
        ListTenants=Access(SUBSCRIBER, replica=True),
        UpdateTenant=Access(NOBODY, write=True),
        IssueToken=Access(NOBODY, write=True),
        ListTokens=Access(NOBODY, replica=True),
        RevokeToken=Access(NOBODY, write=True),
        RotateToken=Access(NOBODY, write=True),
        ResetConnector=Access(NOBODY, write=True),
        AuthenticateToken=Access(GATEWAY),
    )
    | _service(
        "UserService",
        CreateUser=Access(GATEWAY, write=True),
        GetUser=Access(BOTH, replica=True),
        ListUsers=Access(BOTH, replica=True),
        ReplaceUser=Access(GATEWAY, write=True),
        PatchUser=Access(GATEWAY, write=True),
        DeleteUser=Access(GATEWAY, write=True),
        JitProvision=Access(NOBODY, write=True),
    )
    | _service(
        "GroupService",
        CreateGroup=Access(GATEWAY, write=True, groups=True),
        GetGroup=Access(BOTH, groups=True, replica=True),
        ListGroups=Access(BOTH, groups=True, replica=True),
        ReplaceGroup=Access(GATEWAY, write=True, groups=True),
        UpdateGroup=Access(GATEWAY, write=True, groups=True),
        PatchGroup=Access(GATEWAY, write=True, groups=True),
        DeleteGroup=Access(GATEWAY, write=True, groups=True),
        ListMembers=Access(BOTH, groups=True, replica=True),
    )
    | _service(
        "PolicyService",
        GetPolicy=Access(GATEWAY, replica=True),
        GetSchemas=Access(GATEWAY),
        SetPolicy=Access(NOBODY, write=True),
        # A write's transaction, rolled back: on the writer, admins only, as SetPolicy.
        PreviewPolicy=Access(NOBODY, write=True),
    )
    | _service(
        "RoleService",
        CreateRole=Access(NOBODY, write=True),
        ListRoles=Access(SUBSCRIBER, replica=True),
        DeleteRole=Access(NOBODY, write=True),
        AssignRole=Access(NOBODY, write=True),
        RevokeRole=Access(NOBODY, write=True),
        ListAssignments=Access(SUBSCRIBER, replica=True),
    )
    | _service(
        "HistoryService",
        RecordOperation=Access(GATEWAY, write=True),
        RecordOperations=Access(GATEWAY, write=True),
        ListOperations=Access(NOBODY, replica=True),
        GetOperation=Access(NOBODY, replica=True),
    )
    | _service(
        "ChangeService",
        Watch=Access(SUBSCRIBER, replica=True),
        GetRevision=Access(SUBSCRIBER, replica=True),
    )
    # The admin console's sign-in (and a vendor backend's CreateAdminLink): admin
    # credentials only. A link or session secret is a sign-in, never a tenant's API
    # token: these calls take no bearer, so every scope is beside the point.
    | _service(
        "AdminService",
        CreateAdminLink=Access(NOBODY, write=True),
        RedeemAdminLink=Access(NOBODY, write=True),
        GetAdminSession=Access(NOBODY),
        EndAdminSession=Access(NOBODY, write=True),
    )
)
_ALL_SCOPES = frozenset({FULL, READ_ONLY, USERS_ONLY})
#: A method the table does not name (none of the contract's): admin only, full scope.
UNLISTED = Access(NOBODY, write=True, groups=True)


def read_only_refusal() -> TokenScope:
    return TokenScope(
        "This token's scope is read-only: it may read and search, not make "
        "changes. Use a token with full scope to make changes."
    )


def users_only_refusal() -> TokenScope:
    return TokenScope(
        "This token's scope is users-only: it may not read or change Groups. "
        "Use a token with full scope for groups."
    )


#: What a stream replica (IDENTITY_ROLE=streams) serves: the table's `replica` rows.
STREAM_REPLICA_METHODS = frozenset(m for m, access in METHODS.items() if access.replica)


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    secret_sha256: str
    role: str
    #: Lower-cased tenant names or ids; empty: every tenant.
    tenants: frozenset[str] = frozenset()

    def allows(self, method: str) -> bool:
        return self.role == "admin" or self.role in METHODS.get(method, UNLISTED).roles


def hash_secret(secret: str) -> str:
    """The `secret_sha256` to configure for a secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_credentials(doc: Any, source: str = "credentials") -> tuple[Credential, ...]:
    """Credentials from the file's JSON; SystemExit naming what is wrong."""
    if not isinstance(doc, list) or not doc:
        raise SystemExit(f"{source}: expected a non-empty JSON list of credentials")
    out: list[Credential] = []
    for i, item in enumerate(doc):
        where = f"{source}[{i}]"
        if not isinstance(item, dict):
            raise SystemExit(f"{where}: expected an object")
        name, digest, role = item.get("name"), item.get("secret_sha256"), item.get("role")
        tenants = item.get("tenants") or []
        if not isinstance(name, str) or not name:
            raise SystemExit(f"{where}: 'name' must be a non-empty string")
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest.lower())
        ):
            raise SystemExit(f"{where}: 'secret_sha256' must be 64 hex digits")
        if role not in ROLES:
            raise SystemExit(f"{where}: 'role' must be one of {', '.join(ROLES)}")
        if not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants):
            raise SystemExit(f"{where}: 'tenants' must be a list of tenant names or ids")
        out.append(
            Credential(
                name=name,
                secret_sha256=digest.lower(),
                role=role,
                tenants=frozenset(t.strip().lower() for t in tenants),
            )
        )
    return tuple(out)


def load_credentials(path: str) -> tuple[Credential, ...]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"IDENTITY_CREDENTIALS_FILE {path}: {type(exc).__name__}") from None
    return parse_credentials(doc, path)


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            v = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, secret = v.strip().partition(" ")
            return secret.strip() if scheme.lower() == "bearer" else ""
    return ""


def _tenants_named(request: Any, metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """The tenants a request names (ids or names), lower-cased; [] when none. A call
    that carries a SCIM bearer may name its tenant only in `identity-tenant` (the
    core then checks the bearer belongs to it); a history batch names one per record."""
    if isinstance(request, history_pb2.RecordOperationsRequest):
        named = [op.tenant_id.strip().lower() for op in request.operations]
        return named if named and all(named) else []
    one = tenant_named(request).strip().lower()
    if not one:
        one = RequestContext.from_metadata(tuple(metadata or ())).tenant_ref.strip().lower()
    return [one] if one else []


def tenant_named(request: Any) -> str:
    """The tenant a request names, as given (an id, or a name in a TenantRef); "" when
    none. Requests name it as tenant_id, as a TenantRef (admin calls), or in their
    history operation; a call may also leave it to the bearer it passes."""
    tenant_id = getattr(request, "tenant_id", "")
    if isinstance(tenant_id, str) and tenant_id:
        return tenant_id
    ref = getattr(request, "tenant", None)
    if ref is not None and hasattr(ref, "WhichOneof"):
        which = ref.WhichOneof("ref")
        if which:
            return str(getattr(ref, which))
    op = getattr(request, "operation", None)
    return str(getattr(op, "tenant_id", "") or "")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, credentials: Sequence[Credential], db: Database) -> None:
        self._credentials = tuple(credentials)
        self._db = db
        # Tenant ids and names never change, so what was resolved once stays true.
        self._resolved: dict[str, tuple[str, str]] = {}

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Credential | None:
        secret = _bearer(metadata)
        if not secret or len(secret) > 4096:
            return None
        digest = hash_secret(secret)
        found = None
        for cred in self._credentials:  # every one compared: no early exit
            if hmac.compare_digest(digest, cred.secret_sha256):
                found = cred
        return found

    def _lookup(self, ref: str) -> tuple[str, str] | None:
        try:
            as_id: str | None = str(uuid.UUID(ref))
        except ValueError:
            as_id = None
        with self._db.read() as s:
            cond = TenantRow.id == as_id if as_id else TenantRow.name == ref
            row = s.execute(select(TenantRow.id, TenantRow.name).where(cond)).first()
        return (str(row[0]), str(row[1])) if row else None

    async def _tenant_allowed(
        self, cred: Credential, request: Any, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> bool:
        refs = _tenants_named(request, metadata)
        if not refs:
            # The built-in attribute catalogue (GetSchemas for no tenant, no bearer)
            # is no tenant's data: any gateway may read it.
            return (
                isinstance(request, policy_pb2.GetSchemasRequest)
                and not request.tenant_id
                and not RequestContext.from_metadata(tuple(metadata or ())).bearer
            )
        for ref in set(refs):
            if not await self._one_allowed(cred, ref):
                return False
        return True

    async def _one_allowed(self, cred: Credential, ref: str) -> bool:
        if ref in cred.tenants:
            return True
        known = self._resolved.get(ref)
        if known is None:
            known = await self._db.run(self._lookup, ref)
            if known is None:
                return False
            self._resolved[ref] = known
        return known[0] in cred.tenants or known[1] in cred.tenants

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith("/grpc.health."):
            return handler  # health stays open for probes; reflection needs a credential
        cred = self.identify(details.invocation_metadata)
        short = method.rsplit("/", 1)[-1]
        if cred is None:
            log.warning("refused %s: no valid service credential", short)
            return _refusing(
                handler,
                method,
                Unauthenticated(
                    "a service credential is required: send 'authorization: Bearer <secret>'"
                ),
            )
        if method.startswith("/grpc.reflection."):
            return handler  # any service credential may read the API's descriptors
        if not cred.allows(method):
            log.warning("refused %s to credential %r (role %s)", short, cred.name, cred.role)
            return _refusing(
                handler,
                method,
                PermissionDenied(
                    f"credential {cred.name!r} (role {cred.role}) may not call {short}"
                ),
            )
        actor = RequestContext.from_metadata(tuple(details.invocation_metadata or ()))
        if actor.actor_kind == "admin" and cred.role != "admin":
            # The actor decides what a change may do (local edits) and what the audit
            # trail says: only admin credentials may speak for an administrator.
            log.warning("refused %s to credential %r: claims an admin actor", short, cred.name)
            return _refusing(
                handler,
                method,
                PermissionDenied(
                    f"credential {cred.name!r} (role {cred.role}) may not act as an admin"
                ),
            )
        if not cred.tenants:
            return handler
        return self._tenant_checked(handler, method, cred)

    def _tenant_checked(self, handler: Handler, method: str, cred: Credential) -> Handler:
        denied = PermissionDenied(f"credential {cred.name!r} may not use this tenant")
        short = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                if not await self._tenant_allowed(cred, request, context.invocation_metadata()):
                    log.warning("refused %s to credential %r: tenant", short, cred.name)
                    await abort(context, denied, method)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                if not await self._tenant_allowed(cred, request, context.invocation_metadata()):
                    log.warning("refused %s to credential %r: tenant", short, cred.name)
                    await abort(context, denied, method)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return _refusing(handler, method, denied)  # the contract has no client streams


class ReplicaRoleInterceptor(grpc.aio.ServerInterceptor):
    """On a stream replica (IDENTITY_ROLE=streams), every RPC outside
    STREAM_REPLICA_METHODS is refused with FAILED_PRECONDITION naming the role, before
    it reaches a servicer: such a replica serves Watch and reads from the shared
    PostgreSQL and must never write."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith("/grpc.") or method in STREAM_REPLICA_METHODS:
            return handler
        short = method.rsplit("/", 1)[-1]
        return _refusing(
            handler,
            method,
            ReplicaReadOnly(
                f"this identity-service runs with IDENTITY_ROLE=streams: it serves Watch, "
                f"GetRevision and reads only; call {short} on a replica with "
                "IDENTITY_ROLE=all"
            ),
        )


def _refusing(handler: Handler, method: str, err: DomainError) -> Handler:
    """A handler of the same shape that answers `err` without running the servicer."""
    if handler.stream_stream is not None:  # reflection

        async def refuse_bidi(requests: Any, context: Context) -> AsyncIterator[Any]:
            await abort(context, err, method)
            return
            yield  # an async generator, like the handler it replaces

        return grpc.stream_stream_rpc_method_handler(
            refuse_bidi,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:

        async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await abort(context, err, method)
            return
            yield  # an async generator, like the handler it replaces

        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def refuse(request: Any, context: Context) -> Any:
        await abort(context, err, method)

    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


#: Answers that carry users (see Caller.users_view).
_Answer = TypeVar(
    "_Answer",
    users_pb2.User,
    users_pb2.ListUsersResponse,
    users_pb2.JitProvisionResponse,
    users_pb2.DeleteUserResponse,
)


class Caller:
    """Who makes one call, and what METHODS lets them do in it. A caller that passes
    a tenant's API token (the SCIM bearer, in `identity-bearer` metadata) has it
    checked in the call's own transaction, in place of the tenant lookup: the token
    must belong to the call's tenant, its scope must allow the method (and the
    request's intent), and the change is attributed to it. The call then answers
    which tenant and token it authenticated in the `identity-caller-bin` trailer
    (on errors too)."""

    __slots__ = ("_access", "_trailer", "abandoned", "bearer", "commit_by", "ctx", "touch")

    def __init__(self, ctx: RequestContext, method: str, *, commit_by: float | None = None) -> None:
        self.ctx = ctx
        self._access = METHODS.get(method, UNLISTED)
        #: time.monotonic() past which the call commits nothing (see check_commit).
        self.commit_by = commit_by
        #: Set on the loop when the call is cancelled (its caller hung up, or its
        #: gRPC deadline passed) while its transaction runs on a database thread.
        self.abandoned = threading.Event()
        self.bearer: tenants.Bearer | None = None
        #: The token id to mark used after the call (its last_used is stale).
        self.touch: str | None = None
        self._trailer: tuple[tuple[str, bytes], ...] = ()

    def tenant(self, s: Reader, tenant_id: str) -> TenantRow:
        # Detached snapshots, not ORM loads (much cheaper): calls read the tenant's
        # columns and change its revision only through events.emit. SetPolicy,
        # which changes the tenant's settings, loads the ORM row itself.
        if not self.ctx.bearer:
            return tenants.snapshot_by_id(s, tenant_id)
        try:
            b = tenants.check_bearer(s, self.ctx.bearer, self.ctx.tenant_ref, allow_inactive=True)
        except Unauthenticated as err:
            dead = err.extra.get("tenant_id")
            if not dead:
                raise
            if tenant_id and tenant_id.lower() != dead:
                # Another tenant's token, dead or not: the answer names nothing.
                raise Unauthenticated("invalid bearer token") from None
            # The tenant's revoked or expired token: said in the trailer, so the
            # refusal lands in that tenant's history.
            who = bearer_pb2.AuthenticatedCaller(
                tenant_id=str(dead), token_id=str(err.extra["token_id"]), refused=True
            )
            self._trailer = ((CALLER_KEY, who.SerializeToString()),)
            raise
        if tenant_id and tenant_id.lower() != b.tenant.id:
            raise Unauthenticated("invalid bearer token")
        # Known from here on, so the caller can record even a refusal in the
        # tenant's history (read now: a rollback expires the rows).
        self.bearer = b
        self.touch = b.touch
        who = bearer_pb2.AuthenticatedCaller(
            tenant_id=b.tenant.id,
            token_id=b.token.id,
            scope=tenants_pb2.TokenScope.ValueType(b.token.scope),
        )
        self._trailer = ((CALLER_KEY, who.SerializeToString()),)
        self.ctx = replace(self.ctx, actor_kind="token", actor_id=b.token.id)
        if not b.tenant.active:
            raise tenants.inactive(b.tenant, b.token)
        if self._access.groups and b.tenant.settings and policy.load(s, b.tenant).groups_disabled:
            # Panther has no /Groups: for its IdP the endpoint does not exist (404),
            # whatever the token (RFC 7644 §3.12); checked before the token's scope.
            raise NotFound("this tenant has no Groups endpoint (its policy turns Groups off)")
        self._check_scope(b.token.scope, self._access.scopes)
        return b.tenant

    def _check_scope(self, scope: int, allowed: frozenset[int]) -> None:
        scope = scope or FULL  # UNSPECIFIED is FULL
        if scope not in allowed or (self.ctx.write_intent and scope == READ_ONLY):
            raise read_only_refusal() if scope == READ_ONLY else users_only_refusal()

    def authenticate(
        self, s: Session, request: tenants_pb2.AuthenticateTokenRequest
    ) -> tuple[tenants_pb2.AuthenticateTokenResponse, str | None]:
        """AuthenticateToken: the secret checked, and refused as its own calls would be
        when the caller asks for a request that writes (`identity-intent`); the
        token id to touch when its last_used is stale."""
        answer, touch = tenants.authenticate(s, request)
        if self.ctx.write_intent:
            self._check_scope(answer.token.scope, _ALL_SCOPES)
        return answer, touch

    def check_commit(self) -> None:
        """Raises DeadlineExceeded (the transaction then rolls back) when the call
        may no longer commit: its caller is gone or could not get the answer in
        time. Checked before the write lock is taken and again just before COMMIT,
        so that an error answer means nothing was committed."""
        if self.abandoned.is_set():
            raise DeadlineExceeded(
                "the call was cancelled before its changes were committed; nothing was changed"
            )
        if self.commit_by is not None and time.monotonic() >= self.commit_by:
            raise DeadlineExceeded(
                "the call's deadline passed before its changes could be committed; "
                "nothing was changed"
            )

    def trailer(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailer

    @property
    def users_only(self) -> bool:
        return self.bearer is not None and self.bearer.token.scope == USERS_ONLY

    def check_user_filter(self, request: users_pb2.ListUsersRequest) -> None:
        """A users-only token may not learn memberships through a filter on `groups`."""
        if (
            self.users_only
            and request.HasField("filter")
            and names_attribute(request.filter, USER_SCHEMA, "groups")
        ):
            raise TokenScope(
                "This token's scope is users-only: it may not filter users by their "
                "groups. Use a token with full scope for groups."
            )

    def users_view(self, s: Reader, answer: _Answer) -> _Answer:
        """What the caller may see of the users in `answer`. A users-only token sees
        them without `groups` (the groups a user belongs to: their ids and names),
        nor the tenant's mapped fields taken from them, as it may not read Groups by
        any route."""
        if not self.users_only:
            return answer
        if isinstance(answer, users_pb2.User):
            shown = [answer]
        elif isinstance(answer, users_pb2.ListUsersResponse):
            shown = list(answer.users)
        else:  # JitProvisionResponse, DeleteUserResponse
            shown = [answer.user] if answer.HasField("user") else []
        assert self.bearer is not None
        from_groups = [
            m.field
            for m in policy.load(s, self.bearer.tenant).user_mappings
            if path_is(m.source, USER_SCHEMA, "groups")
        ]
        for u in shown:
            u.ClearField("groups")
            for name in from_groups:
                if name in u.mapped.fields:
                    del u.mapped[name]
        return answer
