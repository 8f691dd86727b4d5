"""The console's JSON admin API (`/api/v1/...`): routes declared once, as data.

A `Route` says everything about an endpoint: method, path, summary, its query
parameters and body (JSON Schema, draft 2020-12: OpenAPI 3.1's dialect), its answer's
schema and status, and the handler. `Api` registers the routes on the Falcon app and
renders `/api/openapi.json` from the same declarations, so the document cannot drift
from what is served.

Every route, in this order:

1. **Who**: `Authorization: Bearer <session secret>` (an admin session, see below), or
   else the console's session cookie. Neither, or one the core does not know: 401.
2. **CSRF**: a request authenticated by the cookie with an unsafe method must carry
   `X-CSRF-Token`, the session's CSRF token (the one its pages embed; `GET
   /api/v1/session` answers it): 403 without it. A browser attaches a cookie to a
   forged request, never an `Authorization` header, so bearer requests need none.
3. `operator_only` routes: 403 for a tenant's admin.
4. **Which tenant**: a `{tenant}` in the path goes through `Console.tenant_of`: another
   tenant's answers the 404 of a tenant that does not exist.
5. **Input**: unknown or repeated query parameters, a body that is not JSON (or has a
   key twice): 400; a body that is not `application/json`: 415; values of the wrong
   type or out of range: 422. All before the handler runs: bad input changes nothing.
6. The handler; what the core refuses maps to a 4xx (`CORE_STATUS`), an outage to 503.

Errors are `{"error": {"status": ..., "message": ...}}`.

The bearer is an admin session's secret (`ses_...`), the one a sign-in link becomes:
`identityctl admin-session --operator` prints one (a vendor's backend makes the same
with CreateAdminLink and RedeemAdminLink). Like the cookie it is stored in the core
only as its SHA-256, expires with the session, and ends at `DELETE /api/v1/session`;
an operator's reaches every tenant, a tenant admin's only theirs.
"""

from __future__ import annotations

import hmac
import json
import logging
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import falcon
import falcon.asgi
import jsonschema
import orjson
from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import tenants_pb2
from scim_identity_client import IdentityError
from scim_identity_client.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    VersionMismatch,
)

from .console import COOKIE, SIGNED_OUT, Action, Admin, Console, PageError

log = logging.getLogger("identity_admin.api")

PREFIX = "/api/v1"
OPENAPI_PATH = "/api/openapi.json"
CSRF_HEADER = "X-CSRF-Token"
#: The one 404 message: no such tenant, another tenant's, no such resource or path.
NOT_FOUND = "There is no such tenant or resource."
#: Bodies the API takes are small objects; anything larger is refused unread (413).
MAX_BODY_BYTES = 64 * 1024
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METHODS = frozenset({"GET", *UNSAFE})
#: What the core refuses, as the API answers it (anything else: 503, the core's fault).
CORE_STATUS: tuple[tuple[type[IdentityError], int], ...] = (
    (NotFound, 404),
    (InvalidArgument, 422),
    (OutOfRange, 422),
    (AlreadyExists, 409),
    (VersionMismatch, 409),
    (FailedPrecondition, 409),
    (PermissionDenied, 403),
    (ResourceExhausted, 429),
)


def core_status(err: IdentityError) -> int:
    """The HTTP status of what the core answered (CORE_STATUS; else 503, an outage)."""
    return next((s for kind, s in CORE_STATUS if isinstance(err, kind)), 503)


Schema = dict[str, Any]
Handler = Callable[["ApiCall"], Awaitable[Any]]


# -- schemas: small helpers so declarations read as the JSON they describe ---------------


def obj(properties: Mapping[str, Schema], *, optional: Iterable[str] = ()) -> Schema:
    """A closed object: every property required but those named `optional`."""
    skip = set(optional)
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [k for k in properties if k not in skip],
        "additionalProperties": False,
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer"}
#: A time (RFC 3339, UTC), or null where there is none ("never").
TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ERROR: Schema = obj(
    {
        "error": obj(
            {
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "message": {"type": "string", "description": "What went wrong, for a person."},
            }
        )
    }
)


def time_json(t: timestamp_pb2.Timestamp) -> str | None:
    if not t.seconds and not t.nanos:
        return None
    return t.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


