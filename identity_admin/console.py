"""What every page and API route of the console needs: the core client, the
templates, who is signed in, which tenant they may see, and how an admin action is
recorded.

Who is signed in lives in the core (admin_access): the browser holds the session's
secret in a cookie (HttpOnly, SameSite=Strict, Secure under https), an API client
sends it as its bearer, and every request asks the core what it names, so any
replica serves any session and a sign-out or an expiry holds everywhere at once.
The console itself keeps no state.

- A tenant admin reaches only their own tenant: any other tenant's URL answers the
  same 404 as a tenant that does not exist (`Console.tenant_of`).
- Every form carries a CSRF token derived from the session secret (an HMAC, so
  nothing is stored), checked on every POST (403 without it); the API asks a
  cookie's unsafe requests for the same token in a header.
- Every admin action is recorded in the tenant's operations history with its actor
  (`Operation.actor`), and its changes carry the actor in their change events.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon
import falcon.asgi
import jinja2
from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import admin_pb2, history_pb2, tenants_pb2
from scim_identity_client import AsyncIdentityClient, CallContext, IdentityError
from scim_identity_client.errors import NotFound, Unauthenticated

from .settings import Settings

log = logging.getLogger("identity_admin")

COOKIE = "identity_admin_session"
HERE = Path(__file__).resolve().parent
_CSRF_CONTEXT = b"identity-admin csrf v1"
#: Token scopes by the names the pages and the API use.
SCOPES = {
    "full": tenants_pb2.TOKEN_SCOPE_FULL,
    "read-only": tenants_pb2.TOKEN_SCOPE_READ_ONLY,
    "users-only": tenants_pb2.TOKEN_SCOPE_USERS_ONLY,
}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()} | {0: "full"}
#: Security headers of every answer. Pages carry secrets: nothing is cached, no
#: referrer leaves, no frame embeds them, scripts and styles come from here only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
SIGNED_OUT = (
    "You are not signed in, or your session has ended. Sign in with a new link: your "
    "vendor's application gives you one, or an operator runs `identityctl admin-link`."
)


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session: only who holds the (HttpOnly) session secret can
    compute it, and nothing needs storing."""
    return hmac.new(session_secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def whole_number(text: str, *, most: int) -> int | None:
    """`text` as a whole number from 0 to `most`, else None. ASCII digits only and a
    bounded length: `str.isdigit` admits "²", which `int` refuses, and `int` refuses
    more than 4,300 digits; either was a 500 before it was a 400."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(most)):
        return None
    value = int(text)
    return value if value <= most else None


def display_time(t: timestamp_pb2.Timestamp) -> str:
    if not t.seconds and not t.nanos:
        return "never"
    return t.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


def display_seconds(t: timestamp_pb2.Timestamp) -> str:
    """A time to the second (the history's, the Live page's)."""
    if not t.seconds and not t.nanos:
        return "never"
    return t.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def display_iso(text: str | None) -> str:
    """An RFC 3339 time as the API writes it (`api.time_json`), as pages show times."""
    if not text:
        return "never"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Admin:
    """Who is signed in (from the core), and the secret their cookie or bearer holds."""

    session: admin_pb2.AdminSession
    secret: str

    @property
    def operator(self) -> bool:
        return self.session.principal.operator

    @property
    def actor(self) -> str:
        who = self.session.subject or f"session {self.session.id[:8]}"
        return f"console:{'operator ' if self.operator else ''}{who}"

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)


class PageError(Exception):
    """A refusal: rendered as a page (401, 403, 404, ...), or as the API's JSON error."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


NOT_FOUND = PageError(404, "Not found", "There is no such page.")


class Console:
    """The collaborators every resource needs: settings, the core, the templates."""

    def __init__(self, settings: Settings, make_client: Callable[[], AsyncIdentityClient]):
        self.settings = settings
        self._make_client = make_client
        self._client: AsyncIdentityClient | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["time"] = display_time
        self.templates.filters["iso_time"] = display_iso
        self.templates.filters["seconds"] = display_seconds
        self.templates.filters["query"] = urlencode
        self.templates.filters["scope"] = lambda s: SCOPE_NAMES.get(s, "?")

    # -- lifespan (falcon middleware): the channel opens in the worker's loop --------

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        self._client = self._make_client()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self._client is not None:
            await self._client.close()

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)

    @property
    def core(self) -> AsyncIdentityClient:
        assert self._client is not None, "the lifespan opens the client"
        return self._client

    # -- rendering -----------------------------------------------------------------

    def render(
        self, resp: falcon.asgi.Response, template: str, *, status: int = 200, **values: Any
    ) -> None:
        resp.status = status
        resp.content_type = falcon.MEDIA_HTML
        values.setdefault("admin", None)
        values.setdefault("nav", "")
        resp.text = self.templates.get_template(template).render(**values)

    # -- who is signed in --------------------------------------------------------------

    async def session(self, secret: str) -> Admin:
        """The admin a session secret names (a cookie's or a bearer's); 401 when it is
        unknown, ended or expired."""
        if not secret:
            raise PageError(401, "Signed out", SIGNED_OUT)
        try:
            session = await self.core.get_admin_session(secret)
        except Unauthenticated:
            raise PageError(401, "Signed out", SIGNED_OUT) from None
        return Admin(session, secret)

    async def admin(self, req: falcon.asgi.Request) -> Admin:
        """The admin the request's session cookie names."""
        secret = req.get_cookie_values(COOKIE)
        return await self.session(secret[0] if secret else "")

    async def form(self, req: falcon.asgi.Request, admin: Admin) -> dict[str, str]:
        """The POSTed form, after its CSRF token is checked (403 without it)."""
        try:
            media = await req.get_media()
        except falcon.HTTPError:
            media = None
        form = {k: v for k, v in (media or {}).items() if isinstance(v, str)}
        if not hmac.compare_digest(form.get("csrf", ""), admin.csrf):
            raise PageError(
                403,
                "Refused",
                "This form was not sent by the console's own page (its CSRF token is missing "
                "or wrong). Reload the page and try again.",
            )
        return form

    async def tenant_of(self, admin: Admin, ref: str) -> tenants_pb2.Tenant:
        """The tenant a URL names, when this admin may see it; else 404, the same as
        for a tenant that does not exist (a tenant admin learns nothing of others)."""
        principal = admin.session.principal
        if not admin.operator and ref not in (principal.tenant_id, principal.tenant_name):
            raise NOT_FOUND
        try:
            return await self.core.get_tenant(ref)
        except NotFound:
            raise NOT_FOUND from None

    def action(self, admin: Admin, tenant: tenants_pb2.Tenant, method: str = "POST") -> Action:
        return Action(self, admin, tenant, method)


@dataclass
class Action:
    """One admin action: its request id, the call context that attributes its changes
    to the admin (their change events carry the actor), and its record in the
    tenant's operations history, with the same actor."""

    console: Console
    admin: Admin
    tenant: tenants_pb2.Tenant
    #: The HTTP method the history shows (a page's form is a POST; the API's own).
    method: str = "POST"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)

    @property
    def ctx(self) -> CallContext:
        return CallContext(
            request_id=self.request_id, actor_kind="admin", actor_id=self.admin.actor
        )

    async def record(
        self, kind: int, resource_type: str, resource_id: str, status: int, detail: str
    ) -> None:
        op = history_pb2.Operation(
            tenant_id=self.tenant.id,
            method=self.method,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            kind=kind,  # type: ignore[arg-type]
            resource_type=resource_type,
            resource_id=resource_id,
            status=status,
            detail=detail,
            duration_ms=(time.perf_counter() - self.started) * 1000,
            request_id=self.request_id,
            actor=self.admin.actor,
        )
        op.time.FromDatetime(datetime.now(UTC))
        try:
            await self.console.core.record_operations([op])
        except IdentityError as err:
            # The action itself is done (and its change events carry the actor).
            log.warning("history record of an admin action failed: %s", err.code)
