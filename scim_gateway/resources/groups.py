"""`/Groups` (RFC 7644 §3.3-§3.6) over the core's GroupService.

Membership changes never read or rewrite the whole member list: a PATCH is one
`UpdateGroup` carrying the attribute changes and the members to add, remove or
clear (see `patch.plan_group_patch`).

A response that shows a group's members streams them when the group has more
than one page of them (`GroupService.member_page_size`): `GetGroup` asks for the
members up to a page (`member_limit`), so a smaller group comes whole in that one
call; a larger one comes without them, then its members page by page (`ListMembers`),
each page encoded and written out before the next is read, so the gateway holds
one page at a time however large the group (the body is sent chunked, without a
Content-Length). The first pages are read before the response starts, so the
errors a request commonly meets (404, 401, 403) are still proper SCIM errors; a
core failure on a later page can only cut the response short (the connection is
closed without the final chunk, so the client sees an incomplete body, never a
shorter member list). The JSON is byte for byte what the unstreamed response
gives, members in the same order (the order they were added).

Consistency: a streamed group is read in several transactions. Its attributes
and `meta.version` (the ETag) are those of the `GetGroup` read; each member page
is read afterwards on its own. A membership change committed while the pages are
read may or may not show in the list although the version shown predates it (a
member removed meanwhile may still be listed, one added may already be; one
removed and added back can be listed twice). Every such change raises the
version, so a client that needs the exact list at a version compares the ETag of
a later read (a weak validator, RFC 7644 §3.14). A group GET that fits in one
page is one read: its members and version from one transaction.

Only the resource endpoints stream (`http.STREAMABLE`); /Bulk reads the
documents and always gets them whole.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from scim_identity_api.urns import CORE_GROUP
from scim_identity_api.v1 import groups_pb2
from scim_identity_client import IdentityError

from ..core import Core
from ..errors import core_errors
from ..http import STREAMABLE, Call, Result, expected_version, matches_version
from ..scim.mapping import (
    MEMBERS_SLOT,
    etag,
    group_to_proto,
    group_to_scim,
    members_json_pieces,
    normalize,
    split_at_members,
)
from ..scim.patch import patch_operations
from ..scim.projection import Projection
from ..scim.schemas import ResourceType
from ..settings import Settings
from ..tenant import Catalogue
from .common import Page, SearchQuery

log = logging.getLogger("scim_gateway")


def _members_whole(projection: Projection) -> bool:
    """Whether the projection shows members whole (no `members.x` path), so that
    each member's JSON is the same whatever the others are."""
    core = CORE_GROUP.lower()
    return not any(
        p.sub_attribute
        and p.attribute.lower() == "members"
        and (not p.schema or p.schema.lower() == core)
        for p in (*projection.attributes, *projection.excluded)
    )