# -- declarations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A query parameter: its schema (type "string", "integer" or "boolean", with
    any bounds or enum) checks the value after conversion."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One endpoint. `path` is under /api/v1 (e.g. "/tenants/{tenant}/tokens")."""

    method: str
    path: str
    summary: str
    handler: Handler
    #: The success answer's body (None: no body, e.g. 204).
    response: Schema | None
    status: int = 200
    #: The JSON body's schema (None: the route takes no body).
    body: Schema | None = None
    query: tuple[Param, ...] = ()
    #: Path parameters other than {tenant}, described.
    path_params: Mapping[str, str] = field(default_factory=dict)
    #: Statuses besides the ones every route may answer (401, 403, 404, 400/422...).
    errors: Mapping[int, str] = field(default_factory=dict)
    operator_only: bool = False
    tag: str = ""
    description: str = ""

    @property
    def full_path(self) -> str:
        return PREFIX + self.path

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")

    def placeholders(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.path) if f]


@dataclass(frozen=True)
class Reply:
    """A handler's answer when the route's own status is not the one (or headers go too)."""

    body: Any
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """A refusal the API answers as `{"error": {"status", "message"}}`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ApiCall:
    """What a handler gets: who asks, for which tenant, with what (all checked)."""

    console: Console
    admin: Admin
    method: str
    params: Mapping[str, str]
    query: Mapping[str, Any]
    body: Any
    tenant_or_none: tenants_pb2.Tenant | None

    @property
    def tenant(self) -> tenants_pb2.Tenant:
        assert self.tenant_or_none is not None, "only routes with {tenant} in their path"
        return self.tenant_or_none

    def action(self) -> Action:
        """The admin action this request is, recorded in the tenant's history."""
        return self.console.action(self.admin, self.tenant, self.method)


# -- serving ------------------------------------------------------------------------------

_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="identity-admin"'}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ApiError(400, f"the body names {key!r} twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ApiError(400, f"the body is not JSON ({name} is not a JSON number)")


def _validation_message(err: jsonschema.ValidationError) -> str:
    where = err.json_path
    return err.message if where == "$" else f"{where.removeprefix('$.')}: {err.message}"


class _Endpoint:
    """The one falcon resource of a path: a responder per declared method."""

    def __init__(self, api: Api, routes: Sequence[Route]) -> None:
        for route in routes:
            setattr(self, f"on_{route.method.lower()}", api.responder(route))


class Api:
    """The declared routes, registered on the app; and their OpenAPI document."""

    def __init__(self, console: Console, routes: Iterable[Route]) -> None:
        self.console = console
        self.routes = list(routes)
        seen: set[tuple[str, str]] = set()
        ids: set[str] = set()
        for r in self.routes:
            # Declaration mistakes stop the app from starting, never a request.
            if r.method not in METHODS or (r.body is not None and r.method not in UNSAFE):
                raise ValueError(f"{r.method} {r.path}: no such method, or a GET with a body")
            if (r.method, r.path) in seen:
                raise ValueError(f"{r.method} {r.path} declared twice")
            if r.operation_id in ids:
                raise ValueError(f"two handlers named {r.operation_id}")
            seen.add((r.method, r.path))
            ids.add(r.operation_id)

    def register(self, app: falcon.asgi.App[Any, Any]) -> None:
        by_path: dict[str, list[Route]] = {}
        for r in self.routes:
            by_path.setdefault(r.full_path, []).append(r)
        for path, routes in by_path.items():
            app.add_route(path, _Endpoint(self, routes))
        app.add_route(OPENAPI_PATH, OpenApiDocument(self.document()))

    def document(self) -> dict[str, Any]:
        return openapi(self.routes, self.console.settings.public_url)

    # -- one request ----------------------------------------------------------------------

    def responder(self, route: Route) -> Callable[..., Awaitable[None]]:
        body_check = Validator(route.body) if route.body else None
        query_checks = {p.name: (p, jsonschema.Draft202012Validator(p.schema)) for p in route.query}

        async def respond(
            req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
        ) -> None:
            try:
                call = await self._call(route, req, params, body_check, query_checks)
                answer = await route.handler(call)
                if not isinstance(answer, Reply):
                    answer = Reply(answer, route.status)
                resp.status = answer.status
                for name, value in answer.headers.items():
                    resp.set_header(name, value)
                if answer.body is not None:
                    resp.content_type = falcon.MEDIA_JSON
                    resp.data = orjson.dumps(answer.body)
            except ApiError as err:
                error(resp, err.status, err.message, err.headers)
            except PageError as err:
                headers = _UNAUTHENTICATED if err.status == 401 else {}
                error(resp, err.status, NOT_FOUND if err.status == 404 else err.message, headers)
            except IdentityError as err:
                status = core_status(err)
                if status == 503:
                    log.warning("core call failed: %s %s", err.code, err.message)
                    error(resp, 503, "The identity service could not complete this; try again.")
                else:
                    error(resp, status, NOT_FOUND if status == 404 else err.message)

        respond.__name__ = f"on_{route.method.lower()}"
        return respond

    async def admin(self, req: falcon.asgi.Request) -> tuple[Admin, bool]:
        """Who asks, and whether by the cookie (then CSRF applies)."""
        header = req.get_header("Authorization")
        if header is not None:
            scheme, _, secret = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise ApiError(
                    401, "Authorization must be 'Bearer <session secret>'.", _UNAUTHENTICATED
                )
            return await self.console.session(secret.strip()), False
        cookie = req.get_cookie_values(COOKIE)
        if not cookie:
            raise ApiError(401, SIGNED_OUT, _UNAUTHENTICATED)
        return await self.console.session(cookie[0]), True

    async def _call(
        self,
        route: Route,
        req: falcon.asgi.Request,
        params: dict[str, str],
        body_check: jsonschema.protocols.Validator | None,
        query_checks: Mapping[str, tuple[Param, jsonschema.Draft202012Validator]],
    ) -> ApiCall:
        admin, by_cookie = await self.admin(req)
        if by_cookie and req.method in UNSAFE:
            sent = req.get_header(CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), admin.csrf.encode()):
                raise ApiError(
                    403,
                    f"This request carries the session cookie but not its CSRF token: send "
                    f"it as {CSRF_HEADER} (GET {PREFIX}/session answers it).",
                )
        if route.operator_only and not admin.operator:
            raise ApiError(403, "Only an operator may do this.")
        tenant = None
        if "tenant" in params:
            tenant = await self.console.tenant_of(admin, params["tenant"])
        query = _query(req, query_checks)
        body = await _body(req, body_check) if body_check is not None else None
        return ApiCall(self.console, admin, req.method, params, query, body, tenant)


