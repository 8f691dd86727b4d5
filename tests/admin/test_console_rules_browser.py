"""Roles and rules, and Mappings, in a real browser (Debian's chromium, as
test_console_browser.py drives it) against the real processes on both databases: a
rule change's preview names the users it would change, and saving applies exactly
that (checked through the core); a mapping added by keyboard. Screenshots are saved
beside the Connector flow's."""

from __future__ import annotations

from typing import Any

import pytest

from scim_identity_client import CallContext, IdentityClient
from scim_identity_client.types import Group, Member, RoleSource, Tenant, User
from scim_identity_client.urls import admin_sign_in_url

from .conftest import Stack
from .test_console_browser import CHROMIUM, NO_BROWSER, SHOTS, browser

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_BROWSER),
]
__all__ = ["browser"]  # the module's browser fixture, shared

SCIM = CallContext(actor_kind="token", actor_id="tok")


def _roles(client: IdentityClient, tenant: Tenant, user_id: str) -> list[str]:
    u = client.get_user(tenant.id, user_id)
    return sorted(r.role for r in u.role_assignments if r.source == RoleSource.ROLE_SOURCE_SCIM)


def test_a_rule_changes_preview_names_its_users_and_saving_applies_exactly_that(
    browser: Any, stack: Stack, client: IdentityClient, tenant: Tenant, backend: str
) -> None:
    from playwright.sync_api import expect

    shots = SHOTS / backend
    shots.mkdir(parents=True, exist_ok=True)
    for role in ("Admin", "Viewer"):
        client.create_role(tenant.id, role)
    ids = {
        name: client.create_user(tenant.id, User(user_name=name), ctx=SCIM).meta.id
        for name in ("ada@example.com", "bob@example.com", "cy@example.com")
    }
    client.create_group(
        tenant.id,
        Group(
            display_name="BigPanda_Acme_BPRole_Admin",
            members=[Member(value=ids["ada@example.com"])],
        ),
        ctx=SCIM,
    )
    client.create_group(
        tenant.id,
        Group(
            display_name="BigPanda_Acme_BPRole_Viewer",
            members=[Member(value=ids["bob@example.com"])],
        ),
        ctx=SCIM,
    )
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    try:
        link = client.create_admin_link(tenant.name, subject="ada@example.com")
        page.goto(admin_sign_in_url(stack.console_url, link.secret))
        page.click("#sign-in")  # the link's page: Continue (a GET uses nothing up)
        page.wait_for_url(f"**/tenants/{tenant.name}/connector")
        page.click("nav.tabs >> text=Roles and rules")
        page.wait_for_url(f"**/tenants/{tenant.name}/roles")
        assert page.locator("nav.tabs a[aria-current=page]").inner_text() == "Roles and rules"

        # A role, created by keyboard.
        page.focus("#role-form input[name=name]")
        page.keyboard.type("Auditor")
        page.keyboard.press("Enter")
        page.wait_for_selector("tr[data-role='Auditor']")
        page.screenshot(path=shots / "7-roles-and-rules.png", full_page=True)

        # A group-name rule, with a default role for everyone else.
        page.fill("input[name='rule-0-pattern']", "BigPanda_{org}_BPRole_{role}")
        page.fill("input[name='rule-0-org']", "Acme")
        page.select_option("select[name=default_role]", "Auditor")
        page.click("#preview-rules")
        page.wait_for_selector("#preview")
        page.screenshot(path=shots / "8-rules-preview.png", full_page=True)
        rows = page.locator("#effects tbody tr")
        shown = {
            rows.nth(i).locator("td").nth(0).inner_text(): (
                rows.nth(i).locator("td").nth(1).inner_text(),
                rows.nth(i).locator("td").nth(2).inner_text(),
            )
            for i in range(rows.count())
        }
        assert shown == {
            "ada@example.com": ("Admin", "—"),
            "bob@example.com": ("Viewer", "—"),
            "cy@example.com": ("Auditor", "—"),
        }
        assert page.inner_text("#effect-count").startswith("3 users change")
        # Nothing is saved by a preview.
        assert all(_roles(client, tenant, uid) == [] for uid in ids.values())

        page.click("#save")
        expect(page.locator("#notice")).to_have_text("Rules saved.")
        page.screenshot(path=shots / "9-rules-saved.png", full_page=True)
        # Exactly what the preview showed, read back from the core.
        assert {name: _roles(client, tenant, uid) for name, uid in ids.items()} == {
            name: [gained] for name, (gained, _) in shown.items()
        }

        # The rule's org changes: the preview says who loses what; Discard keeps it all.
        page.fill("input[name='rule-0-org']", "Globex")
        page.click("#preview-rules")
        page.wait_for_selector("#preview")
        assert page.locator("tr[data-user='ada@example.com'] td.loses").inner_text() == "Admin"
        assert page.locator("tr[data-user='ada@example.com'] td.gains").inner_text() == "Auditor"
        page.click("#preview >> text=Discard")
        page.wait_for_selector("#rules-form")
        assert page.input_value("input[name='rule-0-org']") == "Acme"
        assert _roles(client, tenant, ids["ada@example.com"]) == ["Admin"]

        # Mappings: one added with the keyboard, in Big ACL's terms.
        page.click("nav.tabs >> text=Mappings")
        page.wait_for_selector("#add-form")
        page.focus("#add-form input[name=field]")
        page.keyboard.type("employeeId")
        page.select_option(
            "#add-form select[name=schema]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        )
        page.fill("#add-form input[name=attribute]", "employeeNumber")
        page.focus("#add-form input[name=attribute]")
        page.keyboard.press("Enter")
        page.wait_for_selector("#user-mappings tr[data-field='employeeId']")
        page.screenshot(path=shots / "10-mappings.png", full_page=True)
        (mapping,) = client.get_policy(tenant.id).user_mappings
        assert (mapping.field, mapping.source.attribute) == ("employeeId", "employeeNumber")
    finally:
        context.close()
