"""The admin console: a Falcon ASGI app, server-rendered pages, the core through
`AsyncIdentityClient` only.

Who is signed in lives in the core (admin_access): the browser holds the session's
secret in a cookie (HttpOnly, SameSite=Strict, Secure under https) and every request
asks the core what it names, so any replica serves any session and a sign-out or an
expiry holds everywhere at once. The console itself keeps no state.

- A tenant admin reaches only their own tenant: any other tenant's URL answers the
  same 404 as a tenant that does not exist (`Console.tenant_of`).
- Every form carries a CSRF token derived from the session secret (an HMAC, so
  nothing is stored), checked on every POST (403 without it).
- Every admin action is recorded in the tenant's operations history with its actor
  (`Operation.actor`), and its changes carry the actor in their change events.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import jinja2
from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import admin_pb2, history_pb2, policy_pb2, tenants_pb2
from scim_identity_client import AsyncIdentityClient, CallContext, IdentityError
from scim_identity_client.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    VersionMismatch,
)
from scim_identity_client.urls import SIGN_IN_PATH, scim_urls

from . import policy_form as pf
from .settings import Settings

log = logging.getLogger("identity_admin")

COOKIE = "identity_admin_session"
_HERE = Path(__file__).resolve().parent
_CSRF_CONTEXT = b"identity-admin csrf v1"
#: At most this many live tokens per tenant (the core's limit, explained on the page).
LIVE_TOKEN_LIMIT = 2
SCOPES = {
    "full": tenants_pb2.TOKEN_SCOPE_FULL,
    "read-only": tenants_pb2.TOKEN_SCOPE_READ_ONLY,
    "users-only": tenants_pb2.TOKEN_SCOPE_USERS_ONLY,
}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()} | {0: "full"}
H = history_pb2
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


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session: only who holds the (HttpOnly) session secret can
    compute it, and nothing needs storing."""
    return hmac.new(session_secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _time(t: timestamp_pb2.Timestamp) -> str:
    if not t.seconds and not t.nanos:
        return "never"
    return t.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Admin:
    """Who is signed in (from the core), and the secret their cookie holds."""

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
    """An answer rendered as a page: 401, 403, 404, ..."""

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
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["time"] = _time
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

    async def admin(self, req: falcon.asgi.Request) -> Admin:
        secret = req.get_cookie_values(COOKIE)
        if not secret:
            raise PageError(401, "Signed out", _SIGNED_OUT)
        try:
            session = await self.core.get_admin_session(secret[0])
        except Unauthenticated:
            raise PageError(401, "Signed out", _SIGNED_OUT) from None
        return Admin(session, secret[0])

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

    def action(self, admin: Admin, tenant: tenants_pb2.Tenant) -> Action:
        return Action(self, admin, tenant)

    def show_secret(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        tenant: tenants_pb2.Tenant,
        token: tenants_pb2.Token,
        *,
        secret: str,
        revoked: tenants_pb2.Token | None = None,
    ) -> None:
        """The one answer that shows a token's secret (201, never cached)."""
        self.render(
            resp,
            "secret.html",
            status=201,
            title="Your new token",
            admin=admin,
            tenant=tenant,
            token=token,
            secret=secret,
            revoked=revoked,
        )


@dataclass
class Action:
    """One admin action: its request id, the call context that attributes its changes
    to the admin (their change events carry the actor), and its record in the
    tenant's operations history, with the same actor."""

    console: Console
    admin: Admin
    tenant: tenants_pb2.Tenant
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
            method="POST",
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


_SIGNED_OUT = (
    "You are not signed in, or your session has ended. Sign in with a new link: your "
    "vendor's application gives you one, or an operator runs `identityctl admin-link`."
)


# -- resources ---------------------------------------------------------------------------


class Health:
    """Liveness for probes and `make run`: the process answers (no session needed,
    nothing revealed)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok"


class _Resource:
    """A page's resource: the console, and who asks for which tenant."""

    def __init__(self, console: Console) -> None:
        self.c = console

    async def signed_in(
        self, req: falcon.asgi.Request, tenant: str
    ) -> tuple[Admin, tenants_pb2.Tenant]:
        admin = await self.c.admin(req)
        return admin, await self.c.tenant_of(admin, tenant)


class SignIn(_Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        secret = req.get_param("token") or ""
        try:
            session = await self.c.core.redeem_admin_link(secret)
        except Unauthenticated:
            raise PageError(
                401,
                "Sign-in link refused",
                "This sign-in link is unknown, used already or expired (links work once, "
                "for 15 minutes). Ask for a new one.",
            ) from None
        expires = session.expires.ToDatetime(tzinfo=UTC)
        resp.set_cookie(
            COOKIE,
            session.secret,
            max_age=max(int((expires - datetime.now(UTC)).total_seconds()), 0),
            path="/",
            secure=self.c.settings.secure_cookies,
            http_only=True,
            same_site="Strict",
        )
        # A page, not a redirect: after a link followed from another site, a redirect
        # would still be a cross-site navigation, which SameSite=Strict cookies skip.
        self.c.render(resp, "signed_in.html", title="Signed in")


class SignOut(_Resource):
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        admin = await self.c.admin(req)
        await self.c.form(req, admin)
        await self.c.core.end_admin_session(admin.secret)
        resp.unset_cookie(COOKIE, path="/")
        self.c.render(
            resp, "message.html", title="Signed out", message="You are signed out.", admin=None
        )


class Home(_Resource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        admin = await self.c.admin(req)
        if not admin.operator:
            raise falcon.HTTPSeeOther(f"/tenants/{admin.session.principal.tenant_name}/connector")
        tenants = await self.c.core.list_tenants()
        self.c.render(resp, "tenants.html", title="Tenants", admin=admin, tenants=tenants)


class Connector(_Resource):
    """The Connector page: SCIM base URL, connector state, tokens."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        await self.page(resp, admin, t)

    async def page(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        t: tenants_pb2.Tenant,
        *,
        error: str = "",
        status: int = 200,
    ) -> None:
        tokens = await self.c.core.list_tokens(t.id)
        now = datetime.now(UTC)
        self.c.render(
            resp,
            "connector.html",
            status=status,
            nav="connector",
            title=f"Connector · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            urls=scim_urls(self.c.settings.scim_base_url, t.name, t.id),
            tokens=tokens,
            at_limit=len(tokens) >= LIVE_TOKEN_LIMIT,
            limit=LIVE_TOKEN_LIMIT,
            scopes=list(SCOPES),
            error=error,
            expiring_soon={
                k.id
                for k in tokens
                if k.HasField("expires")
                and k.expires.ToDatetime(tzinfo=UTC) - now < timedelta(days=7)
            },
        )


class ConnectorState(_Resource):
    """GET: the confirmation; POST: activate or deactivate the SCIM connector."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        active = req.get_param_as_bool("active", required=True)
        self.c.render(
            resp,
            "confirm_state.html",
            title="Confirm",
            admin=admin,
            tenant=t,
            active=active,
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        if form.get("active") not in ("true", "false"):
            raise PageError(400, "Bad request", "Say whether the connector should be active.")
        active = form["active"] == "true"
        act = self.c.action(admin, t)
        t = await self.c.core.update_tenant(t.id, active=active, ctx=act.ctx)
        state = "activated" if active else "deactivated"
        await act.record(H.OPERATION_KIND_UPDATE, "Tenant", t.id, 200, f"connector {state}")
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/connector")


class Tokens(_Resource):
    """POST: generate a token; the answer shows its secret, once."""

    def __init__(self, console: Console, connector: Connector) -> None:
        super().__init__(console)
        self.connector = connector

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        scope = SCOPES.get(form.get("scope", "full"))
        description = form.get("description", "").strip()
        days_text = form.get("expires_in_days", "").strip()
        expires = None
        if scope is None or len(description) > 256:
            return await self.connector.page(
                resp, admin, t, status=400, error="Choose a scope; keep descriptions short."
            )
        if days_text:
            if not days_text.isdigit() or not 1 <= int(days_text) <= 3650:
                return await self.connector.page(
                    resp,
                    admin,
                    t,
                    status=400,
                    error="Expiry must be a whole number of days from 1 to 3650, or empty.",
                )
            expires = timestamp_pb2.Timestamp()
            expires.FromDatetime(datetime.now(UTC) + timedelta(days=int(days_text)))
        act = self.c.action(admin, t)
        try:
            issued = await self.c.core.issue_token(
                t.id, description=description, scope=scope, expires=expires, ctx=act.ctx
            )
        except FailedPrecondition:
            await act.record(
                H.OPERATION_KIND_CREATE,
                "Token",
                "",
                409,
                "token not generated: two tokens are live",
            )
            return await self.connector.page(resp, admin, t, status=409, error=_LIMIT)
        token = issued.token
        await act.record(
            H.OPERATION_KIND_CREATE, "Token", token.id, 201, f"token {token.prefix}… generated"
        )
        self.c.show_secret(resp, admin, t, token, secret=issued.secret)


_LIMIT = (
    f"This tenant already has {LIVE_TOKEN_LIMIT} live tokens, the most it may have. Two "
    "let you move your IdP to a new token without a gap; to replace one, Rotate it (the "
    "new token is issued and the old one stops at once), or Revoke one first."
)


class TokenAction(_Resource):
    """GET: the confirmation of a revoke; POST .../rotate or .../revoke."""

    async def _token(self, admin: Admin, t: tenants_pb2.Tenant, token_id: str) -> tenants_pb2.Token:
        for k in await self.c.core.list_tokens(t.id):
            if k.id == token_id:
                return k
        raise NOT_FOUND  # unknown, another tenant's, or no longer live

    async def on_get(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        tenant: str,
        token_id: str,
        action: str,
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        if action not in ("rotate", "revoke"):
            raise NOT_FOUND
        token = await self._token(admin, t, token_id)
        self.c.render(
            resp,
            "confirm_token.html",
            title="Confirm",
            admin=admin,
            tenant=t,
            token=token,
            action=action,
        )

    async def on_post(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        tenant: str,
        token_id: str,
        action: str,
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        if action not in ("rotate", "revoke"):
            raise NOT_FOUND
        await self.c.form(req, admin)
        token = await self._token(admin, t, token_id)
        act = self.c.action(admin, t)
        if action == "revoke":
            await self.c.core.revoke_token(t.id, token.id, ctx=act.ctx)
            await act.record(
                H.OPERATION_KIND_DELETE, "Token", token.id, 200, f"token {token.prefix}… revoked"
            )
            raise falcon.HTTPSeeOther(f"/tenants/{t.name}/connector")
        rotated = await self.c.core.rotate_token(t.id, revoke_token_id=token.id, ctx=act.ctx)
        new = rotated.token
        await act.record(
            H.OPERATION_KIND_CREATE,
            "Token",
            new.id,
            201,
            f"token {token.prefix}… rotated: {new.prefix}… issued, old revoked",
        )
        self.c.show_secret(resp, admin, t, new, secret=rotated.secret, revoked=token)


# -- Roles and rules; Mappings: the tenant's policy, the core's rules ---------------------

_STALE_PAGE = (
    "Someone changed this tenant's policy since you opened this page. Nothing was saved: "
    "here it is as it is now."
)
_STALE_EDITS = (
    "Someone changed this tenant's policy since you opened this page. Nothing was "
    "previewed: your edits are below, over the policy as it is now; preview them again."
)


class _PolicyPage(_Resource):
    """A page that edits the tenant's policy: every change is previewed by the core
    and saved with that preview's digest, so exactly what was checked is applied."""

    def fresh(self, form: dict[str, str], current: policy_pb2.TenantPolicy) -> bool:
        """Whether the form was made from the policy stored now."""
        return hmac.compare_digest(form.get("version", ""), pf.version(current))

    async def save(self, act: Action, new: policy_pb2.TenantPolicy) -> policy_pb2.PolicyPreview:
        """`new`, saved only if it does what the core's preview of it says (a mapping
        change moves no role; a concurrent change is refused, VersionMismatch)."""
        preview = await self.c.core.preview_policy(act.tenant.id, new, ctx=act.ctx)
        await self.c.core.set_policy(
            act.tenant.id, new, expected_digest=preview.digest, ctx=act.ctx
        )
        return preview


class RolesAndRules(_PolicyPage):
    """The Roles and rules page: the tenant's roles; the policy's rules, edited, then
    previewed by the core (who gains or loses which role), then saved as previewed."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        current = await self.c.core.get_policy(t.id)
        saved = "Rules saved." if req.get_param("saved") else ""
        await self.page(resp, admin, t, current, current, notice=saved)

    async def page(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        t: tenants_pb2.Tenant,
        shown: policy_pb2.TenantPolicy,
        current: policy_pb2.TenantPolicy,
        *,
        status: int = 200,
        error: str = "",
        notice: str = "",
        preview: policy_pb2.PolicyPreview | None = None,
    ) -> None:
        """The page, its rules form showing `shown` (the stored rules, or the admin's
        edits), made from `current` (the stored policy)."""
        self.c.render(
            resp,
            "roles.html",
            status=status,
            nav="roles",
            title=f"Roles and rules · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            roles=await self.c.core.list_roles(t.id),
            rules=pf.rules_view(shown),
            version=pf.version(current),
            choices={
                "on_last_scim_role_removed": pf.LAST_ROLE,
                "on_scim_delete": pf.ON_DELETE,
                "unique_identifier": pf.UNIQUE_IDENTIFIER,
                "local_edits": pf.LOCAL_EDITS,
                "unknown_members": pf.UNKNOWN_MEMBERS,
            },
            error=error,
            notice=notice,
            preview=preview,
            save_fields=pf.rules_fields(shown) if preview is not None else [],
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        """Create a role."""
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        name = form.get("name", "").strip()
        act = self.c.action(admin, t)
        try:
            await self.c.core.create_role(
                t.id, name, description=form.get("description", "").strip(), ctx=act.ctx
            )
        except (InvalidArgument, AlreadyExists) as err:
            status = 409 if isinstance(err, AlreadyExists) else 400
            await act.record(H.OPERATION_KIND_CREATE, "Role", name[:64], status, err.message)
            current = await self.c.core.get_policy(t.id)
            return await self.page(
                resp, admin, t, current, current, status=status, error=err.message
            )
        await act.record(H.OPERATION_KIND_CREATE, "Role", name[:64], 201, f"role {name} created")
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/roles")


class RoleDelete(_Resource):
    """GET: the confirmation; POST: delete the role (its assignments go with it)."""

    async def _role(self, t: tenants_pb2.Tenant, name: str) -> str:
        if name not in {r.name for r in await self.c.core.list_roles(t.id)}:
            raise NOT_FOUND
        return name

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        name = await self._role(t, req.get_param("name") or "")
        self.c.render(resp, "confirm_role.html", title="Confirm", admin=admin, tenant=t, role=name)

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        name = await self._role(t, form.get("name", ""))
        act = self.c.action(admin, t)
        try:
            await self.c.core.delete_role(t.id, name, ctx=act.ctx)
        except NotFound:
            raise NOT_FOUND from None  # deleted meanwhile
        await act.record(H.OPERATION_KIND_DELETE, "Role", name[:64], 200, f"role {name} deleted")
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/roles")


class RulesPreview(_Resource):
    """POST: the rules form, previewed by the core; the answer shows who would gain
    or lose which role and offers to save exactly that."""

    def __init__(self, console: Console, page: RolesAndRules) -> None:
        super().__init__(console)
        self.roles = page

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        current = await self.c.core.get_policy(t.id)
        try:
            new = pf.rules_from_form(form, current)
        except pf.FormError as err:
            return await self.roles.page(
                resp, admin, t, current, current, status=400, error=str(err)
            )
        if not self.roles.fresh(form, current):
            return await self.roles.page(
                resp,
                admin,
                t,
                new,
                current,
                status=409,
                error=_STALE_EDITS,
            )
        try:
            preview = await self.c.core.preview_policy(t.id, new)
        except InvalidArgument as err:
            return await self.roles.page(
                resp, admin, t, new, current, status=400, error=err.message
            )
        await self.roles.page(resp, admin, t, new, current, preview=preview)


class Rules(_Resource):
    """POST: save the previewed rules (the preview's digest with them); if saving now
    would do anything else, nothing is saved and the new preview is shown (409)."""

    def __init__(self, console: Console, page: RolesAndRules) -> None:
        super().__init__(console)
        self.roles = page

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        digest = form.get("digest", "")
        current = await self.c.core.get_policy(t.id)
        try:
            new = pf.rules_from_form(form, current)
            if not digest:
                raise pf.FormError("Preview the rules first: saving applies a preview.")
        except pf.FormError as err:
            return await self.roles.page(
                resp, admin, t, current, current, status=400, error=str(err)
            )
        act = self.c.action(admin, t)
        try:
            await self.c.core.set_policy(t.id, new, expected_digest=digest, ctx=act.ctx)
        except InvalidArgument as err:
            await act.record(H.OPERATION_KIND_UPDATE, "Policy", t.id, 400, err.message)
            return await self.roles.page(
                resp, admin, t, new, current, status=400, error=err.message
            )
        except VersionMismatch:
            await act.record(
                H.OPERATION_KIND_UPDATE, "Policy", t.id, 409, "rules not saved: stale preview"
            )
            try:
                preview = await self.c.core.preview_policy(t.id, new)
            except InvalidArgument as err:
                return await self.roles.page(
                    resp, admin, t, new, current, status=409, error=err.message
                )
            return await self.roles.page(
                resp,
                admin,
                t,
                new,
                current,
                status=409,
                preview=preview,
                error=(
                    "This tenant's users, groups or policy changed since your preview, so "
                    "saving would no longer do what it showed. Nothing was saved: here is "
                    "what saving these rules does now."
                ),
            )
        changed = pf.changed_rules(current, new)
        await act.record(H.OPERATION_KIND_UPDATE, "Policy", t.id, 200, f"rules saved: {changed}")
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/roles?saved=1")


class Mappings(_PolicyPage):
    """The Mappings page (Big ACL's Mappings tab): user and group attribute mappings,
    added, changed and removed one at a time, each checked by the core."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        await self.page(resp, admin, t, await self.c.core.get_policy(t.id))

    async def page(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        t: tenants_pb2.Tenant,
        current: policy_pb2.TenantPolicy,
        *,
        status: int = 200,
        error: str = "",
        form: dict[str, str] | None = None,
        editing: tuple[str, policy_pb2.AttributeMapping] | None = None,
    ) -> None:
        """The page; `form`: the admin's refused input, shown again in its form;
        `editing`: the mapping whose change form is open."""
        self.c.render(
            resp,
            "mappings.html",
            status=status,
            nav="mappings",
            title=f"Mappings · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            tables=[
                ("user", "User mappings", list(current.user_mappings)),
                ("group", "Group mappings", list(current.group_mappings)),
            ],
            schemas=[
                ("", "Core schema"),
                (pf.ENTERPRISE_SCHEMA, "Enterprise extension"),
                *[
                    (e.schema, e.name or e.schema)
                    for e in current.extension_schemas
                    if e.schema not in (pf.USER_SCHEMA, pf.ENTERPRISE_SCHEMA)
                ],
            ],
            kinds=pf.MAPPING_KINDS,
            source=pf.source_text,
            kind_label=pf.kind_label,
            version=pf.version(current),
            error=error,
            form=form or {},
            editing=(editing[0], editing[1], pf.kind_key(editing[1])) if editing else None,
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        """Add a mapping."""
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        current = await self.c.core.get_policy(t.id)
        try:
            kind, mapping = pf.mapping_from_form(form)
        except pf.FormError as err:
            return await self.page(resp, admin, t, current, status=400, error=str(err), form=form)
        new = pf.with_mapping(current, kind, mapping)
        await self.apply(
            resp,
            admin,
            t,
            form=form,
            current=current,
            new=new,
            done=f"{kind} mapping {mapping.field} added",
        )

    async def apply(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        t: tenants_pb2.Tenant,
        *,
        form: dict[str, str],
        current: policy_pb2.TenantPolicy,
        new: policy_pb2.TenantPolicy,
        done: str,
        editing: tuple[str, policy_pb2.AttributeMapping] | None = None,
    ) -> None:
        if not self.fresh(form, current):
            return await self.page(resp, admin, t, current, status=409, error=_STALE_PAGE)
        act = self.c.action(admin, t)
        try:
            await self.save(act, new)
        except InvalidArgument as err:
            await act.record(H.OPERATION_KIND_UPDATE, "Policy", t.id, 400, err.message)
            return await self.page(
                resp, admin, t, current, status=400, error=err.message, form=form, editing=editing
            )
        except VersionMismatch:
            await act.record(H.OPERATION_KIND_UPDATE, "Policy", t.id, 409, f"not saved: {done}")
            latest = await self.c.core.get_policy(t.id)
            return await self.page(resp, admin, t, latest, status=409, error=_STALE_PAGE)
        await act.record(H.OPERATION_KIND_UPDATE, "Policy", t.id, 200, done)
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/mappings")

    def named(
        self, current: policy_pb2.TenantPolicy, kind: str, field: str
    ) -> policy_pb2.AttributeMapping:
        """The mapping of `field` among the `kind` ("user", "group") mappings; 404 when
        there is none (removed meanwhile, or never)."""
        found = next((m for m in pf.mappings_of(current, kind) or [] if m.field == field), None)
        if found is None:
            raise NOT_FOUND
        return found


class MappingChange(_Resource):
    """GET: the change form (?type=&field=); POST: the mapping of field `was`
    replaced by the form's."""

    def __init__(self, console: Console, page: Mappings) -> None:
        super().__init__(console)
        self.mappings = page

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        current = await self.c.core.get_policy(t.id)
        kind = req.get_param("type") or ""
        mapping = self.mappings.named(current, kind, req.get_param("field") or "")
        await self.mappings.page(resp, admin, t, current, editing=(kind, mapping))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        current = await self.c.core.get_policy(t.id)
        was = self.mappings.named(current, form.get("type", ""), form.get("was", ""))
        try:
            kind, mapping = pf.mapping_from_form(form)
        except pf.FormError as err:
            return await self.mappings.page(
                resp, admin, t, current, status=400, error=str(err), editing=(form["type"], was)
            )
        new = pf.with_mapping(current, kind, mapping, replacing=was.field)
        await self.mappings.apply(
            resp,
            admin,
            t,
            form=form,
            current=current,
            new=new,
            done=f"{kind} mapping {was.field} changed",
            editing=(kind, was),
        )


class MappingRemove(_Resource):
    """GET: the confirmation (?type=&field=); POST: remove that mapping."""

    def __init__(self, console: Console, page: Mappings) -> None:
        super().__init__(console)
        self.mappings = page

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        current = await self.c.core.get_policy(t.id)
        kind = req.get_param("type") or ""
        mapping = self.mappings.named(current, kind, req.get_param("field") or "")
        self.c.render(
            resp,
            "confirm_mapping.html",
            title="Confirm",
            admin=admin,
            tenant=t,
            kind=kind,
            mapping=mapping,
            source=pf.source_text(mapping),
            version=pf.version(current),
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        current = await self.c.core.get_policy(t.id)
        kind = form.get("type", "")
        mapping = self.mappings.named(current, kind, form.get("field", ""))
        new = pf.with_mapping(current, kind, None, replacing=mapping.field)
        await self.mappings.apply(
            resp,
            admin,
            t,
            form=form,
            current=current,
            new=new,
            done=f"{kind} mapping {mapping.field} removed",
        )


def create_app(settings: Settings, make_client: Callable[[], AsyncIdentityClient]) -> Any:
    """The ASGI app; `make_client` opens the core client when a worker's lifespan
    starts (in that worker's event loop)."""
    console = Console(settings, make_client)
    app = falcon.asgi.App(middleware=[console])
    app.req_options.auto_parse_form_urlencoded = False

    async def page_error(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: PageError, params: Any
    ) -> None:
        console.render(
            resp,
            "message.html",
            status=err.status,
            title=err.title,
            message=err.message,
            admin=None,
        )

    async def unavailable(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: IdentityError, params: Any
    ) -> None:
        # Bad input is refused before the core; what the core refuses here is an
        # outage or a bug, never the admin's fault: a page that says so, no trace.
        log.warning("core call failed: %s %s", err.code, err.message)
        console.render(
            resp,
            "message.html",
            status=503,
            title="Unavailable",
            message="The identity service could not complete this; try again shortly.",
            admin=None,
        )

    async def not_found(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
    ) -> None:
        console.render(
            resp,
            "message.html",
            status=404,
            title="Not found",
            message=NOT_FOUND.message,
            admin=None,
        )

    app.add_error_handler(IdentityError, unavailable)
    app.add_error_handler(PageError, page_error)
    app.add_error_handler(falcon.HTTPNotFound, not_found)
    connector = Connector(console)
    app.add_route("/healthz", Health())
    app.add_route(SIGN_IN_PATH, SignIn(console))
    app.add_route("/signout", SignOut(console))
    app.add_route("/", Home(console))
    app.add_route("/tenants/{tenant}/connector", connector)
    app.add_route("/tenants/{tenant}/connector/state", ConnectorState(console))
    app.add_route("/tenants/{tenant}/tokens", Tokens(console, connector))
    app.add_route("/tenants/{tenant}/tokens/{token_id}/{action}", TokenAction(console))
    roles = RolesAndRules(console)
    app.add_route("/tenants/{tenant}/roles", roles)
    app.add_route("/tenants/{tenant}/roles/delete", RoleDelete(console))
    app.add_route("/tenants/{tenant}/rules/preview", RulesPreview(console, roles))
    app.add_route("/tenants/{tenant}/rules", Rules(console, roles))
    mappings = Mappings(console)
    app.add_route("/tenants/{tenant}/mappings", mappings)
    app.add_route("/tenants/{tenant}/mappings/edit", MappingChange(console, mappings))
    app.add_route("/tenants/{tenant}/mappings/remove", MappingRemove(console, mappings))
    app.add_static_route("/static", str(_HERE / "static"))
    return app


def get_app() -> Any:
    """The app gunicorn's workers load (settings from the environment)."""
    settings = Settings.from_env(os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def make_client() -> AsyncIdentityClient:
        return AsyncIdentityClient(
            settings.identity_target,
            token=settings.identity_token or None,
            tls_ca_file=settings.identity_tls_ca_file or None,
            tls_cert_file=settings.identity_tls_cert_file or None,
            tls_key_file=settings.identity_tls_key_file or None,
        )

    return create_app(settings, make_client)
