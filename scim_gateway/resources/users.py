"""`/Users` (RFC 7644 §3.3-§3.6) over the core's UserService."""

from __future__ import annotations

from typing import Any

from scim_identity_api.v1 import users_pb2

from ..core import Core
from ..errors import core_errors
from ..http import Call, Result, expected_version, matches_version
from ..scim.mapping import etag, mentions_custom, normalize, user_to_proto, user_to_scim
from ..scim.patch import patch_operations
from ..scim.projection import Projection
from ..scim.schemas import ResourceType
from ..settings import Settings
from ..tenant import Catalogue
from .common import Page, SearchQuery


class UserService:
    def __init__(self, core: Core, settings: Settings, catalogue: Catalogue) -> None:
        self._core = core
        self._settings = settings
        self._catalogue = catalogue

    @property
    def rtype(self) -> ResourceType:
        """The User resource type of the core's catalogue."""
        return self._catalogue.builtin().user

    # -- helpers -------------------------------------------------------------------------------

    async def _rtype(self, call: Call, custom: bool) -> ResourceType:
        """The User type with the tenant's own attributes when the request names any
        attribute outside the built-in schemas (else no policy is fetched)."""
        return (await self._catalogue.for_tenant(call)).user if custom else self.rtype

    def _result(
        self, status: int, user: users_pb2.User, call: Call, projection: Projection
    ) -> Result:
        full = user_to_scim(user, call.base_url, self.rtype)
        headers = {"ETag": etag(user.meta.version)}
        if status == 201:
            headers["Location"] = full["meta"]["location"]
        body = projection.apply(full, self.rtype)
        return Result(status, body, headers, resource_id=user.meta.id)

    async def _expected(self, call: Call, rid: str, if_match: set[str] | None) -> int:
        async def current() -> int:
            with core_errors():
                user = await self._core.client.get_user(call.tenant_id, rid, ctx=call.ctx)
            return user.meta.version

        return await expected_version(if_match, current)

    # -- operations ----------------------------------------------------------------------------

    async def create(self, call: Call, body: dict[str, Any], projection: Projection) -> Result:
        # RFC 7644 §3.3
        rtype = await self._rtype(call, mentions_custom(body, self.rtype))
        user = user_to_proto(normalize(body, rtype), rtype)
        with core_errors():
            created = await self._core.client.create_user(call.tenant_id, user, ctx=call.ctx)
        return self._result(201, created, call, projection)

    async def get(
        self, call: Call, rid: str, projection: Projection, if_none_match: set[str] | None
    ) -> Result:
        # RFC 7644 §3.4.1; deactivated users are found like any other.
        with core_errors():
            user = await self._core.client.get_user(call.tenant_id, rid, ctx=call.ctx)
        if if_none_match is not None and matches_version(if_none_match, user.meta.version):
            # RFC 7644 §3.14 / RFC 7232 §4.1
            return Result(304, None, {"ETag": etag(user.meta.version)}, resource_id=rid)
        return self._result(200, user, call, projection)

    async def replace(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        # RFC 7644 §3.5.1: replace, not merge; read-only attributes are ignored.
        rtype = await self._rtype(call, mentions_custom(body, self.rtype))
        user = user_to_proto(normalize(body, rtype), rtype)
        user.meta.id = rid
        expected = await self._expected(call, rid, if_match)
        with core_errors():
            updated = await self._core.client.replace_user(
                call.tenant_id, user, expected_version=expected, ctx=call.ctx
            )
        return self._result(200, updated, call, projection)

    async def patch(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        # RFC 7644 §3.5.2: all operations apply, or none does; the core applies
        # them in one transaction under the user's lock (no read-modify-write here).
        ops = patch_operations(body)
        expected = await self._expected(call, rid, if_match)
        with core_errors():
            updated = await self._core.client.patch_user(
                call.tenant_id, rid, ops, expected_version=expected, ctx=call.ctx
            )
        return self._result(200, updated, call, projection)

    async def delete(self, call: Call, rid: str, if_match: set[str] | None) -> Result:
        # RFC 7644 §3.6
        expected = await self._expected(call, rid, if_match)
        with core_errors():
            await self._core.client.delete_user(
                call.tenant_id, rid, expected_version=expected, ctx=call.ctx
            )
        return Result(204, resource_id=rid)

    async def query(self, call: Call, q: SearchQuery) -> Page:
        with core_errors():
            resp = await self._core.client.list_users(
                call.tenant_id,
                filter=q.filter_proto(self.rtype),
                sort=q.sort_proto(self.rtype),
                start_index=None if q.cursor is not None else q.start_index,
                count=q.count,
                cursor=q.cursor,
                ctx=call.ctx,
            )
        docs = [
            q.projection.apply(user_to_scim(u, call.base_url, self.rtype), self.rtype)
            for u in resp.users
        ]
        return Page(docs, resp.total_results, resp.start_index or q.start_index, resp.next_cursor)
