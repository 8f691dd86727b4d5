"""The Falcon application: routes, authentication, history, and the one error handler.

gunicorn 'scim_gateway.app:get_app()'      # no --preload: the gRPC channel
                                           # is opened in each worker
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import falcon
import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_api.v1 import history_pb2
from scim_identity_client import IdentityClient, IdentityError
from scim_identity_client.errors import NotFound
from scim_identity_client.types import ErrorReason

from .access import (
    RateLimiter,
    ScopedService,
    check_request,
    too_many_requests,
)
from .errors import ScimError, from_identity_error, not_found
from .http import REQUEST_ID_HEADER, SCIM_MEDIA_TYPE, Call, request_id
from .observability import Metrics, MetricsResource, configure_logging, log_request
from .resources.bulk import BulkResource
from .resources.common import (
    Collection,
    Item,
    OpInfo,
    Recorder,
    RootSearch,
    Search,
)
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

WsgiApp = falcon.App[falcon.Request, falcon.Response]

PREFIX = "/scim/v2"
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
UNAUTHORIZED_DETAIL = (
    "Authentication required: send 'Authorization: Bearer <token>' with an API token "
    "issued for this tenant."
)


#: Call.memo key: the token is valid but its tenant's connector is off.
REFUSED = "refused"


def _unauthorized(detail: str = UNAUTHORIZED_DETAIL) -> ScimError:
    return ScimError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="scim"'})


def _bearer_secret(req: falcon.Request) -> str:
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
        client: IdentityClient,
        recorder: Recorder,
        metrics: Metrics,
        errors: ErrorHandler,
    ) -> None:
        self._settings = settings
        self._errors = errors
        self._client = client
        self._recorder = recorder
        self._metrics = metrics
        rate = settings.rate_limit_per_second
        self._limiter = (
            RateLimiter(rate, settings.rate_limit_burst or math.ceil(rate)) if rate > 0 else None
        )

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
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
        base = self._settings.public_url or req.prefix
        base += PREFIX
        if first and first not in ENDPOINTS:
            # RFC 7644 §3.2 leaves the base URL to the provider: /scim/v2/{tenant}/...
            tenant = first
            base += f"/{tenant}"
            req.path = f"{PREFIX}/{tail}" if tail else PREFIX
        if req.path[len(PREFIX) :].strip("/").partition("/")[0] not in ENDPOINTS:
            # A path below the base URL that names no endpoint (`/scim/v2/anything`
            # read as a tenant, or `/scim/v2/acme/Widgets`): 404 (RFC 7644 §3.12),
            # whoever asks, as no resource or tenant is revealed by it.
            raise not_found(f"{path[:200]!r} names no SCIM endpoint")
        call = Call(
            request_id=req.context.request_id,
            base_url=base,
            secret=_bearer_secret(req),
            tenant_ref=tenant or "",
            authenticator=self._authenticate,
        )
        req.context.call = call
        endpoint = req.path[len(PREFIX) :].strip("/").partition("/")[0]
        if self._limiter is not None or endpoint == "Bulk":
            # The limit is per tenant, and /Bulk checks each operation's scope
            # before running it: both need the token known first.
            call.authenticate()
        if self._limiter is not None:
            wait = self._limiter.acquire(call.tenant_id)
            if wait > 0:
                raise too_many_requests(wait)
        if call.scope is not None:
            check_request(call.scope, req.method, req.path[len(PREFIX) :])
        # Otherwise the core checks the token, its tenant and its scope within the
        # request's first call (see Call), and refuses what the scope forbids.

    def _authenticate(self, call: Call) -> None:
        """AuthenticateToken, for requests that need the tenant before (or without)
        a core call of their own."""
        try:
            auth = self._client.authenticate(call.secret, tenant=call.tenant_ref or None)
        except NotFound:
            raise _unauthorized() from None  # an unknown tenant reveals nothing more
        except IdentityError as err:
            scim = from_identity_error(err)
            if scim.status == 400:
                raise _unauthorized() from None
            if err.reason == ErrorReason.ERROR_REASON_TENANT_INACTIVE and err.detail.tenant_id:
                # A valid token of a deactivated connector: the refusal belongs in that
                # tenant's history (Big ACL: "check that the connector is activated").
                call.tenant_id, call.token_id = err.detail.tenant_id, err.detail.token_id
                call.memo[REFUSED] = True
            raise scim from None
        call.tenant_id, call.token_id, call.scope = auth.tenant.id, auth.token.id, auth.token.scope

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        call: Call | None = getattr(req.context, "call", None)
        info: OpInfo | None = getattr(req.context, "op", None)
        started: float | None = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        endpoint = _endpoint(req.path)
        if endpoint != "other" or call is not None:
            self._metrics.observe(req.method, endpoint, resp.status_code, elapsed)
        if endpoint not in ("health", "metrics"):
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
                call.authenticate()
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
    """A bounded label for metrics and logs: the SCIM endpoint, never ids or tenants."""
    if path in ("/healthz", "/readyz"):
        return "health"
    if path == "/metrics":
        return "metrics"
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

    def __call__(
        self, req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
    ) -> None:
        self.render(req, resp, self.to_scim(req, ex))

    def render(self, req: falcon.Request, resp: falcon.Response, err: ScimError) -> None:
        req.context.error = err
        resp.status = err.status
        for name, value in err.headers.items():
            resp.set_header(name, value)
        resp.content_type = SCIM_MEDIA_TYPE
        resp.stream = None
        call: Call | None = getattr(req.context, "call", None)
        resp.data = orjson.dumps(err.body(call.secret if call else ""))

    def to_scim(self, req: falcon.Request, ex: Exception) -> ScimError:
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

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b'{"status":"ok"}'


class ReadinessResource:
    """`/readyz`: 200 only while the identity service reports SERVING (its database
    reachable and migrated); else 503 with Retry-After, so a balancer routes away."""

    def __init__(self, client: IdentityClient) -> None:
        self._health = health_pb2_grpc.HealthStub(client.channel)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        try:
            status = self._health.Check(health_pb2.HealthCheckRequest(), timeout=2.0).status
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


#: Each app's history recorder, by id(app) (see flush_history). Apps are not
#: weak-referenceable; a process makes one per worker (tests a few hundred).
_RECORDERS: dict[int, Recorder] = {}


def flush_history(app: WsgiApp, timeout: float = 10.0) -> bool:
    """Waits until the history records of `app`'s requests so far are written
    (they are sent in the background); False on timeout."""
    recorder = _RECORDERS.get(id(app))
    return recorder is None or recorder.flush(timeout)


def create_app(settings: Settings, client: IdentityClient) -> WsgiApp:
    """The WSGI app over one identity client."""
    recorder = Recorder(client)
    metrics = Metrics()
    handler = ErrorHandler()
    app = falcon.App(
        media_type=SCIM_MEDIA_TYPE,
        middleware=[RequestContextMiddleware(settings, client, recorder, metrics, handler)],
    )
    app.req_options.strip_url_path_trailing_slash = True
    # RFC 7644 §3.1: application/json is accepted as well as application/scim+json.
    app.req_options.default_media_type = SCIM_MEDIA_TYPE
    # Token scopes are checked around the services, so /Bulk and /.search are covered too.
    catalogue = Catalogue(client, settings.schema_ttl_seconds)
    users = ScopedService(UserService(client, settings, catalogue))
    groups = ScopedService(GroupService(client, settings, catalogue))
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
    app.add_route("/readyz", ReadinessResource(client))
    app.add_route("/metrics", MetricsResource(metrics))
    app.add_error_handler(Exception, handler)
    app.add_error_handler(falcon.HTTPError, handler)
    _RECORDERS[id(app)] = recorder
    return app


def get_app() -> WsgiApp:
    """The gunicorn entrypoint: settings from SCIM_* environment variables."""
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format)
    # gunicorn calls this in each worker after the fork (no --preload), so the
    # channel belongs to the worker that uses it.
    client = IdentityClient(
        settings.identity_target,
        token=settings.identity_token or None,
        tls_ca_file=settings.identity_tls_ca_file or None,
        tls_cert_file=settings.identity_tls_cert_file or None,
        tls_key_file=settings.identity_tls_key_file or None,
    )
    return create_app(settings, client)
