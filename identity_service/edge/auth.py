"""Service credentials: who may call the core, and which of its RPCs.

With `IDENTITY_CREDENTIALS_FILE` set, every call except grpc.health (reflection
too: it maps the whole API) must carry `authorization: Bearer <secret>` metadata naming one of
the file's credentials:

    [{"name": "gateway", "secret_sha256": "<hex>", "role": "gateway"},
     {"name": "audit", "secret_sha256": "<hex>", "role": "subscriber", "tenants": ["acme"]}]

Roles allow method sets: `admin` everything; `gateway` what the SCIM gateway
calls; `subscriber` Watch, GetRevision and reads of tenants, users, groups and
roles. A credential with `tenants` (names or ids) may only name those tenants in
its requests; a request naming another tenant, or none, is PERMISSION_DENIED.
No credential (or an unknown one) is UNAUTHENTICATED. Only the secrets' SHA-256
is configured, and presented secrets are compared in constant time. Secrets are
never logged: a refusal logs the method and the credential's name.

The interceptor runs before the error interceptor, so a refused call never
reaches a servicer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from sqlalchemy import select

from scim_identity_api.v1 import history_pb2, policy_pb2

from ..context import RequestContext
from ..errors import DomainError, PermissionDenied, ReplicaReadOnly, Unauthenticated
from ..storage.db import Database
from ..storage.models import TenantRow
from .interceptors import _abort

if TYPE_CHECKING:  # generic only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger("identity_service.auth")

ROLES = ("admin", "gateway", "subscriber")
_P = "/identity.v1."


def _methods(service: str, *names: str) -> frozenset[str]:
    return frozenset(f"{_P}{service}/{n}" for n in names)


#: What the SCIM gateway calls (scim_gateway/, through the client library).
GATEWAY_METHODS = (
    _methods("TenantService", "AuthenticateToken", "GetTenant")
    | _methods(
        "UserService",
        "CreateUser",
        "GetUser",
        "ListUsers",
        "ReplaceUser",
        "PatchUser",
        "DeleteUser",
    )
    | _methods(
        "GroupService",
        "CreateGroup",
        "GetGroup",
        "ListGroups",
        "ReplaceGroup",
        "UpdateGroup",
        "PatchGroup",
        "DeleteGroup",
        "ListMembers",
    )
    | _methods("PolicyService", "GetPolicy", "GetSchemas")
    | _methods("HistoryService", "RecordOperation", "RecordOperations")
)
#: Change streams and read-only reads of users, groups, roles and tenants.
SUBSCRIBER_METHODS = (
    _methods("ChangeService", "Watch", "GetRevision")
    | _methods("TenantService", "GetTenant", "ListTenants")
    | _methods("UserService", "GetUser", "ListUsers")
    | _methods("GroupService", "GetGroup", "ListGroups", "ListMembers")
    | _methods("RoleService", "ListRoles", "ListAssignments")
)


#: What a stream replica (IDENTITY_ROLE=streams) serves: change streams and the reads
#: that change nothing. AuthenticateToken is not one (it records the token's use).
STREAM_REPLICA_METHODS = (
    _methods("ChangeService", "Watch", "GetRevision")
    | _methods("TenantService", "GetTenant", "ListTenants", "ListTokens")
    | _methods("UserService", "GetUser", "ListUsers")
    | _methods("GroupService", "GetGroup", "ListGroups", "ListMembers")
    | _methods("RoleService", "ListRoles", "ListAssignments")
    | _methods("PolicyService", "GetPolicy")
    | _methods("HistoryService", "ListOperations")
)


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    secret_sha256: str
    role: str
    #: Lower-cased tenant names or ids; empty: every tenant.
    tenants: frozenset[str] = frozenset()

    def allows(self, method: str) -> bool:
        if self.role == "admin":
            return True
        allowed = GATEWAY_METHODS if self.role == "gateway" else SUBSCRIBER_METHODS
        return method in allowed


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
        if key == "authorization":
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
    one = _tenant_named(request)
    if not one:
        one = RequestContext.from_metadata(tuple(metadata or ())).tenant_ref.strip().lower()
    return [one] if one else []


def _tenant_named(request: Any) -> str:
    """The tenant a request names (id or name), lower-cased; "" when none."""
    tenant_id = getattr(request, "tenant_id", "")
    if isinstance(tenant_id, str) and tenant_id:
        return tenant_id.strip().lower()
    ref = getattr(request, "tenant", None)
    if ref is not None and hasattr(ref, "WhichOneof"):
        which = ref.WhichOneof("ref")
        if which:
            return str(getattr(ref, which)).strip().lower()
    op = getattr(request, "operation", None)
    return str(getattr(op, "tenant_id", "") or "").strip().lower()


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
                    await _abort(context, denied, method)
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
                    await _abort(context, denied, method)
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
            await _abort(context, err, method)
            return
            yield  # an async generator, like the handler it replaces

        return grpc.stream_stream_rpc_method_handler(
            refuse_bidi,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:

        async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await _abort(context, err, method)
            return
            yield  # an async generator, like the handler it replaces

        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def refuse(request: Any, context: Context) -> Any:
        await _abort(context, err, method)

    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
