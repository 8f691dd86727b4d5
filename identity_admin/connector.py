"""The connector: a tenant's SCIM URLs, its state, its API tokens. The actions here
(checks, the core call, the history record) serve both the Connector page and the
API routes below, so the two cannot answer differently."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import history_pb2, tenants_pb2
from scim_identity_client import CallContext
from scim_identity_client.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from scim_identity_client.urls import scim_urls

from .api import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIME,
    ApiCall,
    ApiError,
    Reply,
    Route,
    array,
    obj,
    time_json,
)
from .console import NOT_FOUND, SCOPE_NAMES, SCOPES, Action, Admin, Console, PageError

H = history_pb2
#: At most this many live tokens per tenant (the core's limit, explained where it bites).
LIVE_TOKEN_LIMIT = 2
MAX_DESCRIPTION = 256
MAX_EXPIRY_DAYS = 3650
LIMIT_MESSAGE = (
    f"This tenant already has {LIVE_TOKEN_LIMIT} live tokens, the most it may have. Two "
    "let you move your IdP to a new token without a gap; to replace one, Rotate it (the "
    "new token is issued and the old one stops at once), or Revoke one first."
)
EXPIRY_MESSAGE = f"Expiry must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}, or empty."
SCOPE_MESSAGE = f"Choose a scope ({', '.join(SCOPES)}); keep descriptions short."


class Refused(PageError):
    """An action refused for its input or a limit: nothing changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "Refused", message)


# -- the actions ------------------------------------------------------------------------


async def create_tenant(
    console: Console, admin: Admin, *, name: str, display_name: str, active: bool
) -> tenants_pb2.Tenant:
    """A new tenant (an operator's action; the caller checks who). Inactive: its
    connector refuses every SCIM request until activated, so rules and mappings come
    first (Big ACL's flow). Refused (400) for a name the core refuses, (409) when taken;
    recorded in the new tenant's history (a refused one has none to go in)."""
    if not admin.operator:
        raise PageError(403, "Refused", "Only an operator may create tenants.")
    request_id = uuid.uuid4().hex  # the tenant's creation event and its history record
    ctx = CallContext(request_id=request_id, actor_kind="admin", actor_id=admin.actor)
    try:
        t = await console.core.create_tenant(
            name, display_name=display_name.strip(), inactive=not active, ctx=ctx
        )
    except InvalidArgument as err:
        raise Refused(400, err.message) from None
    except AlreadyExists as err:
        raise Refused(409, err.message) from None
    state = "active" if t.active else "inactive"
    await Action(console, admin, t, request_id=request_id).record(
        H.OPERATION_KIND_CREATE, "Tenant", t.id, 201, f"tenant created, connector {state}"
    )
    return t


async def set_active(act: Action, active: bool) -> tenants_pb2.Tenant:
    """Activates or deactivates the tenant's SCIM connector."""
    t = await act.console.core.update_tenant(act.tenant.id, active=active, ctx=act.ctx)
    state = "activated" if active else "deactivated"
    await act.record(H.OPERATION_KIND_UPDATE, "Tenant", t.id, 200, f"connector {state}")
    return t


async def generate(
    act: Action, *, scope: str, description: str, expires_in_days: int | None
) -> tenants_pb2.IssueTokenResponse:
    """Issues a token (its secret is in the answer, and nowhere after). Refused (400)
    for a bad scope, description or expiry; (409) at the live-token limit."""
    description = description.strip()
    if scope not in SCOPES or len(description) > MAX_DESCRIPTION:
        raise Refused(400, SCOPE_MESSAGE)
    if not description.isprintable():  # NUL and other control characters
        raise Refused(400, "A description is one line of printable text.")
    expires = None
    if expires_in_days is not None:
        if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise Refused(400, EXPIRY_MESSAGE)
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(days=expires_in_days))
    try:
        issued = await act.console.core.issue_token(
            act.tenant.id,
            description=description,
            scope=SCOPES[scope],
            expires=expires,
            ctx=act.ctx,
        )
    except FailedPrecondition:
        await act.record(
            H.OPERATION_KIND_CREATE, "Token", "", 409, "token not generated: two tokens are live"
        )
        raise Refused(409, LIMIT_MESSAGE) from None
    token = issued.token
    await act.record(
        H.OPERATION_KIND_CREATE, "Token", token.id, 201, f"token {token.prefix}… generated"
    )
    return issued


