"""`/Groups` (RFC 7644 §3.3-§3.6) over the core's GroupService.

Membership changes never read or rewrite the whole member list: a PATCH is one
`UpdateGroup` carrying the attribute changes and the members to add, remove or
clear (see `patch.plan_group_patch`).
"""

from __future__ import annotations

from typing import Any

from identity.v1 import groups_pb2
from identity_client import IdentityClient, IdentityError, VersionMismatch

from ..errors import ScimError, core_errors, from_identity_error
from ..filter import CORE_GROUP
from ..http import Call, Result, matches_version, version_of
from ..mapping import (
    custom_extensions,
    etag,
    group_to_proto,
    group_to_scim,
    normalize,
    struct_from,
)
from ..patch import parse_operations, plan_group_patch
from ..projection import Projection
from ..schemas import GROUP_TYPE
from ..settings import Settings
from .common import Page, SearchQuery
from .users import PATCH_ATTEMPTS, precondition_failed


class GroupService:
    rtype = GROUP_TYPE

    def __init__(self, client: IdentityClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    # -- helpers -------------------------------------------------------------------------------

    def _result(
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
            projection.explicitly_requests(GROUP_TYPE, "members")
            if members_on_request_only
            else projection.returns(GROUP_TYPE, "members")
        )
        if wants and not members_loaded and group.member_count > 0:
            with core_errors():
                group = self._client.get_group(
                    call.tenant_id, group.meta.id, include_members=True, ctx=call.ctx
                )
        full = group_to_scim(
            group, call.base_url, with_members=wants, encoded_members=projection.is_identity
        )
        headers = {"ETag": etag(group.meta.version)}
        if status == 201:
            headers["Location"] = full["meta"]["location"]
        return Result(
            status, projection.apply(full, GROUP_TYPE), headers, resource_id=group.meta.id
        )

    def _expected(self, call: Call, rid: str, if_match: set[str] | None) -> int:
        if if_match is None or "*" in if_match:
            return 0
        version = version_of(if_match)
        if version is not None:
            return version
        with core_errors():
            current = self._client.get_group(
                call.tenant_id, rid, include_members=False, ctx=call.ctx
            ).meta.version
        if matches_version(if_match, current):
            return current
        raise precondition_failed()

    # -- operations ----------------------------------------------------------------------------

    def create(self, call: Call, body: dict[str, Any], projection: Projection) -> Result:
        group = group_to_proto(normalize(body, GROUP_TYPE))
        with core_errors():
            created = self._client.create_group(call.tenant_id, group, ctx=call.ctx)
        return self._result(201, created, call, projection, members_loaded=not group.members)

    def get(
        self, call: Call, rid: str, projection: Projection, if_none_match: set[str] | None
    ) -> Result:
        # Members are loaded only when the response shows them (Entra ID asks
        # with excludedAttributes=members).
        include = projection.returns(GROUP_TYPE, "members")
        with core_errors():
            group = self._client.get_group(
                call.tenant_id, rid, include_members=include, ctx=call.ctx
            )
        if if_none_match is not None and matches_version(if_none_match, group.meta.version):
            return Result(304, None, {"ETag": etag(group.meta.version)}, resource_id=rid)
        return self._result(200, group, call, projection, members_loaded=include)

    def replace(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        # RFC 7644 §3.5.1: the member list given replaces the stored one.
        group = group_to_proto(normalize(body, GROUP_TYPE))
        group.meta.id = rid
        expected = self._expected(call, rid, if_match)
        with core_errors():
            updated = self._client.replace_group(
                call.tenant_id, group, expected_version=expected, ctx=call.ctx
            )
        return self._result(200, updated, call, projection, members_loaded=False)

    def patch(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        ops = parse_operations(body)
        for _ in range(PATCH_ATTEMPTS):
            with core_errors():
                group = self._client.get_group(
                    call.tenant_id, rid, include_members=False, ctx=call.ctx
                )
            if if_match is not None and not matches_version(if_match, group.meta.version):
                raise precondition_failed()
            before = normalize(group_to_scim(group, call.base_url, with_members=False), GROUP_TYPE)
            plan = plan_group_patch(GROUP_TYPE, before, ops)
            after = plan.doc
            kwargs: dict[str, Any] = {}
            if after.get("displayName") != before.get("displayName"):
                # An absent displayName reaches the core as "", which it refuses.
                kwargs["display_name"] = after.get("displayName") or ""
            if after.get("externalId") != before.get("externalId"):
                kwargs["external_id"] = after.get("externalId") or ""
            ext_before = custom_extensions(before, CORE_GROUP, ())
            ext_after = custom_extensions(after, CORE_GROUP, ())
            if ext_after != ext_before:
                kwargs["extensions"] = struct_from(ext_after)
            if not kwargs and not plan.touches_members:
                return self._result(
                    200, group, call, projection, members_loaded=False, members_on_request_only=True
                )
            # Attribute changes were computed from the version read: guard them.
            # Membership alone commutes with concurrent writers.
            expected = group.meta.version if kwargs or if_match is not None else 0
            try:
                updated = self._client.update_group(
                    call.tenant_id,
                    rid,
                    clear_members=plan.clear_members,
                    add_members=list(plan.add_members.values()),
                    remove_members=sorted(plan.remove_members),
                    expected_version=expected,
                    ctx=call.ctx,
                    **kwargs,
                )
            except VersionMismatch:
                if if_match is not None:
                    raise precondition_failed() from None
                continue
            except IdentityError as err:
                raise from_identity_error(err) from None
            # RFC 7644 §3.5.2: 200 with the resource. The member list is shown
            # only when asked for by `attributes`, so a membership PATCH stays
            # O(change) for groups of any size.
            return self._result(
                200, updated, call, projection, members_loaded=False, members_on_request_only=True
            )
        raise ScimError(409, "The group was modified concurrently too many times; retry.")

    def delete(self, call: Call, rid: str, if_match: set[str] | None) -> Result:
        expected = self._expected(call, rid, if_match)
        with core_errors():
            self._client.delete_group(call.tenant_id, rid, expected_version=expected, ctx=call.ctx)
        return Result(204, resource_id=rid)

    def query(self, call: Call, q: SearchQuery) -> Page:
        include = q.projection.returns(GROUP_TYPE, "members")
        with core_errors():
            resp = self._client.list_groups(
                call.tenant_id,
                filter=q.filter_proto(GROUP_TYPE),
                sort=q.sort_proto(GROUP_TYPE),
                start_index=None if q.cursor is not None else q.start_index,
                count=q.count,
                cursor=q.cursor,
                include_members=include,
                ctx=call.ctx,
            )
        docs = [
            q.projection.apply(group_to_scim(g, call.base_url, with_members=include), GROUP_TYPE)
            for g in resp.groups
        ]
        return Page(docs, resp.total_results, resp.start_index or q.start_index, resp.next_cursor)
