"""What the Users and Groups endpoints share: query parsing, list responses and the
HTTP resource classes that delegate to a resource service (`UserService`,
`GroupService`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from falcon.asgi import Request, Response

from scim_identity_api.v1 import common_pb2

from ..errors import INVALID_FILTER, ScimError, invalid_value
from ..history import KIND_CREATE, KIND_DELETE, KIND_READ, KIND_SEARCH, KIND_UPDATE, OpInfo
from ..http import (
    STREAMABLE,
    Call,
    Result,
    etag_versions,
    json_object,
    read_json,
    send,
)
from ..scim.filter import AttrPath, Node, parse_attr_path, parse_filter, to_proto
from ..scim.projection import Projection
from ..scim.schemas import LIST_RESPONSE, SEARCH_REQUEST, ResourceType
from ..settings import Settings

log = logging.getLogger("scim_gateway")

# -- list queries (RFC 7644 §3.4.2) ------------------------------------------------------------


_NO_PROJECTION = Projection()
MAX_START_INDEX = 2**31 - 1  # Page.start_index is an int32


@dataclass(frozen=True, slots=True)
class SearchQuery:
    filter: Node | None = None
    sort_by: AttrPath | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    #: Not None: cursor paging (RFC 9865); "" asks for the first page.
    cursor: str | None = None
    projection: Projection = _NO_PROJECTION

    @classmethod
    def build(cls, raw: Mapping[str, Any], settings: Settings) -> SearchQuery:
        """From query parameters or a SearchRequest body (keys matched case-insensitively)."""
        params = {k.lower(): v for k, v in raw.items()}
        text = params.get("filter")
        node = None
        if text is not None:
            if not isinstance(text, str):
                raise ScimError(400, "'filter' must be a string", INVALID_FILTER)
            node = parse_filter(text)
        sort_by = None
        sort_text = params.get("sortby")
        if sort_text:
            if not isinstance(sort_text, str):
                raise invalid_value("'sortBy' must be an attribute path")
            sort_by = parse_attr_path(sort_text)
        order = params.get("sortorder")
        descending = False
        if order:
            if not isinstance(order, str) or order.lower() not in ("ascending", "descending"):
                raise invalid_value("'sortOrder' must be 'ascending' or 'descending'")
            descending = order.lower() == "descending"
        # RFC 7644 §3.4.2.4: startIndex < 1 means 1; a negative count means 0.
        # A startIndex past the core's int32 range is past every result anyway.
        start = min(max(1, _int_param(params.get("startindex"), "startIndex", 1)), MAX_START_INDEX)
        count = _int_param(params.get("count"), "count", settings.default_page_size)
        count = min(max(0, count), settings.max_page_size)
        cursor = params.get("cursor")
        if cursor is not None:
            if not isinstance(cursor, str):
                raise invalid_value("'cursor' must be a string")
            if params.get("startindex") is not None:
                raise invalid_value("use either 'cursor' or 'startIndex', not both (RFC 9865)")
        projection = Projection.parse(
            _attr_list(params.get("attributes")), _attr_list(params.get("excludedattributes"))
        )
        return cls(node, sort_by, descending, start, count, cursor, projection)

    def filter_proto(self, rtype: ResourceType) -> common_pb2.Filter | None:
        return to_proto(self.filter, rtype.schema.id) if self.filter is not None else None

    def sort_proto(self, rtype: ResourceType) -> common_pb2.Sort | None:
        if self.sort_by is None:
            return None
        path = self.sort_by.to_proto()
        if path.schema.lower() == rtype.schema.id.lower():
            path.schema = ""
        return common_pb2.Sort(path=path, descending=self.descending)

    def with_page(self, start_index: int, count: int) -> SearchQuery:
        return replace(self, start_index=start_index, count=count)


def _int_param(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise invalid_value(f"'{name}' must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise invalid_value(f"'{name}' must be an integer, not {value!r}")


def _attr_list(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise invalid_value("'attributes' and 'excludedAttributes' must be lists of attribute paths")


@dataclass(slots=True)
class Page:
    resources: list[dict[str, Any]]
    total: int
    start_index: int
    next_cursor: str = ""


def list_response(page: Page, *, cursor_mode: bool) -> dict[str, Any]:
    """RFC 7644 §3.4.2 ListResponse; RFC 9865 §3 adds nextCursor."""
    doc: dict[str, Any] = {"schemas": [LIST_RESPONSE], "totalResults": page.total}
    doc["itemsPerPage"] = len(page.resources)
    if cursor_mode:
        if page.next_cursor:
            doc["nextCursor"] = page.next_cursor
    else:
        doc["startIndex"] = page.start_index
    doc["Resources"] = page.resources
    return doc


# -- the service interface the HTTP resources and /Bulk use ------------------------------------


class ResourceService(Protocol):
    @property
    def rtype(self) -> ResourceType: ...

    async def create(self, call: Call, body: dict[str, Any], projection: Projection) -> Result: ...

    async def get(
        self, call: Call, rid: str, projection: Projection, if_none_match: set[str] | None
    ) -> Result: ...

    async def replace(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result: ...

    async def patch(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result: ...

    async def delete(self, call: Call, rid: str, if_match: set[str] | None) -> Result: ...

    async def query(self, call: Call, q: SearchQuery) -> Page: ...


def projection_of(req: Request) -> Projection:
    params = {k.lower(): v for k, v in req.params.items()}
    return Projection.parse(
        _attr_list(params.get("attributes")), _attr_list(params.get("excludedattributes"))
    )


def call_of(req: Request) -> Call:
    call: Call = req.context.call
    return call


def _mark(req: Request, kind: int, rtype: ResourceType) -> OpInfo:
    info = OpInfo(kind, rtype.name)
    req.context.op = info
    call_of(req).memo[STREAMABLE] = True  # these endpoints send the service's answer
    return info


class Collection:
    """`/Users`, `/Groups`: list (GET) and create (POST)."""

    def __init__(self, service: ResourceService, settings: Settings) -> None:
        self._service = service
        self._settings = settings

    async def on_get(self, req: Request, resp: Response) -> None:
        _mark(req, KIND_SEARCH, self._service.rtype)
        q = SearchQuery.build(req.params, self._settings)
        page = await self._service.query(call_of(req), q)
        send(resp, Result(200, list_response(page, cursor_mode=q.cursor is not None)))

    async def on_post(self, req: Request, resp: Response) -> None:
        info = _mark(req, KIND_CREATE, self._service.rtype)
        body = json_object(await read_json(req, self._settings.max_payload_bytes))
        result = await self._service.create(call_of(req), body, projection_of(req))
        info.resource_id, info.note = result.resource_id, result.note
        send(resp, result)


class Item:
    """`/Users/{id}`, `/Groups/{id}`."""

    def __init__(self, service: ResourceService, settings: Settings) -> None:
        self._service = service
        self._settings = settings

    async def on_get(self, req: Request, resp: Response, resource_id: str) -> None:
        info = _mark(req, KIND_READ, self._service.rtype)
        info.resource_id = resource_id
        inm = etag_versions(req.get_header("If-None-Match"))
        send(resp, await self._service.get(call_of(req), resource_id, projection_of(req), inm))

    async def on_put(self, req: Request, resp: Response, resource_id: str) -> None:
        info = _mark(req, KIND_UPDATE, self._service.rtype)
        info.resource_id = resource_id
        body = json_object(await read_json(req, self._settings.max_payload_bytes))
        if_match = etag_versions(req.get_header("If-Match"))
        result = await self._service.replace(
            call_of(req), resource_id, body, projection_of(req), if_match
        )
        info.note = result.note
        send(resp, result)

    async def on_patch(self, req: Request, resp: Response, resource_id: str) -> None:
        info = _mark(req, KIND_UPDATE, self._service.rtype)
        info.resource_id = resource_id
        body = json_object(await read_json(req, self._settings.max_payload_bytes))
        if_match = etag_versions(req.get_header("If-Match"))
        result = await self._service.patch(
            call_of(req), resource_id, body, projection_of(req), if_match
        )
        info.note = result.note
        send(resp, result)

    async def on_delete(self, req: Request, resp: Response, resource_id: str) -> None:
        info = _mark(req, KIND_DELETE, self._service.rtype)
        info.resource_id = resource_id
        if_match = etag_versions(req.get_header("If-Match"))
        send(resp, await self._service.delete(call_of(req), resource_id, if_match))


async def _search_body(req: Request, settings: Settings) -> dict[str, Any]:
    body = json_object(await read_json(req, settings.max_payload_bytes))
    schemas = body.get("schemas")
    if schemas is not None and (
        not isinstance(schemas, list) or SEARCH_REQUEST not in [str(s) for s in schemas]
    ):
        raise ScimError(400, f"'schemas' must contain {SEARCH_REQUEST!r}", "invalidSyntax")
    return body


class Search:
    """`POST /Users/.search`, `POST /Groups/.search` (RFC 7644 §3.4.3)."""

    def __init__(self, service: ResourceService, settings: Settings) -> None:
        self._service = service
        self._settings = settings

    async def on_post(self, req: Request, resp: Response) -> None:
        _mark(req, KIND_SEARCH, self._service.rtype)
        q = SearchQuery.build(await _search_body(req, self._settings), self._settings)
        page = await self._service.query(call_of(req), q)
        send(resp, Result(200, list_response(page, cursor_mode=q.cursor is not None)))


class RootSearch:
    """`POST /.search`: every resource type, Users first (RFC 7644 §3.4.3)."""

    def __init__(self, services: tuple[ResourceService, ...], settings: Settings) -> None:
        self._services = services
        self._settings = settings

    async def on_post(self, req: Request, resp: Response) -> None:
        req.context.op = OpInfo(KIND_SEARCH, "")
        q = SearchQuery.build(await _search_body(req, self._settings), self._settings)
        if q.cursor is not None:
            raise invalid_value(
                "cursor paging is not available across resource types; "
                "search /Users/.search or /Groups/.search instead"
            )
        call = call_of(req)
        resources: list[dict[str, Any]] = []
        total = 0
        start = q.start_index  # 1-based position in the concatenation
        remaining = q.count
        errors: list[ScimError] = []
        for service in self._services:
            # Each type is asked for the part of the window that falls in it.
            local_start = max(1, start - total)
            try:
                page = await service.query(call, q.with_page(local_start, remaining))
            except ScimError as err:
                # An attribute one type lacks matches nothing of that type.
                if err.scim_type != INVALID_FILTER:
                    raise
                errors.append(err)
                continue
            taken = page.resources if start <= total + page.total else []
            resources += taken
            remaining -= len(taken)
            total += page.total
        if len(errors) == len(self._services):
            raise errors[0]
        page = Page(resources, total, q.start_index)
        send(resp, Result(200, list_response(page, cursor_mode=False)))