def error(
    resp: falcon.asgi.Response,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """The API's one error shape."""
    resp.status = status
    for name, value in (headers or {}).items():
        resp.set_header(name, value)
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps({"error": {"status": status, "message": message}})


def _query(
    req: falcon.asgi.Request, checks: Mapping[str, tuple[Param, jsonschema.Draft202012Validator]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in req.params.items():
        if name not in checks:
            raise ApiError(400, f"unknown query parameter {name!r}")
        if isinstance(raw, list):
            raise ApiError(400, f"query parameter {name!r} given more than once")
        param, check = checks[name]
        kind = param.schema.get("type")
        value: Any = raw
        if kind == "integer":
            try:
                value = int(raw, 10)
            except ValueError:
                raise ApiError(422, f"{name}: {raw!r} is not an integer") from None
        elif kind == "boolean":
            if raw not in ("true", "false"):
                raise ApiError(422, f"{name}: {raw!r} is not true or false")
            value = raw == "true"
        err = jsonschema.exceptions.best_match(check.iter_errors(value))
        if err is not None:
            raise ApiError(422, f"{name}: {err.message}")
        out[name] = value
    for name, (param, _) in checks.items():
        if param.required and name not in out:
            raise ApiError(400, f"query parameter {name!r} is required")
    return out


async def _body(req: falcon.asgi.Request, check: jsonschema.protocols.Validator) -> Any:
    if (req.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    raw = await req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    media = (req.content_type or "").split(";", 1)[0].strip().lower()
    if not raw:
        raise ApiError(400, "this request needs a JSON body")
    if media != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        body = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the body nests too deeply") from None
    if not _encodable(body):
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 (nor the
        # core's protobuf strings) can carry.
        raise ApiError(400, "the body holds a string that is not valid Unicode")
    err = jsonschema.exceptions.best_match(check.iter_errors(body))
    if err is not None:
        raise ApiError(422, _validation_message(err))
    return body


def _encodable(value: Any) -> bool:
    """Every string of a parsed JSON value (keys included) encodes as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


#: JSON Schema 2020-12 with "integer" meaning a JSON number written without a
#: fraction: the standard counts 5.0 as an integer, and a handler given 5.0 where it
#: wants an int failed (a 500) instead of refusing the body.
# (the ignore below) jsonschema's `extend` carries no annotations
Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool)
    ),
)


class OpenApiDocument:
    """`/api/openapi.json`: the API's shape, rendered once from the declarations. It
    names no tenant and holds no data, so it needs no session (client generators and
    API explorers read it first)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._data = orjson.dumps(doc)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._data


# -- the OpenAPI document -----------------------------------------------------------------

_ERRORS = {
    400: "Malformed: an unknown or repeated query parameter, a body that is not JSON.",
    401: "No session, or one that is unknown, ended or expired.",
    403: f"Refused: a cookie's unsafe request without {CSRF_HEADER}, an operator's route, "
    "a change the tenant's policy leaves to another source.",
    404: "No such tenant or resource (another tenant's answers the same).",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
    415: "The body is not application/json.",
    422: "A value of the wrong type, or out of range.",
    503: "The identity service could not complete the request; try again.",
}


DESCRIPTION = f"""The identity admin console's data and actions as JSON: tenants, their SCIM
connector and API tokens, their directory, and what each page of the console shows.

**Authentication.** `Authorization: Bearer <secret>`, an admin session's secret
(`ses_...`): `identityctl admin-session --operator` (every tenant) or `identityctl
admin-session TENANT` (that tenant only) prints one; a backend makes one with the core's
CreateAdminLink then RedeemAdminLink. It expires with the session (8 hours by default);
`DELETE {PREFIX}/session` ends it. Or the console's session cookie, as its pages use it:
then `POST`, `PUT`, `PATCH` and `DELETE` need `{CSRF_HEADER}` (`GET {PREFIX}/session`
answers it), else 403.

**Tenants.** `{{tenant}}` is a tenant's name or id. A tenant admin's session reaches only
that tenant: any other answers 404, as a tenant that does not exist does.

**Errors** are `{{"error": {{"status": 422, "message": "..."}}}}`; the message is written
for a person. Bad input is 400 (not JSON, unknown query parameters), 413, 415 or 422
(wrong types or ranges), and changes nothing."""


def _statuses(route: Route) -> dict[int, str]:
    out = {400: _ERRORS[400], 401: _ERRORS[401], 503: _ERRORS[503]}
    if route.method in UNSAFE or route.operator_only:
        out[403] = _ERRORS[403]
    if route.placeholders():
        out[404] = _ERRORS[404]
    if route.query or route.body is not None:
        out[422] = _ERRORS[422]
    if route.body is not None:
        out |= {413: _ERRORS[413], 415: _ERRORS[415]}
    return out | dict(route.errors)


def openapi(routes: Iterable[Route], server: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`, served from `server`."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": STRING,
                "description": "The tenant's name or id."
                if name == "tenant"
                else r.path_params.get(name, ""),
            }
            for name in r.placeholders()
        ]
        params += [
            {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "schema": p.schema,
                "description": p.description,
            }
            for p in r.query
        ]
        if r.method in UNSAFE:
            params.append(
                {
                    "name": CSRF_HEADER,
                    "in": "header",
                    "required": False,
                    "schema": STRING,
                    "description": "With the session cookie (not with a bearer): the "
                    "session's CSRF token, required.",
                }
            )
        ok: dict[str, Any] = {"description": r.summary}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": r.response}}
        responses: dict[str, Any] = {str(r.status): ok}
        for status, text in sorted(_statuses(r).items()):
            responses[str(status)] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "responses": responses,
        }
        if r.description:
            op["description"] = r.description
        if r.tag:
            op["tags"] = [r.tag]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": r.body}},
            }
        paths.setdefault(r.full_path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Identity admin API",
            "version": "1.0.0",
            "description": DESCRIPTION,
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin session's secret (ses_...): "
                    "`identityctl admin-session`, or CreateAdminLink + RedeemAdminLink.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE,
                    "description": f"The console's session cookie; unsafe methods also need "
                    f"the {CSRF_HEADER} header.",
                },
            },
        },
    }


# -- the session: the API's own routes ------------------------------------------------------

SESSION = obj(
    {
        "operator": BOOLEAN,
        "tenant": {
            "oneOf": [obj({"id": STRING, "name": STRING}), {"type": "null"}],
            "description": "The tenant a tenant admin's session is for; null for an operator.",
        },
        "subject": STRING,
        "expires": TIME,
        "csrf_token": {
            "type": "string",
            "description": f"What a cookie's unsafe requests send as {CSRF_HEADER}.",
        },
    }
)


async def get_session(call: ApiCall) -> dict[str, Any]:
    s = call.admin.session
    return {
        "operator": call.admin.operator,
        "tenant": None
        if call.admin.operator
        else {"id": s.principal.tenant_id, "name": s.principal.tenant_name},
        "subject": s.subject,
        "expires": time_json(s.expires),
        "csrf_token": call.admin.csrf,
    }


async def end_session(call: ApiCall) -> None:
    await call.console.core.end_admin_session(call.admin.secret)


ROUTES = (
    Route(
        "GET",
        "/session",
        "Who is signed in",
        get_session,
        SESSION,
        tag="session",
        description="The session the cookie or bearer names, and its CSRF token.",
    ),
    Route(
        "DELETE",
        "/session",
        "Sign out",
        end_session,
        None,
        status=204,
        tag="session",
        description="Ends the session: its cookie and bearer are refused from then on.",
    ),
)
