"""The Falcon ASGI application: routes, authentication, history, and the one error handler.

gunicorn -k scim_gateway.worker.GatewayWorker 'scim_gateway.app:get_app()'

Each worker runs the app on its own event loop; the gRPC channel (grpc.aio) is
opened in the ASGI lifespan startup and closed at shutdown (`core.Core`), never
at import, so it belongs to the loop that uses it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from typing import Any

import falcon
import falcon.asgi
import grpc
import orjson
from falcon.asgi import Request, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_api.v1 import history_pb2
from scim_identity_client import AsyncIdentityClient, CallContext, IdentityError
from scim_identity_client.errors import NotFound
from scim_identity_client.types import ErrorReason
from scim_identity_client.urls import SCIM_PATH

from .access import RateLimiter, too_many_requests
from .core import ClientFactory, Core
from .errors import INVALID_VALUE, ScimError, from_identity_error, not_found
from .guard import AsgiCallable, Guard
from .history import OpInfo, Recorder
from .http import REQUEST_ID_HEADER, SCIM_MEDIA_TYPE, Call, request_id
from .observability import Metrics, configure_logging, log_request
from .resources.bulk import BulkResource
from .resources.common import Collection, Item, RootSearch, Search
from .resources.discovery import (
    ResourceTypesResource,
    SchemasResource,
    ServiceProviderConfigResource,
)
from .resources.groups import GroupService
from .resources.me import MeResource
from .resources.users import UserService
from .settings import Settings
from .tenant import Catalogue

log = logging.getLogger("scim_gateway")

FalconApp = falcon.asgi.App[Request, Response]
#: Paths answered even when a worker is at SCIM_MAX_CONCURRENCY (liveness, readiness).
#: Metrics are not served here but on SCIM_METRICS_LISTEN, by gunicorn's master.
ALWAYS_ADMITTED = frozenset({"/healthz", "/readyz"})

PREFIX = SCIM_PATH
# First path segments that are endpoints, not tenants (RFC 7644 §3.2). Tenant
# names are lower-case, so they never collide with these.
ENDPOINTS = frozenset(
    {
        "Users",
        "Groups",
        "Me",
        "Bulk",
        "Schemas",
        "ResourceTypes",
        "ServiceProviderConfig",
        ".search",
    }
)
#: What can name a tenant in a path: a name (a-z, 0-9, '-', '_'; tenants.proto) or an
#: id (a UUID). Anything else is no tenant's (404), checked before it reaches the core.
TENANT_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNAUTHORIZED_DETAIL = (
    "Authentication required: send 'Authorization: Bearer <token>' with an API token "
    "issued for this tenant."
)


#: Call.memo key: the token is valid but its tenant's connector is off.
REFUSED = "refused"
#: Refusals of a token the core names (ErrorDetail tenant_id, token_id): recorded.
_RECORDED_REFUSALS = frozenset(
    {ErrorReason.ERROR_REASON_TENANT_INACTIVE, ErrorReason.ERROR_REASON_UNAUTHENTICATED}
)


def _unauthorized(detail: str = UNAUTHORIZED_DETAIL) -> ScimError:
    return ScimError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="scim"'})


def _bearer_secret(req: Request) -> str:
    """The request's bearer secret, or a 401 when it has none that could be one."""
    header = req.get_header("Authorization") or ""
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized()
    if len(secret) > 4096 or not secret.isascii() or not secret.isprintable():
        raise _unauthorized()
    return secret


