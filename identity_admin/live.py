"""The Live page's change events: the tenant's Watch (through the client's async
watch) as server-sent events, and the latest few events for the page itself.

Each event goes out as `event: change`, `id: <revision>`, its JSON in `data`, so a
browser's EventSource that reconnects sends `Last-Event-ID` and the stream resumes
after that revision (Watch's from_revision): no gap, no repeat. A keep-alive comment
goes out when nothing happened for `keepalive` seconds: Falcon notices a client that
went only when it sends, so that is also how soon a stream whose browser closed ends
(and its Watch with it). At each keep-alive the session is checked again: a sign-out
or an expired session ends the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any

from falcon.asgi import SSEvent

from scim_identity_api.v1 import changes_pb2
from scim_identity_client import AsyncIdentityClient, IdentityError, OutOfRange, event_name

from .console import whole_number

log = logging.getLogger("identity_admin")

#: How many of the latest events the page shows when it is rendered.
RECENT = 20
#: Revisions are int64.
MAX_REVISION = 2**63 - 1


class BadRevision(ValueError):
    """A Last-Event-ID or `since` that names no revision of the tenant."""


def revision_param(text: str | None, current: int) -> int | None:
    """A resume point (Last-Event-ID or `since`): a revision from 0 to the tenant's
    current one; None when absent."""
    if text is None or not text.strip():
        return None
    value = whole_number(text.strip(), most=MAX_REVISION)
    if value is None:
        raise BadRevision("A revision is a whole number.")
    if value > current:
        raise BadRevision(f"This tenant is at revision {current}; there is no revision {value}.")
    return value


def _summary(ev: changes_pb2.ChangeEvent) -> str:
    """A few words naming what changed (a user's userName, a group's name, ...)."""
    which = ev.WhichOneof("resource")
    if which == "user":
        return ev.user.user_name
    if which == "group":
        text = ev.group.display_name
        if ev.membership.members:
            n = len(ev.membership.members)
            text += f" ({n} member{'s' if n != 1 else ''})"
        return text
    if which == "assignment":
        return f"{ev.assignment.role} → user {ev.assignment.user_id}"
    if which == "role":
        return ev.role.name
    if which == "tenant":
        return f"{ev.tenant.name} ({'active' if ev.tenant.active else 'inactive'})"
    if which == "token":
        return f"{ev.token.prefix}…"
    return ""


def event_view(ev: changes_pb2.ChangeEvent) -> dict[str, Any]:
    """An event as the page and the stream show it (JSON-ready)."""
    return {
        "revision": ev.revision,
        "type": event_name(ev.type),
        "resource_type": ev.resource_type,
        "resource_id": ev.resource_id,
        "summary": _summary(ev),
        "time": ev.time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "actor": f"{ev.actor.kind}:{ev.actor.id}" if ev.actor.id else ev.actor.kind,
        "request_id": ev.request_id,
        "changed": list(ev.changed_attributes),
    }


async def recent(core: AsyncIdentityClient, tenant_id: str) -> tuple[int, list[dict[str, Any]]]:
    """(the tenant's revision, its latest RECENT events, newest first)."""
    rev = await core.get_revision(tenant_id)
    since = max(rev.revision - RECENT, rev.oldest_revision - 1, 0)
    events: list[dict[str, Any]] = []
    if since >= rev.revision:
        return rev.revision, events
    watch = core.watch(tenant_id, since=since, heartbeat_seconds=1, give_up_after=5)
    try:
        async with asyncio.timeout(10):
            async for ev in watch:
                events.append(event_view(ev))
                if ev.revision >= rev.revision:
                    break
    except (TimeoutError, IdentityError) as err:
        # Compacted meanwhile, or the core went: the page says what it has.
        log.warning("live page: latest events of %s not read: %s", tenant_id, err)
    finally:
        await watch.aclose()
    return rev.revision, events[::-1]


async def stream(
    core: AsyncIdentityClient,
    tenant_id: str,
    since: int,
    *,
    keepalive: float,
    signed_in: Callable[[], Awaitable[bool]],
) -> AsyncIterator[SSEvent]:
    """The tenant's events after `since`, as server-sent events, until the client
    goes (Falcon stops iterating; the Watch is closed here) or the session ends."""
    yield SSEvent(retry=3000, comment="live")
    loop = asyncio.get_running_loop()
    checked = loop.time()

    async def still_signed_in() -> bool:
        nonlocal checked
        checked = loop.time()
        return await signed_in()

    while True:
        watch = core.watch(tenant_id, since=since)
        following: asyncio.Task[changes_pb2.ChangeEvent] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(anext(watch))
                # Waited on, never cancelled while in flight: a cancelled read would
                # end the Watch call itself.
                done, _ = await asyncio.wait({following}, timeout=keepalive)
                # The session is asked at least every `keepalive` seconds, busy or idle:
                # a tenant whose changes never pause must not keep a signed-out stream.
                due = loop.time() - checked >= keepalive
                if due and not await still_signed_in():
                    yield SSEvent(event="signed-out", json={"revision": since})
                    return
                if not done:
                    yield SSEvent(comment="keep-alive")
                    continue
                ev, following = following.result(), None
                since = ev.revision
                yield SSEvent(event="change", event_id=str(ev.revision), json=event_view(ev))
        except OutOfRange:
            # The events after `since` were compacted away: say so, and go on from now.
            since = (await core.get_revision(tenant_id)).revision
            yield SSEvent(event="reset", event_id=str(since), json={"revision": since})
        except (StopAsyncIteration, IdentityError) as err:
            log.warning("live stream of %s ended: %s", tenant_id, err)
            yield SSEvent(event="end", json={"revision": since})
            return
        finally:
            if following is not None:
                following.cancel()
            await watch.aclose()
