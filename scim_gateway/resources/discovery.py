"""Discovery endpoints (RFC 7644 §4): what this service provider implements."""

from __future__ import annotations

from typing import Any

import falcon

from ..errors import ScimError, not_found
from ..http import Result, send
from ..schemas import LIST_RESPONSE, RESOURCE_TYPES, SCHEMAS, service_provider_config
from ..settings import Settings
from .common import call_of


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


def _refuse_filter(req: falcon.Request) -> None:
    # RFC 7644 §4: a filter on a discovery endpoint SHOULD be answered with 403
    # so a client never assumes it was applied.
    if req.get_param("filter") is not None:
        raise ScimError(403, "Discovery endpoints do not support filtering (RFC 7644 §4).")


class ServiceProviderConfigResource:
    """`/ServiceProviderConfig` (RFC 7643 §5)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        s = self._settings
        doc = service_provider_config(
            call_of(req).base_url,
            max_operations=s.max_bulk_operations,
            max_payload_bytes=s.max_payload_bytes,
            max_results=s.max_page_size,
            default_page_size=s.default_page_size,
        )
        send(resp, Result(200, doc))


class ResourceTypesResource:
    """`/ResourceTypes` and `/ResourceTypes/{id}` (RFC 7643 §6)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _refuse_filter(req)
        base = call_of(req).base_url
        send(resp, Result(200, _list([t.document(base) for t in RESOURCE_TYPES])))

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, type_id: str) -> None:
        for t in RESOURCE_TYPES:
            if t.id.lower() == type_id.lower():
                send(resp, Result(200, t.document(call_of(req).base_url)))
                return
        raise not_found(f"No resource type {type_id!r}; see /ResourceTypes.")


class SchemasResource:
    """`/Schemas` and `/Schemas/{id}` (RFC 7643 §7)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _refuse_filter(req)
        base = call_of(req).base_url
        send(resp, Result(200, _list([s.document(base) for s in SCHEMAS])))

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, schema_id: str) -> None:
        for s in SCHEMAS:
            if s.id.lower() == schema_id.lower():
                send(resp, Result(200, s.document(call_of(req).base_url)))
                return
        raise not_found(f"No schema {schema_id!r}; see /Schemas.")