class RequestContextMiddleware:
    """Request id, tenant from the path, bearer authentication, and the
    operations history (one record per SCIM operation)."""

    def __init__(
        self,
        settings: Settings,
        core: Core,
        *,
        catalogue: Catalogue,
        recorder: Recorder,
        metrics: Metrics,
        errors: ErrorHandler,
    ) -> None:
        self._settings = settings
        self._errors = errors
        self._core = core
        self._catalogue = catalogue
        self._recorder = recorder
        self._metrics = metrics
        rate = settings.rate_limit_per_second
        self._limiter = (
            RateLimiter(rate, settings.rate_limit_burst or math.ceil(rate)) if rate > 0 else None
        )

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        """ASGI lifespan startup (in the worker, on its loop): the core channel opens."""
        self._recorder.bind(await self._core.open())

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        """ASGI lifespan shutdown: the history still queued is written, then the
        channel closes."""
        try:
            await self._recorder.close()
        finally:
            await self._core.close()

    async def process_request(self, req: Request, resp: Response) -> None:
        req.context.started = time.perf_counter()
        req.context.deadline = time.monotonic() + self._settings.request_timeout_seconds
        req.context.request_id = request_id(req)
        req.context.call = None
        req.context.op = None
        req.context.error = None
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)
        path = req.path
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return  # not SCIM: routing answers (404, or /healthz)
        rest = path[len(PREFIX) :].lstrip("/")
        first, _, tail = rest.partition("/")
        tenant: str | None = None
        base = self._settings.public_url or self._request_base(req)
        base += PREFIX
        if first and first not in ENDPOINTS:
            # RFC 7644 §3.2 leaves the base URL to the provider: /scim/v2/{tenant}/...
            if not TENANT_SEGMENT.fullmatch(first):
                # Control characters, spaces, non-ASCII...: no tenant has such a
                # name or id, so there is nothing at this path (and such bytes must
                # never reach the core's call metadata).
                raise ScimError(404, "No SCIM endpoint at this path: no tenant has that name.")
            tenant = first
            base += f"/{tenant}"
            req.path = f"{PREFIX}/{tail}" if tail else PREFIX
        scim_path = req.path[len(PREFIX) :]
        if scim_path.strip("/").partition("/")[0] not in ENDPOINTS:
            # A path below the base URL that names no endpoint (`/scim/v2/anything`
            # read as a tenant, or `/scim/v2/acme/Widgets`): 404 (RFC 7644 §3.12),
            # whoever asks, as no resource or tenant is revealed by it.
            raise not_found(f"{path[:200]!r} names no SCIM endpoint")
        # The core's attribute catalogue, fetched when stale, so that resources
        # read it without waiting (tenant.Catalogue).
        await self._catalogue.refresh()
        call = Call(
            deadline=req.context.deadline,
            request_id=req.context.request_id,
            base_url=base,
            secret=_bearer_secret(req),
            tenant_ref=tenant or "",
            # RFC 7644 §3.4.3: POST .search reads.
            write=req.method not in ("GET", "HEAD") and not scim_path.endswith("/.search"),
            authenticator=self._authenticate,
        )
        req.context.call = call
        endpoint = scim_path.strip("/").partition("/")[0]
        if self._limiter is not None or endpoint == "Bulk":
            # The limit is per tenant; /Bulk answers a bad token (401) or a turned-off
            # connector for the whole request, and records each operation in the
            # tenant's history, even one that fails before reaching the core: both
            # need the token known first.
            await call.authenticate(as_request=True)
        if self._limiter is not None:
            wait = self._limiter.acquire(call.tenant_id)
            if wait > 0:
                raise too_many_requests(wait)
        # The core checks the token, its tenant and its scope within each of the
        # request's calls (see Call), and refuses what the scope forbids.

    def _request_base(self, req: Request) -> str:
        """scheme://host of the request, for meta.location and Location; only for a
        Host that SCIM_ALLOWED_HOSTS lists (when it is set), so that no client can
        make the gateway write URLs that point elsewhere."""
        allowed = self._settings.allowed_hosts
        if (
            allowed is not None
            and req.host.lower() not in allowed
            and req.netloc.lower() not in allowed
        ):
            raise ScimError(
                400,
                "The request's Host is not one this service answers to "
                "(SCIM_ALLOWED_HOSTS, or set SCIM_PUBLIC_URL).",
                INVALID_VALUE,
            )
        return req.prefix

    async def _authenticate(self, call: Call, as_request: bool) -> None:
        """AuthenticateToken, for requests that need the tenant before (or without)
        a core call of their own; `as_request`: with the request's write intent."""
        ctx = CallContext(
            request_id=call.request_id, deadline=call.deadline, write=as_request and call.write
        )
        try:
            auth = await self._core.client.authenticate(
                call.secret, tenant=call.tenant_ref or None, ctx=ctx
            )
        except NotFound:
            raise _unauthorized() from None  # an unknown tenant reveals nothing more
        except IdentityError as err:
            scim = from_identity_error(err)
            if scim.status == 400:
                raise _unauthorized() from None
            if err.detail.tenant_id and err.reason in _RECORDED_REFUSALS:
                # A valid token of a deactivated connector, or a revoked or expired
                # token of this tenant: the refusal belongs in that tenant's history
                # (Big ACL: "check that the connector is activated"; "the token may
                # have been rotated or revoked").
                call.tenant_id, call.token_id = err.detail.tenant_id, err.detail.token_id
                call.memo[REFUSED] = True
            raise scim from None
        call.tenant_id, call.token_id = auth.tenant.id, auth.token.id

    async def process_response(
        self, req: Request, resp: Response, resource: Any, req_succeeded: bool
    ) -> None:
        call: Call | None = getattr(req.context, "call", None)
        info: OpInfo | None = getattr(req.context, "op", None)
        started: float | None = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        endpoint = _endpoint(req.path)
        if endpoint != "other" or call is not None:
            self._metrics.observe(req.method, endpoint, resp.status_code, elapsed)
        if endpoint != "health":
            log_request(
                request_id=getattr(req.context, "request_id", ""),
                tenant=call.tenant_id if call else "",
                operation=f"{req.method} {endpoint}",
                status=resp.status_code,
                duration_ms=elapsed * 1000,
                token_id=call.token_id if call else "",
            )
        error: ScimError | None = getattr(req.context, "error", None)
        if call is None:
            return
        if not call.authenticated and (error is None or error.status != 401):
            # No core call of this request checked its bearer (it made none, or
            # failed first): check it now, so that a caller without a valid token
            # never gets any other answer than 401.
            try:
                await call.authenticate()
            except ScimError as err:
                self._errors.render(req, resp, err)
                error = err
        if not call.authenticated:
            return
        if info is None and call.memo.get(REFUSED):
            info = _refused_op(req.method, endpoint)
        if info is None:
            return
        self._recorder.record(
            call,
            method=req.method,
            info=info,
            status=resp.status_code,
            error=error,
            duration_ms=elapsed * 1000,
        )


