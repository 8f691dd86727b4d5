"""The admin console's pages and the app: a Falcon ASGI app, server-rendered pages
and the JSON API (`api.py`) over the same collaborators (`console.py`), the core
through `AsyncIdentityClient` only. The console keeps no state: who is signed in is
the core's; what a tenant admin may see is `Console.tenant_of`'s."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import falcon
import falcon.asgi

from scim_identity_api.v1 import history_pb2, policy_pb2, tenants_pb2
from scim_identity_client import AsyncIdentityClient, IdentityError
from scim_identity_client.errors import (
    Unauthenticated,
)
from scim_identity_client.urls import SIGN_IN_PATH, scim_urls

from . import api, connector, directory, history, live, rules, setup_guide
from . import policy_form as pf
from .connector import LIVE_TOKEN_LIMIT, Refused
from .console import COOKIE, HERE, NOT_FOUND, SCOPES, Admin, Console, PageError, whole_number
from .settings import Settings

log = logging.getLogger("identity_admin")
H = history_pb2

__all__ = ["COOKIE", "create_app", "get_app"]


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
    """A sign-in link: GET shows a one-button form, POST redeems the link. A GET
    never uses a link up (mail scanners and browsers prefetch links), and a POST from
    another site is refused (no one signs a browser into *their* tenant's session)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        secret = req.get_param("token") or ""
        if not secret:
            raise _LINK_REFUSED
        self.c.render(resp, "sign_in.html", title="Sign in", token=secret)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not self._same_site(req):
            raise PageError(
                403,
                "Refused",
                "This sign-in was sent from another site. Open your sign-in link itself.",
            )
        try:
            media = await req.get_media()
        except falcon.HTTPError:
            media = None
        secret = (media or {}).get("token")
        if not isinstance(secret, str) or not secret:
            raise _LINK_REFUSED
        try:
            session = await self.c.core.redeem_admin_link(secret)
        except Unauthenticated:
            raise _LINK_REFUSED from None
        old = req.get_cookie_values(COOKIE)
        if old:  # the browser's earlier session ends: one session per browser
            with contextlib.suppress(IdentityError):
                await self.c.core.end_admin_session(old[0])
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
        # A page, not a redirect (a redirect answering a cross-site navigation would
        # still be one, and SameSite=Strict cookies skip those).
        self.c.render(resp, "signed_in.html", title="Signed in")

    def _same_site(self, req: falcon.asgi.Request) -> bool:
        """The POST comes from this console's own page, as far as the browser says
        (clients that are not browsers say nothing). Browsers that send
        `Sec-Fetch-Site` are believed; else `Origin` must be the console's (our pages'
        Referrer-Policy: no-referrer makes a browser send `Origin: null` even from
        our own page, so "null" counts only where Sec-Fetch-Site vouches)."""
        site = req.get_header("Sec-Fetch-Site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = req.get_header("Origin")
        if origin is None:
            return True
        own = {req.prefix.lower(), _origin(self.c.settings.public_url)}
        return origin.lower() in own


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


_LINK_REFUSED = PageError(
    401,
    "Sign-in link refused",
    "This sign-in link is unknown, used already or expired (links work once, "
    "for 15 minutes). Ask for a new one.",
)


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
        await self.page(resp, admin)

    async def page(
        self,
        resp: falcon.asgi.Response,
        admin: Admin,
        *,
        status: int = 200,
        error: str = "",
        form: dict[str, str] | None = None,
    ) -> None:
        tenants = await self.c.core.list_tenants()
        self.c.render(
            resp,
            "tenants.html",
            status=status,
            title="Tenants",
            admin=admin,
            tenants=tenants,
            error=error,
            form=form,
        )


class NewTenant(_Resource):
    """POST: an operator creates a tenant, by default with its connector inactive, and
    goes on to its mappings (Big ACL's flow: mappings, a token, then Activate)."""

    def __init__(self, console: Console, home: Home) -> None:
        super().__init__(console)
        self.home = home

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        admin = await self.c.admin(req)
        form = await self.c.form(req, admin)
        try:
            t = await connector.create_tenant(
                self.c,
                admin,
                name=form.get("name", ""),
                display_name=form.get("display_name", ""),
                active=not form.get("inactive"),
            )
        except Refused as err:
            return await self.home.page(
                resp, admin, status=err.status, error=err.message, form=form
            )
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/mappings")


def show_secret(
    console: Console,
    resp: falcon.asgi.Response,
    admin: Admin,
    tenant: tenants_pb2.Tenant,
    token: tenants_pb2.Token,
    *,
    secret: str,
    revoked: tenants_pb2.Token | None = None,
) -> None:
    """The one page that shows a token's secret (201, never cached)."""
    console.render(
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
            expiring_soon={k.id for k in tokens if connector.expiring_soon(k, now)},
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
        t = await connector.set_active(self.c.action(admin, t), form["active"] == "true")
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/connector")


class Tokens(_Resource):
    """POST: generate a token; the answer shows its secret, once."""

    def __init__(self, console: Console, page: Connector) -> None:
        super().__init__(console)
        self.connector = page

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        days = form.get("expires_in_days", "").strip()
        try:
            expires_in_days = whole_number(days, most=connector.MAX_EXPIRY_DAYS)
            if days and expires_in_days is None:
                raise Refused(400, connector.EXPIRY_MESSAGE)
            issued = await connector.generate(
                self.c.action(admin, t),
                scope=form.get("scope", "full"),
                description=form.get("description", ""),
                expires_in_days=expires_in_days,
            )
        except Refused as err:
            return await self.connector.page(resp, admin, t, status=err.status, error=err.message)
        show_secret(self.c, resp, admin, t, issued.token, secret=issued.secret)


class TokenAction(_Resource):
    """GET: the confirmation of a rotate or revoke; POST .../rotate or .../revoke."""

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
        token = await connector.live_token(self.c, t, token_id)
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
        token = await connector.live_token(self.c, t, token_id)
        act = self.c.action(admin, t)
        if action == "revoke":
            await connector.revoke(act, token)
            raise falcon.HTTPSeeOther(f"/tenants/{t.name}/connector")
        rotated = await connector.rotate(act, token)
        show_secret(self.c, resp, admin, t, rotated.token, secret=rotated.secret, revoked=token)


# -- Roles and rules; Mappings: the tenant's policy, the core's rules (rules.py) ----------

_STALE_PAGE = (
    "Someone changed this tenant's policy since you opened this page. Nothing was saved: "
    "here it is as it is now."
)
_STALE_EDITS = (
    "Someone changed this tenant's policy since you opened this page. Nothing was "
    "previewed: your edits are below, over the policy as it is now; preview them again."
)
_STALE_PREVIEW = (
    "This tenant's users, groups or policy changed since your preview, so saving would "
    "no longer do what it showed. Nothing was saved: here is what saving these rules "
    "does now."
)


def _fresh(form: dict[str, str], current: policy_pb2.TenantPolicy) -> bool:
    """Whether a policy form was made from the policy stored now."""
    return hmac.compare_digest(form.get("version", ""), pf.version(current))


class RolesAndRules(_Resource):
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
        try:
            await rules.define_role(
                self.c.action(admin, t), form.get("name", ""), form.get("description", "")
            )
        except Refused as err:
            current = await self.c.core.get_policy(t.id)
            return await self.page(
                resp, admin, t, current, current, status=err.status, error=err.message
            )
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/roles")


class RoleDelete(_Resource):
    """GET: the confirmation (?name=); POST: delete the role."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        role = await rules.role_named(self.c, t.id, req.get_param("name") or "")
        self.c.render(
            resp, "confirm_role.html", title="Confirm", admin=admin, tenant=t, role=role.name
        )

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        role = await rules.role_named(self.c, t.id, form.get("name", ""))
        await rules.remove_role(self.c.action(admin, t), role)
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
        if not _fresh(form, current):
            return await self.roles.page(
                resp, admin, t, new, current, status=409, error=_STALE_EDITS
            )
        try:
            preview = await rules.preview(self.c, t.id, new)
        except Refused as err:
            return await self.roles.page(
                resp, admin, t, new, current, status=err.status, error=err.message
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
        try:
            await rules.save(self.c.action(admin, t), current, new, digest)
        except rules.Stale:
            try:
                preview = await rules.preview(self.c, t.id, new)
            except Refused as err:
                return await self.roles.page(
                    resp, admin, t, new, current, status=409, error=err.message
                )
            return await self.roles.page(
                resp, admin, t, new, current, status=409, preview=preview, error=_STALE_PREVIEW
            )
        except Refused as err:
            return await self.roles.page(
                resp, admin, t, new, current, status=err.status, error=err.message
            )
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/roles?saved=1")


class Mappings(_Resource):
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
        """`new` saved (one mapping added, changed or removed from `current`), then
        back to the page; else the page again with the reason and the admin's input."""
        if not _fresh(form, current):
            return await self.page(resp, admin, t, current, status=409, error=_STALE_PAGE)
        try:
            await rules.change(self.c.action(admin, t), current, new, done)
        except rules.Stale:
            latest = await self.c.core.get_policy(t.id)
            return await self.page(resp, admin, t, latest, status=409, error=_STALE_PAGE)
        except Refused as err:
            return await self.page(
                resp,
                admin,
                t,
                current,
                status=err.status,
                error=err.message,
                form=form,
                editing=editing,
            )
        raise falcon.HTTPSeeOther(f"/tenants/{t.name}/mappings")


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
        mapping = rules.mapping_named(current, kind, req.get_param("field") or "")
        await self.mappings.page(resp, admin, t, current, editing=(kind, mapping))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        form = await self.c.form(req, admin)
        current = await self.c.core.get_policy(t.id)
        was = rules.mapping_named(current, form.get("type", ""), form.get("was", ""))
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
        mapping = rules.mapping_named(current, kind, req.get_param("field") or "")
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
        mapping = rules.mapping_named(current, kind, form.get("field", ""))
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


# -- Directory: users and groups, a user's roles and where each comes from ---------------

#: The highest start a page or the API takes (the contract's start_index is an int32).
MAX_START = 2**31 - 1


def _start(req: falcon.asgi.Request) -> int:
    start = whole_number(req.get_param("start") or "1", most=MAX_START)
    if not start:
        raise PageError(400, "Bad request", "start must be a whole number from 1.")
    return start


class Directory(_Resource):
    """The Directory page: the tenant's users or groups, searched, a page at a time."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        show = req.get_param("show") or "users"
        if show not in ("users", "groups"):
            raise PageError(400, "Bad request", "Show users or groups.")
        q = directory.check_query(req.get_param("q") or "")
        start = _start(req)
        if show == "users":
            users = await directory.search_users(self.c, t, q, start)
            total, rows = users.total_results, [directory.user_summary(u) for u in users.users]
        else:
            groups = await directory.search_groups(self.c, t, q, start)
            total, rows = groups.total_results, [directory.group_summary(g) for g in groups.groups]
        size = directory.PAGE_SIZE
        self.c.render(
            resp,
            "directory.html",
            nav="directory",
            title=f"Directory · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            show=show,
            q=q,
            rows=rows,
            total=total,
            start=start,
            last=start + len(rows) - 1,
            previous=max(start - size, 1) if start > 1 else None,
            next=start + size if start + size <= total else None,
        )


class DirectoryUser(_Resource):
    """A user: their details, groups and roles, each role with its provenance."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str, user_id: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        user = directory.user_json(await directory.user_detail(self.c, t, user_id))
        self.c.render(
            resp,
            "directory_user.html",
            nav="directory",
            title=f"{user['user_name']} · Directory",
            admin=admin,
            tenant=t,
            user=user,
        )


class DirectoryGroup(_Resource):
    """A group and its first members."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str, group_id: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        group = directory.group_json(await directory.group_detail(self.c, t, group_id))
        self.c.render(
            resp,
            "directory_group.html",
            nav="directory",
            title=f"{group['display_name']} · Directory",
            admin=admin,
            tenant=t,
            group=group,
            limit=directory.MEMBER_LIMIT,
        )


# -- Set up your IdP, History, Live --------------------------------------------------------


class SetUp(_Resource):
    """Set up your IdP: the overview (which IdP, Test connection) and a step-by-step
    page per IdP (`/setup/okta`, `/setup/entra`) with this tenant's values in."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        await self.page(req, resp, tenant, "")

    async def on_get_idp(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str, idp: str
    ) -> None:
        if idp not in setup_guide.IDPS:
            raise NOT_FOUND
        await self.page(req, resp, tenant, idp)

    async def page(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str, idp: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        found = await setup_guide.setup(self.c, t)
        name = setup_guide.IDPS.get(idp, "")
        self.c.render(
            resp,
            f"setup_{idp}.html" if idp else "setup.html",
            nav="setup",
            title=f"Set up {name}" if name else f"Set up your IdP · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            idps=setup_guide.IDPS,
            guide=found.guide,
            live_tokens=found.live_tokens,
            token_prefixes=found.token_prefixes,
            connection=found.connection,
            advice=history.ADVICE,
        )


class History(_Resource):
    """The operations history: filters (a GET form), pages, each operation's detail."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        params = parse_qs(req.query_string, keep_blank_values=True)
        values: dict[str, Any] = dict(
            nav="history",
            title=f"History · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            kinds=list(history.KINDS),
            resource_types=history.RESOURCE_TYPES,
            outcomes=list(history.OUTCOMES),
            sources=list(history.SOURCES),
        )
        try:
            filters = history.parse(params)
            found = await history.page(self.c, t, filters)
        except history.BadFilter as err:
            # What the console cannot read as a filter, or a page link whose record
            # passed retention: 400, with the form to fix it.
            return self.c.render(
                resp,
                "history.html",
                status=400,
                error=str(err),
                filters=history.raw(params),
                operations=[],
                next_page="",
                token_prefixes={},
                **values,
            )
        self.c.render(
            resp,
            "history.html",
            error="",
            filters=filters,
            operations=found.operations,
            next_page=found.next_page_token,
            token_prefixes=await history.token_prefixes(self.c, t),
            **values,
        )

    async def on_get_operation(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str, operation_id: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        op = await history.operation(self.c, t, operation_id)
        tokens = await self.c.core.list_tokens(t.id, include_inactive=True)
        self.c.render(
            resp,
            "operation.html",
            nav="history",
            title=f"{op.method} {op.resource_type or 'request'} · {history.status_text(op.status)}",
            admin=admin,
            tenant=t,
            op=op,
            token=next((k for k in tokens if k.id == op.token_id), None),
            advice=history.ADVICE.get(op.status, ""),
        )


class Live(_Resource):
    """The tenant's change events as they happen: the page (the latest events,
    rendered) and its stream (server-sent events, resumed from Last-Event-ID)."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        revision, events = await live.recent(self.c.core, t.id)
        self.c.render(
            resp,
            "live.html",
            nav="live",
            title=f"Live · {t.display_name or t.name}",
            admin=admin,
            tenant=t,
            revision=revision,
            events=events,
        )

    async def on_get_events(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, tenant: str
    ) -> None:
        admin, t = await self.signed_in(req, tenant)
        current = (await self.c.core.get_revision(t.id)).revision
        try:
            since = live.revision_param(req.get_header("Last-Event-ID"), current)
            if since is None:
                since = live.revision_param(req.get_param("since"), current)
        except live.BadRevision as err:
            raise PageError(400, "Bad request", str(err)) from None
        core = self.c.core

        async def signed_in() -> bool:
            try:
                await core.get_admin_session(admin.secret)
            except Unauthenticated:
                return False
            except IdentityError:
                return True  # the core is away: the stream waits for it
            return True

        # Not buffered by a proxy in front (nginx): events go out as they happen.
        resp.set_header("X-Accel-Buffering", "no")
        resp.sse = live.stream(
            core,
            t.id,
            current if since is None else since,
            keepalive=self.c.settings.live_keepalive_seconds,
            signed_in=signed_in,
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

    async def core_refused(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: IdentityError, params: Any
    ) -> None:
        # What a page did not catch itself. A refusal of the admin's input is the
        # admin's to fix (the API's table: 4xx with the core's reason); anything else
        # is an outage or a bug: a page that says so, no trace.
        status = api.core_status(err)
        if status == 404:
            return await page_error(req, resp, NOT_FOUND, params)
        if status != 503:
            refused = f"The identity service refused this: {err.message}"
            status = 400 if status == 422 else status
            return await page_error(req, resp, PageError(status, "Refused", refused), params)
        log.warning("core call failed: %s %s", err.code, err.message)
        console.render(
            resp,
            "message.html",
            status=503,
            title="Unavailable",
            message="The identity service could not complete this; try again shortly.",
            admin=None,
        )

    async def unexpected(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
    ) -> None:
        # A bug: logged with its trace; the browser or API client gets a plain 500 in
        # the console's own form (a page, or the API's JSON error), never a trace.
        log.exception("unhandled error in %s %s", req.method, req.path, exc_info=err)
        message = "Something went wrong in the console; it has been logged."
        if req.path.startswith("/api/"):
            api.error(resp, 500, message)
            return
        console.render(resp, "message.html", status=500, title="Error", message=message, admin=None)

    async def http_error(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, err: falcon.HTTPError, params: Any
    ) -> None:
        # Falcon's own refusals (no such path, a method a path lacks, a missing
        # parameter): the API's JSON error under /api/, a page elsewhere.
        resp.set_headers(err.headers or {})
        status = err.status_code
        if req.path.startswith("/api/"):
            message = {
                404: api.NOT_FOUND,
                405: f"{req.path} does not take {req.method}.",
            }.get(status, err.description or err.title)
            return api.error(resp, status, message)
        console.render(
            resp,
            "message.html",
            status=status,
            title="Not found" if status == 404 else err.title,
            message=NOT_FOUND.message if status == 404 else (err.description or err.title),
            admin=None,
        )

    # Falcon picks the most specific handler, whatever the order of these calls.
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(IdentityError, core_refused)
    app.add_error_handler(PageError, page_error)
    app.add_error_handler(falcon.HTTPError, http_error)
    page = Connector(console)
    app.add_route("/healthz", Health())
    app.add_route(SIGN_IN_PATH, SignIn(console))
    app.add_route("/signout", SignOut(console))
    home = Home(console)
    app.add_route("/", home)
    app.add_route("/tenants", NewTenant(console, home))
    app.add_route("/tenants/{tenant}/connector", page)
    app.add_route("/tenants/{tenant}/connector/state", ConnectorState(console))
    app.add_route("/tenants/{tenant}/tokens", Tokens(console, page))
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
    app.add_route("/tenants/{tenant}/directory", Directory(console))
    app.add_route("/tenants/{tenant}/directory/users/{user_id}", DirectoryUser(console))
    app.add_route("/tenants/{tenant}/directory/groups/{group_id}", DirectoryGroup(console))
    setup = SetUp(console)
    app.add_route("/tenants/{tenant}/setup", setup)
    app.add_route("/tenants/{tenant}/setup/{idp}", setup, suffix="idp")
    history_page = History(console)
    app.add_route("/tenants/{tenant}/history", history_page)
    app.add_route("/tenants/{tenant}/history/{operation_id}", history_page, suffix="operation")
    console.templates.filters.update(history.FILTERS)
    live_page = Live(console)
    app.add_route("/tenants/{tenant}/live", live_page)
    app.add_route("/tenants/{tenant}/live/events", live_page, suffix="events")
    app.add_static_route("/static", str(HERE / "static"))
    # The JSON API: each module's routes, declared beside the actions they share with
    # the pages (docs/architecture.md, "Adding an API route").
    routes = [
        *api.ROUTES,
        *connector.ROUTES,
        *directory.ROUTES,
        *rules.ROUTES,
        *history.ROUTES,
        *setup_guide.ROUTES,
    ]
    api.Api(console, routes).register(app)
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
