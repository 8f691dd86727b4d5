"""Discovery endpoints (RFC 7644 §4): what this service provider implements."""

from __future__ import annotations

from typing import Any

from falcon.asgi import Request, Response

from ..errors import ScimError, not_found
from ..http import Result, send
from ..scim.schemas import LIST_RESPONSE, service_provider_config
from ..settings import Settings
from ..tenant import Catalogue
from .common import call_of


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


def _refuse_filter(req: Request) -> None:
    # RFC 7644 §4: a filter on a discovery endpoint SHOULD be answered with 403
    # so a client never assumes it was applied.
    if req.get_param("filter") is not None:
        raise ScimError(403, "Discovery endpoints do not support filtering (RFC 7644 §4).")


class ServiceProviderConfigResource:
    """`/ServiceProviderConfig` (RFC 7643 §5)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def on_get(self, req: Request, resp: Response) -> None:
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
    """`/ResourceTypes` and `/ResourceTypes/{id}` (RFC 7643 §6), with the calling
    tenant's extension schemas in `schemaExtensions`."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    async def on_get(self, req: Request, resp: Response) -> None:
        _refuse_filter(req)
        call = call_of(req)
        types = (await self._catalogue.for_tenant(call)).resource_types
        send(resp, Result(200, _list([t.document(call.base_url) for t in types])))

    async def on_get_item(self, req: Request, resp: Response, type_id: str) -> None:
        call = call_of(req)
        found = (await self._catalogue.for_tenant(call)).resource_type(type_id)
        if found is None:
            raise not_found(f"No resource type {type_id!r}; see /ResourceTypes.")
        send(resp, Result(200, found.document(call.base_url)))


class SchemasResource:
    """`/Schemas` and `/Schemas/{id}` (RFC 7643 §7), rendered from the core's
    catalogue: the built-in schemas and the calling tenant's own (attributes it adds
    to the core User schema included)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    async def on_get(self, req: Request, resp: Response) -> None:
        _refuse_filter(req)
        call = call_of(req)
        schemas = (await self._catalogue.for_tenant(call)).schemas
        send(resp, Result(200, _list([s.document(call.base_url) for s in schemas])))

    async def on_get_item(self, req: Request, resp: Response, schema_id: str) -> None:
        call = call_of(req)
        found = (await self._catalogue.for_tenant(call)).schema(schema_id)
        if found is None:
            raise not_found(f"No schema {schema_id!r}; see /Schemas.")
        send(resp, Result(200, found.document(call.base_url)))