def _endpoint(path: str) -> str:
    """A bounded label for metrics, spans (`http.route`) and logs: the SCIM endpoint,
    never ids or tenants."""
    if path in ("/healthz", "/readyz"):
        return "health"
    if not path.startswith(PREFIX):
        return "other"
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    for p in parts[:2]:
        if p in ENDPOINTS:
            return p
    return "other"


_REFUSED_RESOURCE = {"Users": "User", "Groups": "Group", "Bulk": "Bulk", "Me": "User"}


def _refused_op(method: str, endpoint: str) -> OpInfo:
    """How the history records a request refused before any resource handled it."""
    if endpoint == ".search" or method in ("GET", "HEAD"):
        kind = (
            history_pb2.OPERATION_KIND_SEARCH
            if method != "GET"
            else history_pb2.OPERATION_KIND_READ
        )
    elif method == "POST":
        kind = (
            history_pb2.OPERATION_KIND_BULK
            if endpoint == "Bulk"
            else history_pb2.OPERATION_KIND_CREATE
        )
    elif method == "DELETE":
        kind = history_pb2.OPERATION_KIND_DELETE
    else:
        kind = history_pb2.OPERATION_KIND_UPDATE
    return OpInfo(kind=kind, resource_type=_REFUSED_RESOURCE.get(endpoint, endpoint))