async def live_token(console: Console, t: tenants_pb2.Tenant, token_id: str) -> tenants_pb2.Token:
    """One of the tenant's live tokens; 404 for an unknown, revoked or another tenant's."""
    for k in await console.core.list_tokens(t.id):
        if k.id == token_id:
            return k
    raise NOT_FOUND


async def revoke(act: Action, token: tenants_pb2.Token) -> None:
    await act.console.core.revoke_token(act.tenant.id, token.id, ctx=act.ctx)
    await act.record(
        H.OPERATION_KIND_DELETE, "Token", token.id, 200, f"token {token.prefix}… revoked"
    )


async def rotate(act: Action, token: tenants_pb2.Token) -> tenants_pb2.RotateTokenResponse:
    """The successor is issued as `token` is revoked, in one transaction."""
    rotated = await act.console.core.rotate_token(
        act.tenant.id, revoke_token_id=token.id, ctx=act.ctx
    )
    new = rotated.token
    await act.record(
        H.OPERATION_KIND_CREATE,
        "Token",
        new.id,
        201,
        f"token {token.prefix}… rotated: {new.prefix}… issued, old revoked",
    )
    return rotated


def expiring_soon(token: tenants_pb2.Token, now: datetime) -> bool:
    return token.HasField("expires") and token.expires.ToDatetime(tzinfo=UTC) - now < timedelta(
        days=7
    )


# -- the API ----------------------------------------------------------------------------


def refusals_as_422(
    handler: Callable[[ApiCall], Awaitable[Any]],
) -> Callable[[ApiCall], Awaitable[Any]]:
    """An API handler whose action refuses a value the core refused (Refused 400, the
    page's status) answers 422 with the reason, as the API answers every core refusal
    of a value (api.CORE_STATUS)."""

    @functools.wraps(handler)
    async def run(call: ApiCall) -> Any:
        try:
            return await handler(call)
        except Refused as err:
            if err.status == 400:
                raise ApiError(422, err.message) from None
            raise

    return run


SCIM_URLS = obj(
    {
        "by_name": {"type": "string", "description": "What an IdP is configured with."},
        "by_id": {"type": "string", "description": "The same, by the tenant's id."},
        "by_token": {"type": "string", "description": "No tenant in it: the token names it."},
    }
)
TENANT = obj(
    {
        "id": STRING,
        "name": STRING,
        "display_name": STRING,
        "active": {"type": "boolean", "description": "The connector's state."},
        "created": TIME,
        "scim_urls": SCIM_URLS,
    }
)
CONNECTOR = obj(
    {
        "active": {
            "type": "boolean",
            "description": "False: every SCIM request for the tenant is refused (403).",
        },
        "scim_urls": SCIM_URLS,
        "live_tokens": INTEGER,
        "live_token_limit": {
            "type": "integer",
            "description": "At most this many live tokens: rotate or revoke one to make another.",
        },
    }
)
TOKEN = obj(
    {
        "id": STRING,
        "prefix": {"type": "string", "description": "The secret's first characters."},
        "description": STRING,
        "scope": {"enum": list(SCOPES)},
        "created": TIME,
        "expires": TIME,
        "last_used": TIME,
    }
)
ISSUED = obj(
    {
        "token": TOKEN,
        "secret": {
            "type": "string",
            "description": "The bearer secret for the IdP: in this answer only, never again.",
        },
    }
)


def tenant_json(console: Console, t: tenants_pb2.Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "display_name": t.display_name or t.name,
        "active": t.active,
        "created": time_json(t.created),
        "scim_urls": scim_urls(console.settings.scim_base_url, t.name, t.id)._asdict(),
    }


def token_json(k: tenants_pb2.Token) -> dict[str, Any]:
    return {
        "id": k.id,
        "prefix": k.prefix,
        "description": k.description,
        "scope": SCOPE_NAMES.get(k.scope, "full"),
        "created": time_json(k.created),
        "expires": time_json(k.expires),
        "last_used": time_json(k.last_used),
    }


@refusals_as_422
async def new_tenant(call: ApiCall) -> dict[str, Any]:
    t = await create_tenant(
        call.console,
        call.admin,
        name=call.body["name"],
        display_name=call.body.get("display_name", ""),
        active=call.body.get("active", True),
    )
    return tenant_json(call.console, t)


async def list_tenants(call: ApiCall) -> list[dict[str, Any]]:
    return [tenant_json(call.console, t) for t in await call.console.core.list_tenants()]


async def get_tenant(call: ApiCall) -> dict[str, Any]:
    return tenant_json(call.console, call.tenant)


