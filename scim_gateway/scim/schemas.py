"""The attribute catalogue as the gateway uses it, and the discovery documents.

The core owns the catalogue (identity_service/schema.py: every attribute's type,
mutability, caseExact, uniqueness, sub-attributes) and serves it through the
contract (PolicyService.GetSchemas); `tenant.Catalogue` fetches it, and the same
definitions drive JSON validation in `mapping`, projection and the `/Schemas` and
`/ResourceTypes` documents (RFC 7643 §6-§7), so what is advertised is what the
core applies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scim_identity_api.v1 import policy_pb2

SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute definition (RFC 7643 §7)."""

    name: str
    type: str = "string"  # string boolean decimal integer dateTime reference complex binary
    multi_valued: bool = False
    description: str = ""
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readOnly readWrite immutable writeOnly
    returned: str = "default"  # always never default request
    uniqueness: str = "none"  # none server global
    sub_attributes: tuple[Attr, ...] = ()
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    #: Where identity.v1.User/Group holds it (the core's catalogue: "user_name",
    #: "enterprise.cost_center", "emails.value"); "extensions" for a tenant's own
    #: attributes, "" for derived ones ("$ref").
    proto_field: str = ""

    def sub(self, name: str) -> Attr | None:
        low = name.lower()
        for a in self.sub_attributes:
            if a.name.lower() == low:
                return a
        return None

    @property
    def read_only(self) -> bool:
        return self.mutability == "readOnly"

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
        }
        if self.type in ("string", "reference", "binary"):
            doc["caseExact"] = self.case_exact
        if self.canonical_values:
            doc["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        doc["mutability"] = self.mutability
        doc["returned"] = self.returned
        if self.type != "complex":
            doc["uniqueness"] = self.uniqueness
        if self.sub_attributes:
            doc["subAttributes"] = [a.document() for a in self.sub_attributes]
        return doc


@dataclass(frozen=True, slots=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attr, ...] = field(default=())

    def attr(self, name: str) -> Attr | None:
        low = name.lower()
        for a in self.attributes:
            if a.name.lower() == low:
                return a
        return None

    def document(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.document() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.id}"},
        }


@dataclass(frozen=True, slots=True)
class ResourceType:
    id: str
    name: str
    endpoint: str
    description: str
    schema: Schema
    extensions: tuple[Schema, ...] = ()

    def document(self, base_url: str) -> dict[str, Any]:
        # RFC 7643 §6
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.id,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": [{"schema": e.id, "required": False} for e in self.extensions],
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{base_url}/ResourceTypes/{self.id}",
            },
        }

    @property
    def all_schemas(self) -> Iterable[Schema]:
        return (self.schema, *self.extensions)


def service_provider_config(
    base_url: str,
    *,
    max_operations: int,
    max_payload_bytes: int,
    max_results: int,
    default_page_size: int,
) -> dict[str, Any]:
    """RFC 7643 §5, plus `pagination` from RFC 9865 §3."""
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": max_operations,
            "maxPayloadSize": max_payload_bytes,
        },
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "pagination": {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": default_page_size,
            "maxPageSize": max_results,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A tenant API token: 'Authorization: Bearer <token>'.",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }


# -- the catalogue, as the core serves it (PolicyService.GetSchemas) -------------------------


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """The schemas and resource types one tenant sees: the core's built-in catalogue,
    plus the tenant's own schemas when fetched for it."""

    schemas: tuple[Schema, ...]
    resource_types: tuple[ResourceType, ...]

    def schema(self, schema_id: str) -> Schema | None:
        low = schema_id.lower()
        return next((s for s in self.schemas if s.id.lower() == low), None)

    def resource_type(self, type_id: str) -> ResourceType | None:
        low = type_id.lower()
        return next((t for t in self.resource_types if t.id.lower() == low), None)

    @property
    def user(self) -> ResourceType:
        found = self.resource_type("User")
        assert found is not None, "the core's catalogue has a User resource type"
        return found

    @property
    def group(self) -> ResourceType:
        found = self.resource_type("Group")
        assert found is not None, "the core's catalogue has a Group resource type"
        return found


def _attr(a: policy_pb2.AttributeDefinition) -> Attr:
    return Attr(
        a.name,
        a.type,
        multi_valued=a.multi_valued,
        description=a.description,
        required=a.required,
        case_exact=a.case_exact,
        mutability=a.mutability,
        returned=a.returned,
        uniqueness=a.uniqueness,
        sub_attributes=tuple(_attr(s) for s in a.sub_attributes),
        canonical_values=tuple(a.canonical_values),
        reference_types=tuple(a.reference_types),
        proto_field=a.proto_field,
    )


def schema_set_of(resp: policy_pb2.GetSchemasResponse) -> SchemaSet:
    """The gateway's view of the core's catalogue (what /Schemas renders)."""
    schemas = tuple(
        Schema(s.id, s.name, s.description, tuple(_attr(a) for a in s.attributes))
        for s in resp.schemas
    )
    by_id = {s.id: s for s in schemas}
    types = tuple(
        ResourceType(
            t.id,
            t.name,
            t.endpoint,
            t.description,
            by_id[t.schema],
            tuple(by_id[e] for e in t.schema_extensions if e in by_id),
        )
        for t in resp.resource_types
        if t.schema in by_id
    )
    return SchemaSet(schemas, types)
