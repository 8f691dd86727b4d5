"""The admin console in a real browser: Debian's chromium driven by Playwright
(never a browser Playwright downloads), against the real console, gateway and core
processes, on both databases. An admin signs in by link, copies the SCIM URL,
generates a token that works against the gateway, revokes it (401), deactivates the
connector (403), finds those requests in the History filtered by status and opens
one, reads the Set up your IdP pages, and watches a change arrive on the Live page,
partly by keyboard. Screenshots of each page are saved in
test-artifacts/screenshots/ (BROWSER_SCREENSHOTS overrides the directory)."""

from __future__ import annotations

import http.client
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scim_identity_client import IdentityClient
from scim_identity_client.types import OutcomeFilter, Tenant, User
from scim_identity_client.urls import admin_sign_in_url

from ..support import ROOT
from .conftest import Stack

CHROMIUM = Path(os.environ.get("BROWSER_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
NO_BROWSER = (
    f"browser tests skipped: no chromium at {CHROMIUM} "
    "(.ci/run installs Debian's chromium; or: apt-get install chromium)"
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_BROWSER),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def scim_status(url: str, token: str) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", f"{parts.path}/Users", headers={"Authorization": f"Bearer {token}"})
    status = conn.getresponse().status
    conn.close()
    return status


def wait_recorded(client: IdentityClient, tenant: Tenant, statuses: set[int]) -> dict[int, Any]:
    """The latest history record of each status, once all are recorded (the gateway
    sends its records a moment after its answers)."""
    deadline = time.monotonic() + 15
    while True:
        ops = client.list_operations(tenant.id, outcome=OutcomeFilter.OUTCOME_FILTER_ERROR)
        latest: dict[int, Any] = {}
        for op in ops.operations:
            latest.setdefault(op.status, op)
        if statuses <= set(latest) or time.monotonic() > deadline:
            assert statuses <= set(latest), latest
            return latest
        time.sleep(0.05)


def test_sign_in_copy_generate_use_revoke_deactivate(
    browser: Any,
    stack: Stack,
    client: IdentityClient,
    tenant: Tenant,
    backend: str,
) -> None:
    from playwright.sync_api import expect

    shots = SHOTS / backend
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.console_url)
    page = context.new_page()
    try:
        # Sign in by link: the link becomes a session, the console shows the tenant.
        link = client.create_admin_link(tenant.name, subject="ada@example.com")
        page.goto(admin_sign_in_url(stack.console_url, link.secret))
        page.click("#sign-in")  # the link's page: Continue (a GET uses nothing up)
        page.wait_for_url(f"**/tenants/{tenant.name}/connector")
        assert page.locator("h1").inner_text() == f"Connector · {tenant.name}"
        page.screenshot(path=shots / "1-connector.png", full_page=True)
        cookie = next(c for c in context.cookies() if c["name"] == "identity_admin_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

        # Copy the SCIM base URL with its button.
        page.click("button[data-copy=scim-url]")
        # (expect, not wait_for_function: its polling evals a string, which the
        # console's CSP rightly refuses in the page)
        expect(page.locator(".copied").first).to_have_text("Copied")
        scim_url = page.evaluate("navigator.clipboard.readText()")
        assert scim_url == f"{stack.gateway_url}/scim/v2/{tenant.name}"

        # Generate a token: its secret is shown once, with a copy button.
        page.fill("input[name=description]", "Okta")
        page.click("#generate")
        page.wait_for_selector("#secret")
        secret = page.input_value("#secret")
        page.click("button[data-copy=secret]")
        expect(page.locator(".copied").first).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        page.screenshot(path=shots / "2-secret-shown-once.png", full_page=True)

        # The token works against the real gateway.
        assert scim_status(scim_url, secret) == 200

        # Back on the page: the token is listed by prefix, its secret is nowhere.
        page.click("#done")
        page.wait_for_selector("#tokens")
        (token,) = client.list_tokens(tenant.id)
        row = page.locator(f"tr[data-token='{token.id}']")
        assert token.prefix in row.inner_text() and "Okta" in row.inner_text()
        assert secret not in page.content()
        page.screenshot(path=shots / "3-token-listed.png", full_page=True)

        # Revoke it, by keyboard: focus the link, Enter; the confirm button has focus.
        page.focus(f"a[aria-label='Revoke {token.prefix}']")
        page.keyboard.press("Enter")
        page.wait_for_selector("#confirm")
        page.screenshot(path=shots / "4-confirm-revoke.png", full_page=True)
        assert page.evaluate("document.activeElement.id") == "confirm"
        page.keyboard.press("Enter")
        page.wait_for_selector("#tokens")
        assert scim_status(scim_url, secret) == 401

        # A second token, then deactivate the connector: its requests get 403.
        page.click("#generate")
        page.wait_for_selector("#secret")
        second = page.input_value("#secret")
        page.click("#done")
        assert scim_status(scim_url, second) == 200
        page.click("#deactivate")
        page.wait_for_selector("#confirm")
        page.screenshot(path=shots / "5-confirm-deactivate.png", full_page=True)
        page.click("#confirm")
        page.wait_for_selector("#activate")
        assert "Inactive" in page.inner_text("#connector-state")
        page.screenshot(path=shots / "6-deactivated.png", full_page=True)
        assert scim_status(scim_url, second) == 403
        assert second not in page.content()

        # The History page, filtered by status in its form, shows those requests: the
        # revoked token's 401, then the deactivated connector's 403.
        refused = wait_recorded(client, tenant, {401, 403})
        page.click("nav.tabs >> text=History")
        page.wait_for_selector("#filters")
        page.screenshot(path=shots / "7-history.png", full_page=True)
        for status in (401, 403):
            page.fill("#f-status", str(status))
            page.click("#apply")
            page.wait_for_url(f"**/history?*status={status}*")
            rows = page.locator("#operations tbody tr[data-operation]")
            shown = [rows.nth(i).get_attribute("data-status") for i in range(rows.count())]
            assert shown == [str(status)], shown
            assert rows.first.get_attribute("data-operation") == refused[status].id
            page.screenshot(path=shots / f"8-history-{status}.png", full_page=True)
        # The 403 opens, by keyboard, to its detail and error.
        page.focus("#operations tbody tr[data-operation] a")
        page.keyboard.press("Enter")
        page.wait_for_selector("#op-error")
        assert "403 Forbidden" in page.inner_text("#op-error")
        assert "connector is inactive" in page.inner_text("#op-detail")
        assert refused[403].request_id in page.inner_text("#op-request-id")
        page.screenshot(path=shots / "9-operation-403.png", full_page=True)

        # Set up your IdP: this tenant's URL, and when the IdP's first request came.
        page.click("nav.tabs >> text=Set up your IdP")
        page.wait_for_selector("#test-connection")
        assert "first reached this connector" in page.inner_text("#first-request")
        # The latest request is the deactivated connector's 403, with its reason.
        assert "403 Forbidden" in page.inner_text("#latest-request")
        assert "connector is inactive" in page.inner_text("#latest-detail")
        page.screenshot(path=shots / "10-setup.png", full_page=True)
        page.click("#idp-okta")
        page.wait_for_selector("#okta-url")
        assert page.inner_text("#okta-url") == scim_url
        page.screenshot(path=shots / "11-setup-okta.png", full_page=True)
        page.click("text=All identity providers")
        page.click("#idp-entra")
        page.wait_for_selector("#entra-url")
        assert page.inner_text("#entra-url") == scim_url
        page.screenshot(path=shots / "12-setup-entra.png", full_page=True)

        # Live: a change made now appears on the open page (its script, over SSE).
        page.click("nav.tabs >> text=Live")
        page.wait_for_selector("#events")
        expect(page.locator("#live-status")).to_contain_text("Live:")
        made = client.create_user(tenant.id, User(user_name="live@example.com"))
        first_row = page.locator("#events tbody tr").first
        expect(first_row).to_contain_text("user.created")
        expect(first_row).to_contain_text("live@example.com")
        assert first_row.get_attribute("data-revision") == str(
            client.get_revision(tenant.id).revision
        )
        assert made.meta.id
        page.screenshot(path=shots / "13-live.png", full_page=True)

        # Everything the admin did is in the history, with the admin as its actor.
        ops = client.list_operations(tenant.id).operations
        mine = [o for o in ops if o.actor == "console:ada@example.com"]
        assert [o.resource_type for o in reversed(mine)] == ["Token", "Token", "Token", "Tenant"]
    finally:
        context.close()


def test_directory_search_and_a_users_roles_with_provenance(
    browser: Any, stack: Stack, client: IdentityClient, tenant: Tenant, backend: str
) -> None:
    from playwright.sync_api import expect

    from .test_directory import RULE, populate

    org = populate(client, tenant)
    shots = SHOTS / backend
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    try:
        link = client.create_admin_link(tenant.name, subject="ada@example.com")
        page.goto(admin_sign_in_url(stack.console_url, link.secret))
        page.click("#sign-in")  # the link's page: Continue (a GET uses nothing up)
        page.wait_for_url(f"**/tenants/{tenant.name}/connector")
        # The tab bar's Directory tab: every user, by userName.
        page.click("nav.tabs >> text=Directory")
        page.wait_for_url(f"**/tenants/{tenant.name}/directory")
        expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text("Directory")
        expect(page.locator("#users tbody tr")).to_have_count(3)
        # Search by an email's domain, by keyboard: type, Enter.
        page.fill("#q", "math.example")
        page.press("#q", "Enter")
        expect(page.locator("#users tbody tr")).to_have_count(1)
        expect(page.locator("#count")).to_contain_text("1 of 1 users")
        page.screenshot(path=shots / "7-directory-search.png", full_page=True)
        # The user: Admin from the Okta-Admin group by its rule; Auditor local.
        page.click(f"tr[data-user='{org.ada}'] a")
        page.wait_for_selector("#roles")
        admin_row = page.locator("tr[data-role=Admin]")
        expect(admin_row).to_contain_text("group Okta-Admin, by the rule")
        expect(admin_row).to_contain_text(RULE)
        expect(page.locator("tr[data-role=Auditor]")).to_contain_text("an admin assigned it")
        page.screenshot(path=shots / "8-directory-user-roles.png", full_page=True)
        # The provenance links to the group, whose members link back.
        admin_row.locator("a").click()
        page.wait_for_selector("#members")
        expect(page.locator("#member-count")).to_have_text("1")
        page.screenshot(path=shots / "9-directory-group.png", full_page=True)
        # Groups are searched on their own tab.
        page.goto(f"{stack.console_url}/tenants/{tenant.name}/directory?show=groups")
        page.fill("#q", "engin")
        page.press("#q", "Enter")
        expect(page.locator("#groups tbody tr")).to_have_count(1)
        expect(page.locator("#groups")).to_contain_text("Engineering")
    finally:
        context.close()