async def connector_json(console: Console, t: tenants_pb2.Tenant) -> dict[str, Any]:
    return {
        "active": t.active,
        "scim_urls": scim_urls(console.settings.scim_base_url, t.name, t.id)._asdict(),
        "live_tokens": len(await console.core.list_tokens(t.id)),
        "live_token_limit": LIVE_TOKEN_LIMIT,
    }


async def get_connector(call: ApiCall) -> dict[str, Any]:
    return await connector_json(call.console, call.tenant)


async def set_connector(call: ApiCall) -> dict[str, Any]:
    t = await set_active(call.action(), call.body["active"])
    return await connector_json(call.console, t)


async def list_tokens(call: ApiCall) -> list[dict[str, Any]]:
    return [token_json(k) for k in await call.console.core.list_tokens(call.tenant.id)]


async def generate_token(call: ApiCall) -> dict[str, Any]:
    issued = await generate(
        call.action(),
        scope=call.body.get("scope", "full"),
        description=call.body.get("description", ""),
        expires_in_days=call.body.get("expires_in_days"),
    )
    return {"token": token_json(issued.token), "secret": issued.secret}


async def rotate_token(call: ApiCall) -> dict[str, Any]:
    token = await live_token(call.console, call.tenant, call.params["token_id"])
    rotated = await rotate(call.action(), token)
    return {"token": token_json(rotated.token), "secret": rotated.secret}


async def revoke_token(call: ApiCall) -> Reply:
    token = await live_token(call.console, call.tenant, call.params["token_id"])
    await revoke(call.action(), token)
    return Reply(None, 204)


_TOKEN_ID = {"token_id": "A live token's id."}

ROUTES = (
    Route(
        "GET",
        "/tenants",
        "Every tenant",
        list_tenants,
        array(TENANT),
        operator_only=True,
        tag="tenants",
    ),
    Route(
        "POST",
        "/tenants",
        "Create a tenant",
        new_tenant,
        TENANT,
        status=201,
        body=obj(
            {
                "name": {"type": "string", "description": "Unique; used in SCIM URLs."},
                "display_name": STRING,
                "active": {
                    "type": "boolean",
                    "default": True,
                    "description": "False: the connector starts inactive (every SCIM request "
                    "refused) until activated, so rules and mappings are set first.",
                },
            },
            optional=("display_name", "active"),
        ),
        errors={409: "A tenant of that name exists."},
        operator_only=True,
        tag="tenants",
    ),
    Route(
        "GET", "/tenants/{tenant}", "A tenant and its SCIM URLs", get_tenant, TENANT, tag="tenants"
    ),
    Route(
        "GET",
        "/tenants/{tenant}/connector",
        "The SCIM connector: its state, its URLs, its live tokens against the limit",
        get_connector,
        CONNECTOR,
        tag="connector",
    ),
    Route(
        "PUT",
        "/tenants/{tenant}/connector",
        "Activate or deactivate the SCIM connector",
        set_connector,
        CONNECTOR,
        body=obj({"active": BOOLEAN}),
        tag="connector",
        description="Inactive: every SCIM request for the tenant is refused (403).",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/tokens",
        "The live API tokens",
        list_tokens,
        array(TOKEN),
        tag="connector",
    ),
    Route(
        "POST",
        "/tenants/{tenant}/tokens",
        "Generate a token",
        generate_token,
        ISSUED,
        status=201,
        body=obj(
            {
                "scope": {"enum": list(SCOPES), "default": "full"},
                "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
                "expires_in_days": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_EXPIRY_DAYS,
                    "description": "Absent or null: the token does not expire.",
                },
            },
            optional=("scope", "description", "expires_in_days"),
        ),
        errors={409: f"The tenant has {LIVE_TOKEN_LIMIT} live tokens: rotate or revoke one."},
        tag="connector",
        description="The answer holds the secret, once: it is stored only as a hash.",
    ),
    Route(
        "POST",
        "/tenants/{tenant}/tokens/{token_id}/rotate",
        "Rotate a token",
        rotate_token,
        ISSUED,
        status=201,
        path_params=_TOKEN_ID,
        tag="connector",
        description="Its successor (same description and scope) is issued and the old "
        "token revoked, in one transaction; the new secret is in this answer only.",
    ),
    Route(
        "DELETE",
        "/tenants/{tenant}/tokens/{token_id}",
        "Revoke a token",
        revoke_token,
        None,
        status=204,
        path_params=_TOKEN_ID,
        tag="connector",
    ),
)
