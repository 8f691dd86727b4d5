"""The admin console's security, against the real processes (both databases): a tenant
admin sees nothing of another tenant (404, as for a tenant that does not exist),
sign-in links work once and for 15 minutes, every form needs its CSRF token, a
secret is shown once, sessions end and expire, cookies are what they must be."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from identity_admin.app import COOKIE as CONSOLE_COOKIE
from scim_identity_api.v1 import common_pb2, groups_pb2, history_pb2, policy_pb2, users_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant
from scim_identity_client.urls import admin_sign_in_url

from ..support import Visitor
from .conftest import Stack, admin_session, start_console

pytestmark = pytest.mark.e2e


def _other(client: IdentityClient, tenant: Tenant) -> tuple[Tenant, str]:
    other = client.create_tenant(f"{tenant.name}-other")
    token = client.issue_token(other.id, description="theirs").token.id
    return other, token


def test_a_tenant_admin_sees_nothing_of_another_tenant(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    other, their_token = _other(client, tenant)
    own = admin_of.get(f"/tenants/{tenant.name}/connector")
    assert own.status == 200 and tenant.name in own.body
    csrf = own.csrf()
    missing = admin_of.get("/tenants/no-such-tenant/connector")
    assert missing.status == 404
    for ref in (other.name, other.id):
        for method, path, form in (
            ("GET", f"/tenants/{ref}/connector", None),
            ("GET", f"/tenants/{ref}/connector/state?active=false", None),
            ("POST", f"/tenants/{ref}/connector/state", {"csrf": csrf, "active": "false"}),
            ("POST", f"/tenants/{ref}/tokens", {"csrf": csrf, "scope": "full"}),
            ("GET", f"/tenants/{ref}/tokens/{their_token}/revoke", None),
            ("POST", f"/tenants/{ref}/tokens/{their_token}/revoke", {"csrf": csrf}),
            ("POST", f"/tenants/{ref}/tokens/{their_token}/rotate", {"csrf": csrf}),
        ):
            page = admin_of.request(method, path, form)
            # The same answer as for a tenant that does not exist.
            assert page.status == 404, (method, path, page.status)
            assert page.body == missing.body
            assert other.name not in page.body and other.id not in page.body
    # Their token through my own tenant's URLs: not found either.
    for action in ("revoke", "rotate"):
        page = admin_of.post(
            f"/tenants/{tenant.name}/tokens/{their_token}/{action}", {"csrf": csrf}
        )
        assert page.status == 404
    # Nothing of theirs changed.
    assert client.get_tenant(other.id).active
    assert [t.id for t in client.list_tokens(other.id)] == [their_token]
    # My home is my own tenant's page; the operator's tenant list is not mine.
    home = admin_of.get("/")
    assert home.status == 303 and home.headers["location"].endswith(
        f"/tenants/{tenant.name}/connector"
    )


def test_an_operator_reaches_every_tenant(
    client: IdentityClient, tenant: Tenant, visitor: Visitor
) -> None:
    other, _ = _other(client, tenant)
    visitor.sign_in(client, None, operator=True, subject="platform@vendor.example")
    home = visitor.get("/")
    assert home.status == 200 and tenant.name in home.body and other.name in home.body
    for t in (tenant, other):
        page = visitor.get(f"/tenants/{t.name}/connector")
        assert page.status == 200 and f"/scim/v2/{t.name}" in page.body


def test_sign_in_links_work_once_and_for_15_minutes(
    client: IdentityClient, tenant: Tenant, stack: Stack, clock: list[datetime]
) -> None:
    link = client.create_admin_link(tenant.name)
    url = admin_sign_in_url(stack.console_url, link.secret)
    # Opening the link (as a mail scanner's prefetch does) uses nothing up.
    prefetch = Visitor(stack.console_url)
    path = urllib.parse.urlsplit(url)
    for _ in range(2):
        page = prefetch.get(f"{path.path}?{path.query}")
        assert page.status == 200 and not prefetch.cookie and 'id="sign-in"' in page.body
    first = Visitor(stack.console_url)
    page = first.follow_sign_in_link(url)
    assert page.status == 200 and first.cookie.startswith("ses_")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # http on loopback: a Secure cookie would never return
    # Replayed: refused, and no session.
    replay = Visitor(stack.console_url)
    page = replay.follow_sign_in_link(url)
    assert page.status == 401 and "used already or expired" in page.body and not replay.cookie
    # Expired: refused.
    late = client.create_admin_link(tenant.name)
    clock[0] += timedelta(minutes=15)
    page = replay.follow_sign_in_link(admin_sign_in_url(stack.console_url, late.secret))
    assert page.status == 401 and not replay.cookie
    # Junk and no token at all: refused the same way.
    assert replay.get("/signin?token=").status == 401
    assert replay.get("/signin").status == 401
    for form in ({"token": "adm_junk"}, {"token": ""}, {}):
        assert replay.post("/signin", form).status == 401


def test_a_sign_in_posted_from_another_site_is_refused_and_uses_nothing(
    client: IdentityClient, tenant: Tenant, stack: Stack
) -> None:
    # Login CSRF: another site's page posting its own link would sign this browser
    # into that tenant's session.
    link = client.create_admin_link(tenant.name)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # no Sec-Fetch-Site to vouch for it
        {"Sec-Fetch-Site": "cross-site", "Origin": stack.console_url},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status = _post_with(stack.console_url, "/signin", {"token": link.secret}, headers)
        assert status == 403, headers
    # The console's own origin, or a browser vouching same-origin: signed in.
    own = client.create_admin_link(tenant.name)
    form = {"token": own.secret}
    assert _post_with(stack.console_url, "/signin", form, {"Origin": stack.console_url}) == 200
    vouched = client.create_admin_link(tenant.name)
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    assert _post_with(stack.console_url, "/signin", {"token": vouched.secret}, headers) == 200
    # Not used up: the link still signs its own admin in.
    v = Visitor(stack.console_url)
    assert v.follow_sign_in_link(admin_sign_in_url(stack.console_url, link.secret)).status == 200
    assert v.cookie.startswith("ses_")


def _post_with(base: str, path: str, form: dict[str, str], headers: dict[str, str]) -> int:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_sessions_end_at_sign_out_and_expire(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, clock: list[datetime]
) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/connector")
    assert page.status == 200
    other = Visitor(admin_of.base)
    other.sign_in(client, tenant.name)
    # Sign-out needs the CSRF token too.
    assert admin_of.post("/signout", {}).status == 403
    assert admin_of.post("/signout", {"csrf": page.csrf()}).status == 200
    assert admin_of.get(f"/tenants/{tenant.name}/connector").status == 401
    # The other session lives until it expires (8 hours).
    assert other.get(f"/tenants/{tenant.name}/connector").status == 200
    clock[0] += timedelta(hours=8)
    gone = other.get(f"/tenants/{tenant.name}/connector")
    assert gone.status == 401 and "Sign in with a new link" in gone.body
    # No cookie at all: the same page, never a tenant's data.
    anonymous = Visitor(admin_of.base).get(f"/tenants/{tenant.name}/connector")
    assert anonymous.status == 401 and tenant.id not in anonymous.body


def test_every_form_needs_its_csrf_token(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    token = client.issue_token(tenant.id).token.id
    page = admin_of.get(f"/tenants/{tenant.name}/connector")
    # Another session's token is as good as none.
    stranger = Visitor(stack.console_url)
    stranger.sign_in(client, tenant.name)
    foreign = stranger.get(f"/tenants/{tenant.name}/connector").csrf()
    assert foreign != page.csrf()
    for form in ({}, {"csrf": ""}, {"csrf": foreign}, {"csrf": page.csrf()[:-1] + "0"}):
        for path, extra in (
            (f"/tenants/{tenant.name}/tokens", {"scope": "full"}),
            (f"/tenants/{tenant.name}/tokens/{token}/revoke", {}),
            (f"/tenants/{tenant.name}/tokens/{token}/rotate", {}),
            (f"/tenants/{tenant.name}/connector/state", {"active": "false"}),
        ):
            if form.get("csrf") == page.csrf():
                continue
            answer = admin_of.post(path, {**form, **extra})
            assert answer.status == 403, (path, form, answer.status)
            assert "CSRF" in answer.body
    # Nothing changed.
    assert [t.id for t in client.list_tokens(tenant.id)] == [token]
    assert client.get_tenant(tenant.id).active


def test_a_secret_is_shown_once_and_never_again(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/connector")
    shown = admin_of.post(
        f"/tenants/{tenant.name}/tokens",
        {"csrf": page.csrf(), "scope": "full", "description": "okta"},
    )
    assert shown.status == 201 and "shown once" in shown.body
    (token,) = client.list_tokens(tenant.id)
    secret = shown.body.split('id="secret" value="', 1)[1].split('"', 1)[0]
    assert secret.startswith(token.prefix) and client.authenticate(secret).token.id == token.id
    assert shown.headers["cache-control"] == "no-store"
    rotated = admin_of.post(
        f"/tenants/{tenant.name}/tokens/{token.id}/rotate", {"csrf": page.csrf()}
    )
    assert rotated.status == 201
    new_secret = rotated.body.split('id="secret" value="', 1)[1].split('"', 1)[0]
    # Every page after them: neither secret, anywhere.
    later = [
        admin_of.get(f"/tenants/{tenant.name}/connector"),
        admin_of.get("/"),
        admin_of.get(f"/tenants/{tenant.name}/connector/state?active=false"),
        *[
            admin_of.get(f"/tenants/{tenant.name}/tokens/{t.id}/{a}")
            for t in client.list_tokens(tenant.id)
            for a in ("rotate", "revoke")
        ],
    ]
    for p in later:
        assert secret not in p.body and new_secret not in p.body
        assert secret[len(token.prefix) :] not in p.body
    assert any(token.prefix not in p.body for p in later)  # the old one is gone from the list


def test_the_two_token_limit_is_explained_where_it_bites(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    client.issue_token(tenant.id)
    client.issue_token(tenant.id)
    page = admin_of.get(f"/tenants/{tenant.name}/connector")
    assert 'id="limit-note"' in page.body and "Rotate" in page.body
    assert 'id="generate" disabled' in page.body
    # A post that gets past the disabled button is refused with the same explanation.
    refused = admin_of.post(f"/tenants/{tenant.name}/tokens", {"csrf": page.csrf()})
    assert refused.status == 409 and "2 live tokens" in refused.body
    assert len(client.list_tokens(tenant.id)) == 2
    # Bad input is a 400 page, and nothing is issued.
    client.revoke_token(tenant.id, client.list_tokens(tenant.id)[0].id)
    for bad in ({"scope": "root"}, {"expires_in_days": "-1"}, {"expires_in_days": "x"}):
        answer = admin_of.post(f"/tenants/{tenant.name}/tokens", {"csrf": page.csrf(), **bad})
        assert answer.status == 400, bad
    assert len(client.list_tokens(tenant.id)) == 1


def test_admin_actions_are_in_the_history_with_their_actor(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    csrf = admin_of.get(f"/tenants/{tenant.name}/connector").csrf()
    assert admin_of.post(f"/tenants/{tenant.name}/tokens", {"csrf": csrf}).status == 201
    (token,) = client.list_tokens(tenant.id)
    revoke = admin_of.post(f"/tenants/{tenant.name}/tokens/{token.id}/revoke", {"csrf": csrf})
    assert revoke.status == 303
    state = {"csrf": csrf, "active": "false"}
    assert admin_of.post(f"/tenants/{tenant.name}/connector/state", state).status == 303
    ops = client.list_operations(tenant.id).operations
    seen = [(o.resource_type, o.status, o.actor, o.detail) for o in reversed(ops)]
    actor = "console:ada@example.com"
    assert seen == [
        ("Token", 201, actor, f"token {token.prefix}… generated"),
        ("Token", 200, actor, f"token {token.prefix}… revoked"),
        ("Tenant", 200, actor, "connector deactivated"),
    ]
    # The changes' events carry the same actor.
    until = client.get_revision(tenant.id).revision
    with client.watch(tenant.id, since=0, heartbeat_seconds=1, give_up_after=10) as stream:
        actors = set()
        for event in stream:
            actors.add((event.actor.kind, event.actor.id))
            if event.revision >= until:
                break
    assert ("admin", actor) in actors


def test_https_consoles_set_secure_cookies_and_refuse_plain_http_off_loopback(
    client: IdentityClient, tenant: Tenant, identity_target: str, tmp_path: Path
) -> None:
    proc, url = start_console(
        identity_target,
        tmp_path,
        "https://scim.example.com",
        ADMIN_PUBLIC_URL="https://admin.example.com",
    )
    try:
        v = Visitor(url)
        page = v.sign_in(client, tenant.name)
        assert "Secure" in v.history[-1].headers["set-cookie"]
        assert page.status == 200
        connector = v.get(f"/tenants/{tenant.name}/connector")
        assert f"https://scim.example.com/scim/v2/{tenant.name}" in connector.body
    finally:
        proc.stop()
    from identity_admin.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="https"):
        Settings.from_env({"ADMIN_LISTEN": "0.0.0.0:8081"})
    assert Settings.from_env(
        {"ADMIN_LISTEN": "0.0.0.0:8081", "ADMIN_PUBLIC_URL": "https://a.example"}
    ).secure_cookies
    with pytest.raises(SettingsError, match="https"):
        Settings.from_env({"ADMIN_LISTEN": "0.0.0.0:8081", "ADMIN_PUBLIC_URL": "http://a.example"})
    # A container's console: bound on every interface, reached on the host's loopback
    # (compose publishes it there). Its cookies are Secure all the same: a browser
    # sends them back to loopback http, and to no plain-http address on a network.
    container = Settings.from_env(
        {"ADMIN_LISTEN": "0.0.0.0:8081", "ADMIN_PUBLIC_URL": "http://127.0.0.1:8081"}
    )
    assert container.secure_cookies
    assert not Settings.from_env({"ADMIN_LISTEN": "127.0.0.1:8081"}).secure_cookies
    # The pages, redirects and cookie path are at the root: a prefix would break them.
    for url in ("https://a.example/admin", "https://a.example/?x=1"):
        with pytest.raises(SettingsError, match="no path"):
            Settings.from_env({"ADMIN_PUBLIC_URL": url})
    assert Settings.from_env({"ADMIN_PUBLIC_URL": "https://a.example/"}).public_url


# -- every route, enumerated from the app: pages added later are covered as they land ---

#: The routes without a {tenant}, each reviewed for what a tenant admin gets from it.
#: A new one fails `test_every_route_of_another_tenant_is_404` until it is listed here.
NOT_TENANT_SCOPED = {
    "/healthz": "liveness: 'ok'",
    "/signin": "redeems a sign-in link into one's own session",
    "/signout": "ends one's own session",
    "/": "the operator's tenant list; a tenant admin is sent to their own tenant",
    "/tenants": "an operator creates a tenant (403 for a tenant admin)",
    "/api/openapi.json": "the API's shape: no tenant, no data",
    "/api/v1/session": "one's own session",
    "/api/v1/tenants": "every tenant: operators only (403)",
}


def _samples(client: IdentityClient, t: Tenant) -> dict[str, str]:
    """A value for each path parameter besides {tenant}, real in tenant `t`, so a
    route answers its own tenant with something else than 404. A route with a new
    parameter needs one here."""
    user = client.create_user(t.id, users_pb2.User(user_name=f"someone@{t.name}.example"))
    group = client.create_group(t.id, groups_pb2.Group(display_name="Engineering"))
    client.update_group(t.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(t.id, "Auditor")
    path = common_pb2.AttributePath(attribute="userName")
    mapping = policy_pb2.AttributeMapping(field="badge", source=path)
    client.set_policy(t.id, policy_pb2.TenantPolicy(user_mappings=[mapping]))
    op = history_pb2.Operation(tenant_id=t.id, method="GET", kind=2, status=200, detail="sample")
    return {
        "token_id": client.issue_token(t.id, description="sample").token.id,
        "operation_id": client.record_operation(op).id,
        "idp": "okta",
        "action": "revoke",
        "user_id": user.meta.id,
        "group_id": group.meta.id,
        "role": "Auditor",
        "mapping": "badge",
    }


#: The query a route needs to name what it acts on (`{name}`s from `_samples`).
QUERIES = {
    "/tenants/{tenant}/roles/delete": "name={role}",
    "/tenants/{tenant}/mappings/edit": "type=user&field={mapping}",
    "/tenants/{tenant}/mappings/remove": "type=user&field={mapping}",
}


def _routes() -> list[tuple[str, list[str]]]:
    from falcon.inspect import inspect_routes

    from identity_admin.app import create_app
    from identity_admin.settings import Settings

    app = create_app(Settings(), lambda: None)  # the client opens in the lifespan only
    return [
        (r.path, sorted(m.method for m in r.methods if not m.internal)) for r in inspect_routes(app)
    ]


def _fill(template: str, values: dict[str, str]) -> str:
    query = QUERIES.get(template)
    full = f"{template}?{query}" if query else template
    names = re.findall(r"{([^}]+)}", full)
    missing = [n for n in names if n not in values]
    assert not missing, f"{template}: give {missing} a value in _samples"
    return re.sub(r"{([^}]+)}", lambda m: urllib.parse.quote(values[m.group(1)]), full)


def _ask(
    base: str, method: str, path: str, *, cookie: str = "", bearer: str = "", csrf: str = ""
) -> tuple[int, str]:
    """One request as the page or API expects it (a form with its CSRF token; JSON
    with the header), the body read unless it is a stream."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Cookie": f"{CONSOLE_COOKIE}={cookie}"} if cookie else {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    body = None
    if path.startswith("/api/"):
        headers["X-CSRF-Token"] = csrf
        if method in ("POST", "PUT", "PATCH"):
            body, headers["Content-Type"] = "{}", "application/json"
    elif method == "POST":
        body = urllib.parse.urlencode({"csrf": csrf})
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.getheader("content-type", "").startswith("text/event-stream"):
            return resp.status, ""
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_every_route_of_another_tenant_is_404(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    other = client.create_tenant(f"{tenant.name}-other")
    mine, theirs = _samples(client, tenant), _samples(client, other)
    csrf = admin_of.get(f"/tenants/{tenant.name}/connector").csrf()
    bearer = admin_session(client, tenant.name)
    routes = _routes()
    unreviewed = [p for p, _ in routes if "{tenant}" not in p and p not in NOT_TENANT_SCOPED]
    assert not unreviewed, f"routes without a tenant: list them in NOT_TENANT_SCOPED: {unreviewed}"
    cookie = {"cookie": admin_of.cookie, "csrf": csrf}
    missing = {
        "page": _ask(stack.console_url, "GET", "/tenants/no-such-tenant/connector", **cookie),
        "api": _ask(stack.console_url, "GET", "/api/v1/tenants/no-such-tenant", **cookie),
    }
    assert missing["page"][0] == missing["api"][0] == 404
    tried = 0
    for template, methods in routes:
        if "{tenant}" not in template:
            continue
        kind = "api" if template.startswith("/api/") else "page"
        for method in methods:
            for ref in (other.name, other.id):
                path = _fill(template, {**theirs, "tenant": ref})
                who = [cookie] + ([{"bearer": bearer}] if kind == "api" else [])
                for creds in who:
                    status, body = _ask(stack.console_url, method, path, **creds)
                    assert (status, body) == missing[kind], (method, path, status, body)
                    assert other.id not in body and other.name not in body
                    tried += 1
    # The enumeration found the routes (pages and API) it is meant to try.
    found = dict(routes)
    assert found["/tenants/{tenant}/tokens/{token_id}/{action}"] == ["GET", "POST"]
    assert found["/api/v1/tenants/{tenant}/tokens"] == ["GET", "POST"]
    assert tried == 2 * sum(
        len(m) * (2 if p.startswith("/api/") else 1) for p, m in routes if "{tenant}" in p
    )
    # Nothing of theirs changed.
    assert client.get_tenant(other.id).active
    assert [t.id for t in client.list_tokens(other.id)] == [theirs["token_id"]]
    assert [o.id for o in client.list_operations(other.id).operations] == [theirs["operation_id"]]
    # The same reads of my own tenant are no 404: the 404s above are the boundary's.
    for template, methods in routes:
        if "{tenant}" in template and "GET" in methods:
            path = _fill(template, {**mine, "tenant": tenant.name})
            status, _ = _ask(stack.console_url, "GET", path, **cookie)
            assert status != 404, path
    # And the routes without a tenant show a tenant admin nothing of another's.
    for template, methods in routes:
        if "{tenant}" not in template and "GET" in methods:
            status, body = _ask(stack.console_url, "GET", template, **cookie)
            assert other.id not in body and other.name not in body, template


def test_a_new_sign_in_ends_the_browsers_earlier_session(
    client: IdentityClient, tenant: Tenant, stack: Stack
) -> None:
    v = Visitor(stack.console_url)
    v.sign_in(client, tenant.name)
    earlier = v.cookie
    v.sign_in(client, tenant.name)
    assert v.cookie != earlier
    assert v.get(f"/tenants/{tenant.name}/connector").status == 200
    stale = Visitor(stack.console_url, cookie=earlier)
    assert stale.get(f"/tenants/{tenant.name}/connector").status == 401