async def _framed(head: bytes, pieces: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    """`pieces` with `head` joined to the first and `tail` to the last (fewer writes)."""
    prev = head + await anext(pieces, b"")
    async for piece in pieces:
        yield prev
        prev = piece
    yield prev + tail


async def _pages(
    first: list[groups_pb2.Member], rest: AsyncIterator[groups_pb2.Member], size: int
) -> AsyncIterator[list[groups_pb2.Member]]:
    """`first`, then the members of `rest`, in lists of about `size`."""
    page = first
    async for m in rest:
        if len(page) >= size:
            yield page
            page = []
        page.append(m)
    if page:
        yield page


def _noted(result: Result, group: groups_pb2.Group) -> Result:
    """`result` with the member ids the core skipped in its history note."""
    if group.skipped_members:
        shown = ", ".join(group.skipped_members[:20])
        more = " ..." if len(group.skipped_members) > 20 else ""
        result.note = (
            f"skipped {len(group.skipped_members)} member id(s) that are not users or "
            f"groups of this tenant: {shown}{more}"
        )
    return result


class GroupService:
    def __init__(self, core: Core, settings: Settings, catalogue: Catalogue) -> None:
        self._core = core
        self._settings = settings
        self._catalogue = catalogue
        #: Members per ListMembers page when members are streamed; 0: never stream
        #: (members come inline with GetGroup, the response is built whole).
        self.member_page_size = settings.member_page_size

    @property
    def rtype(self) -> ResourceType:
        """The Group resource type of the core's catalogue."""
        return self._catalogue.builtin().group

    # -- helpers -------------------------------------------------------------------------------

    async def _result(
        self,
        status: int,
        group: groups_pb2.Group,
        call: Call,
        projection: Projection,
        *,
        members_loaded: bool,
        members_on_request_only: bool = False,
    ) -> Result:
        """The response; members are shown when they were loaded and wanted."""
        wants = (
            projection.explicitly_requests(self.rtype, "members")
            if members_on_request_only
            else projection.returns(self.rtype, "members")
        )
        if wants and not members_loaded and group.member_count > 0:
            if self._can_stream(call, projection):
                return await self._streamed(status, group, call, projection)
            with core_errors():
                group = await self._core.client.get_group(
                    call.tenant_id, group.meta.id, include_members=True, ctx=call.ctx
                )
        return self._whole(status, group, call, projection, wants=wants)

    def _whole(
        self,
        status: int,
        group: groups_pb2.Group,
        call: Call,
        projection: Projection,
        *,
        wants: bool,
    ) -> Result:
        """The response built in one piece (members as `group` has them)."""
        full = group_to_scim(
            group, call.base_url, with_members=wants, encoded_members=projection.is_identity
        )
        return Result(
            status,
            projection.apply(full, self.rtype),
            self._headers(status, group, full),
            resource_id=group.meta.id,
        )

    @staticmethod
    def _headers(status: int, group: groups_pb2.Group, full: dict[str, Any]) -> dict[str, str]:
        headers = {"ETag": etag(group.meta.version)}
        if status == 201:
            headers["Location"] = full["meta"]["location"]
        return headers

    def _can_stream(self, call: Call, projection: Projection) -> bool:
        """Members may be streamed: the endpoint allows it, and the projection shows
        them whole."""
        return (
            self.member_page_size > 0
            and bool(call.memo.get(STREAMABLE))
            and projection.returns(self.rtype, "members")
            and _members_whole(projection)
        )

    async def _streamed(
        self, status: int, group: groups_pb2.Group, call: Call, projection: Projection
    ) -> Result:
        """The response with `group`'s members read page by page from ListMembers.

        The first page (and the next page's first member, which tells whether there
        are more) is read here, before anything is sent: a group that fits in a
        page is answered whole; for a larger one the rest is read while the body
        is sent."""
        page = self.member_page_size
        # Each page within the request timeout (a large group takes longer as a
        # whole than any one request may).
        each = replace(call.ctx, deadline=None, timeout=self._settings.request_timeout_seconds)
        members = self._core.client.list_members(
            call.tenant_id, group.meta.id, page_size=page, ctx=each
        )
        first: list[groups_pb2.Member] = []
        with core_errors():
            async for m in members:
                first.append(m)
                if len(first) > page:
                    break
        del group.members[:]
        if len(first) <= page:
            group.members.extend(first)
            return self._whole(status, group, call, projection, wants=True)
        full = group_to_scim(group, call.base_url, with_members=True)
        full["members"] = MEMBERS_SLOT
        shown = projection.apply(full, self.rtype)
        headers = self._headers(status, group, full)
        parts = split_at_members(shown)
        if parts is None:  # pragma: no cover - _can_stream: the projection shows members
            return Result(status, shown, headers, resource_id=group.meta.id)
        head, tail = parts
        pieces = members_json_pieces(_pages(first, members, page), call.base_url)
        # An async generator: the server stops pulling it when the response ends
        # (or the client goes away), and ListMembers is called no further.
        stream = self._sent(_framed(head, pieces, tail), call, group.meta.id)
        return Result(status, None, headers, resource_id=group.meta.id, stream=stream)

    @staticmethod
    async def _sent(chunks: AsyncIterator[bytes], call: Call, gid: str) -> AsyncIterator[bytes]:
        """`chunks`, logging a core failure that cuts the streamed body short."""
        try:
            async for chunk in chunks:
                yield chunk
        except IdentityError as err:
            # The status is sent: the server closes the connection without the
            # last chunk, so the client sees an incomplete response.
            log.error(
                "group %s: reading its members failed after the response started "
                "(request %s); the response is cut short: %s",
                gid,
                call.request_id,
                err,
            )
            raise

    async def _expected(self, call: Call, rid: str, if_match: set[str] | None) -> int:
        async def current() -> int:
            with core_errors():
                group = await self._core.client.get_group(
                    call.tenant_id, rid, include_members=False, ctx=call.ctx
                )
            return group.meta.version

        return await expected_version(if_match, current)

    # -- operations ----------------------------------------------------------------------------

    async def create(self, call: Call, body: dict[str, Any], projection: Projection) -> Result:
        group = group_to_proto(normalize(body, self.rtype))
        with core_errors():
            created = await self._core.client.create_group(call.tenant_id, group, ctx=call.ctx)
        result = await self._result(
            201, created, call, projection, members_loaded=not group.members
        )
        return _noted(result, created)

    async def get(
        self, call: Call, rid: str, projection: Projection, if_none_match: set[str] | None
    ) -> Result:
        # Members are loaded only when the response shows them (Entra ID asks
        # with excludedAttributes=members).
        # A group of up to a page of members comes whole in this one call; a larger
        # one without them, and its members are streamed from ListMembers. With
        # If-None-Match, members are read only once the version did not match.
        include = projection.returns(self.rtype, "members") and if_none_match is None
        streamable = include and self._can_stream(call, projection)
        with core_errors():
            group = await self._core.client.get_group(
                call.tenant_id,
                rid,
                include_members=include,
                member_limit=self.member_page_size if streamable else 0,
                ctx=call.ctx,
            )
        if if_none_match is not None and matches_version(if_none_match, group.meta.version):
            return Result(304, None, {"ETag": etag(group.meta.version)}, resource_id=rid)
        if streamable and len(group.members) < group.member_count:
            return await self._streamed(200, group, call, projection)
        return await self._result(200, group, call, projection, members_loaded=include)

    async def replace(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        # RFC 7644 §3.5.1: the member list given replaces the stored one.
        group = group_to_proto(normalize(body, self.rtype))
        group.meta.id = rid
        expected = await self._expected(call, rid, if_match)
        with core_errors():
            updated = await self._core.client.replace_group(
                call.tenant_id, group, expected_version=expected, ctx=call.ctx
            )
        return _noted(
            await self._result(200, updated, call, projection, members_loaded=False), updated
        )

    async def patch(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        # RFC 7644 §3.5.2: one core call applies every operation under the group's
        # lock; member operations cost O(members named), the list is never read.
        ops = patch_operations(body)
        expected = await self._expected(call, rid, if_match)
        wants = projection.returns(self.rtype, "members")
        with core_errors():
            updated = await self._core.client.patch_group(
                call.tenant_id,
                rid,
                ops,
                expected_version=expected,
                include_members=wants,
                member_limit=self.member_page_size,
                ctx=call.ctx,
            )
        if wants and len(updated.members) < updated.member_count:
            if projection.explicitly_requests(self.rtype, "members") and self._can_stream(
                call, projection
            ):
                # Asked for: streamed.
                return _noted(await self._streamed(200, updated, call, projection), updated)
            # RFC 7644 §3.5.2 allows 204 instead of the entire resource: a group of
            # more members than one page answers so (Okta and Entra ID accept both),
            # so a membership PATCH never reads a large member list.
            return _noted(
                Result(204, None, {"ETag": etag(updated.meta.version)}, resource_id=rid), updated
            )
        # RFC 7644 §3.5.2: 200 with the entire resource (subject to `attributes` /
        # `excludedAttributes`), its members as the PATCH's transaction left them.
        return _noted(self._whole(200, updated, call, projection, wants=wants), updated)

    async def delete(self, call: Call, rid: str, if_match: set[str] | None) -> Result:
        expected = await self._expected(call, rid, if_match)
        with core_errors():
            await self._core.client.delete_group(
                call.tenant_id, rid, expected_version=expected, ctx=call.ctx
            )
        return Result(204, resource_id=rid)

    async def query(self, call: Call, q: SearchQuery) -> Page:
        include = q.projection.returns(self.rtype, "members")
        with core_errors():
            resp = await self._core.client.list_groups(
                call.tenant_id,
                filter=q.filter_proto(self.rtype),
                sort=q.sort_proto(self.rtype),
                start_index=None if q.cursor is not None else q.start_index,
                count=q.count,
                cursor=q.cursor,
                include_members=include,
                ctx=call.ctx,
            )
        docs = [
            q.projection.apply(group_to_scim(g, call.base_url, with_members=include), self.rtype)
            for g in resp.groups
        ]
        return Page(docs, resp.total_results, resp.start_index or q.start_index, resp.next_cursor)