class ErrorHandler:
    """Every failure becomes a SCIM error body (RFC 7644 §3.12)."""

    async def __call__(
        self, req: Request, resp: Response, ex: Exception, params: dict[str, Any]
    ) -> None:
        self.render(req, resp, self.to_scim(req, ex))

    def render(self, req: Request, resp: Response, err: ScimError) -> None:
        req.context.error = err
        resp.status = err.status
        for name, value in err.headers.items():
            resp.set_header(name, value)
        resp.content_type = SCIM_MEDIA_TYPE
        resp.stream = None
        call: Call | None = getattr(req.context, "call", None)
        resp.data = orjson.dumps(err.body(call.secret if call else ""))

    def to_scim(self, req: Request, ex: Exception) -> ScimError:
        rid = getattr(req.context, "request_id", "")
        if isinstance(ex, ScimError):
            return ex
        if isinstance(ex, IdentityError):
            err = from_identity_error(ex)
            if err.status >= 500:
                log.error("identity service call failed (request %s): %s", rid, ex)
            return err
        if isinstance(ex, falcon.HTTPError):
            status = ex.status_code
            headers = dict(ex.headers or {})
            if status == 404:
                detail = f"No SCIM endpoint at {req.path}."
            elif status == 405:
                detail = (
                    f"{req.method} is not supported on {req.path}; "
                    f"allowed: {headers.get('Allow', 'none')}."
                )
            else:
                detail = ex.description or ex.title or "The request was refused."
            return ScimError(status, detail, headers=headers)
        log.exception("unexpected error (request %s)", rid)
        return ScimError(500, f"Internal error. Quote request id {rid} when reporting it.")


class LivenessResource:
    """`/healthz`: the process answers (liveness; no dependency is consulted)."""

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


