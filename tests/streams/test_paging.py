"""Change streams across pages of the event log: a service with a page size of 3
(IDENTITY_WATCH_PAGE_SIZE) replays and drains more than one page at a time, on
SQLite and PostgreSQL. With the default 500 no tenant in the tests crosses a page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scim_identity_client import IdentityClient
from scim_identity_client.types import Group, Tenant

from .conftest import Collector, new_user, wait_until

PAGE = 3


def test_replay_crosses_pages_in_order(
    service_factory: Callable[..., tuple[Any, str]], tenant: Tenant
) -> None:
    _, target = service_factory(watch_page_size=PAGE)
    with IdentityClient(target) as c:
        for i in range(10):
            c.create_user(tenant.id, new_user(i))
        head = c.get_revision(tenant.id).revision
        assert head > 3 * PAGE
        for since in (0, 4, PAGE):  # from the start, mid-page, a page boundary
            w = c.watch(tenant.id, since=since)
            got = [next(w).revision for _ in range(head - since)]
            w.close()
            assert got == list(range(since + 1, head + 1))
        # A filter that matches nothing for pages on end, then the last event.
        c.create_group(tenant.id, Group(display_name="late"))
        w = c.watch(tenant.id, since=0, resource_types=["Group"])
        first = next(w)
        w.close()
        assert (first.revision, first.resource_type) == (head + 1, "Group")


def test_feed_drains_a_burst_across_pages(
    service_factory: Callable[..., tuple[Any, str]], tenant: Tenant
) -> None:
    service, target = service_factory(watch_page_size=PAGE)
    with IdentityClient(target) as c:
        for i in range(8):
            c.create_user(tenant.id, new_user(i))
        head = c.get_revision(tenant.id).revision
        col = Collector(c.watch(tenant.id, since=head))
        # Caught up: the subscriber is attached to the tenant's feed, not replaying.
        wait_until(
            lambda: bool(
                (feed := service.streams._feeds.get(tenant.id)) is not None and feed.watchers
            ),
            10,
            "the subscriber to join the feed",
        )
        # One transaction, one wake-up of the feed, many events: the drain reads
        # page after page until a short one.
        c.reset_connector(tenant.id, purge=True)
        final = c.get_revision(tenant.id).revision
        assert final - head > 2 * PAGE
        col.wait_revision(final)
        col.close()
    assert col.error is None
    assert col.revisions == list(range(head + 1, final + 1))
    deleted = [e for e in col.events if e.resource_type == "User"]
    assert len(deleted) == 8
