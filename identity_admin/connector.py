"""The connector: a tenant's SCIM URLs, its state, its API tokens. The actions here
(checks, the core call, the history record) are what the Connector page does, kept
apart from the page so that another front (the JSON API) does the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import history_pb2, tenants_pb2
from scim_identity_client.errors import FailedPrecondition

from .console import NOT_FOUND, SCOPES, Action, Console, PageError

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