class ReadinessResource:
    """`/readyz`: 200 only while the identity service reports SERVING (its database
    reachable and migrated); else 503 with Retry-After, so a balancer routes away."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        health = health_pb2_grpc.HealthStub(self._core.client.channel)
        try:
            status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)).status
        except grpc.RpcError as err:
            state = f"identity service unreachable ({err.code().name})"
        else:
            if status == health_pb2.HealthCheckResponse.SERVING:
                resp.data = b'{"status":"ready"}'
                return
            state = "identity service not serving (database unavailable or not migrated)"
        resp.status = 503
        resp.set_header("Retry-After", "5")
        resp.data = orjson.dumps({"status": state})


def create_app(
    settings: Settings, client: ClientFactory, *, tracer_provider: Any = None
) -> AsgiCallable:
    """The ASGI app; `client` makes the identity client when a worker's lifespan
    starts (e.g. `functools.partial(AsyncIdentityClient, target)`). The Falcon app
    sits behind `guard.Guard` (bodies, the in-flight bound, hang-ups).

    Tracing (`tracing.py`): with `tracer_provider` (an OpenTelemetry TracerProvider,
    tests), or when `settings.tracing` asks for OTLP (a provider of the app's own,
    made here: in the worker, after the fork). Else nothing of it is imported."""
    provider, own_provider = tracer_provider, False
    if provider is None and settings.tracing:
        from .tracing import SERVICE_NAME, otlp_provider  # noqa: PLC0415 - only when on

        provider, own_provider = otlp_provider(SERVICE_NAME), True
    if provider is not None:
        from . import tracing  # noqa: PLC0415 - opentelemetry only when tracing is on

        tracing.install()
        client = functools.partial(client, interceptors=[tracing.client_interceptor(provider)])
    core = Core(client)
    catalogue = Catalogue(core, settings.schema_ttl_seconds)
    recorder = Recorder()
    metrics = Metrics()
    handler = ErrorHandler()

    def refused(scope: dict[str, Any], status: int, seconds: float) -> None:
        # A request the guard answered itself (408, 413, 503): counted and logged
        # like any other; it reached no resource, so it has no history record.
        method, endpoint = str(scope.get("method", "")), _endpoint(str(scope.get("path", "")))
        metrics.observe(method, endpoint, status, seconds)
        log_request(
            request_id="",
            tenant="",
            operation=f"{method} {endpoint}",
            status=status,
            duration_ms=seconds * 1000,
            token_id="",
        )

    app: FalconApp = falcon.asgi.App(
        media_type=SCIM_MEDIA_TYPE,
        middleware=[
            RequestContextMiddleware(
                settings,
                core,
                catalogue=catalogue,
                recorder=recorder,
                metrics=metrics,
                errors=handler,
            )
        ],
    )
    app.req_options.strip_url_path_trailing_slash = True
    # RFC 7644 §3.1: application/json is accepted as well as application/scim+json.
    app.req_options.default_media_type = SCIM_MEDIA_TYPE
    # Token scopes are the core's to check, in every call, whichever route makes it.
    users = UserService(core, settings, catalogue)
    groups = GroupService(core, settings, catalogue)
    for name, service in (("Users", users), ("Groups", groups)):
        app.add_route(f"{PREFIX}/{name}", Collection(service, settings))
        app.add_route(f"{PREFIX}/{name}/.search", Search(service, settings))
        app.add_route(f"{PREFIX}/{name}/{{resource_id}}", Item(service, settings))
    app.add_route(f"{PREFIX}/.search", RootSearch((users, groups), settings))
    app.add_route(
        f"{PREFIX}/Bulk",
        BulkResource({"users": users, "groups": groups}, settings, recorder),
    )
    app.add_route(f"{PREFIX}/Me", MeResource())
    app.add_route(f"{PREFIX}/ServiceProviderConfig", ServiceProviderConfigResource(settings))
    resource_types = ResourceTypesResource(catalogue)
    app.add_route(f"{PREFIX}/ResourceTypes", resource_types)
    app.add_route(f"{PREFIX}/ResourceTypes/{{type_id}}", resource_types, suffix="item")
    schemas = SchemasResource(catalogue)
    app.add_route(f"{PREFIX}/Schemas", schemas)
    app.add_route(f"{PREFIX}/Schemas/{{schema_id}}", schemas, suffix="item")
    app.add_route("/healthz", LivenessResource())
    app.add_route("/readyz", ReadinessResource(core))
    app.add_error_handler(Exception, handler)
    app.add_error_handler(falcon.HTTPError, handler)
    guarded = Guard(
        app,
        max_body=settings.max_payload_bytes,
        max_in_flight=settings.max_concurrency,
        client_timeout=settings.client_timeout_seconds,
        always_admitted=ALWAYS_ADMITTED,
        observe=refused,
        active=lambda scope: metrics.active_requests(
            str(scope.get("method", "")), str(scope.get("scheme", "http"))
        ),
    )
    if provider is None:
        return guarded
    # Outermost: the span covers the guard's refusals, and is current in the rest.
    return tracing.TracingMiddleware(guarded, provider, _endpoint, shutdown=own_provider)


def client_factory(settings: Settings) -> ClientFactory:
    """How each worker makes its identity client, from the settings."""
    return functools.partial(
        AsyncIdentityClient,
        settings.identity_target,
        token=settings.identity_token or None,
        tls_ca_file=settings.identity_tls_ca_file or None,
        tls_cert_file=settings.identity_tls_cert_file or None,
        tls_key_file=settings.identity_tls_key_file or None,
    )


def get_app() -> AsgiCallable:
    """The gunicorn entrypoint: settings from SCIM_* environment variables."""
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format)
    # Built in each worker after the fork (no --preload); the channel itself is
    # opened by the worker's lifespan startup, on its event loop.
    return create_app(settings, client_factory(settings))
