"""Attribute definitions and the discovery documents built from them.

One definition per attribute the gateway implements (RFC 7643 §4 and §7). The
same table drives JSON validation in `mapping`, PATCH, projection and the
`/Schemas` documents, so the advertised schema is exactly what is implemented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .filter import CORE_GROUP, CORE_USER, ENTERPRISE_USER

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


def _multi(name: str, description: str, value_type: str = "string", **kw: Any) -> Attr:
    """A multi-valued attribute with RFC 7643 §2.4's default sub-attributes."""
    return Attr(
        name,
        "complex",
        multi_valued=True,
        description=description,
        sub_attributes=(
            Attr("value", value_type, description=f"The value of the {name} entry.", **kw),
            Attr("display", description="A human-readable name, primarily used for display."),
            Attr("type", description="A label indicating the attribute's function, e.g. 'work'."),
            Attr("primary", "boolean", description="Whether this is the primary value."),
        ),
    )


# Common attributes (RFC 7643 §3.1): not part of any schema document.
ID = Attr("id", mutability="readOnly", returned="always", uniqueness="server", case_exact=True)
EXTERNAL_ID = Attr("externalId", case_exact=True, description="Identifier from the IdP.")
META = Attr(
    "meta",
    "complex",
    mutability="readOnly",
    sub_attributes=(
        Attr("resourceType", mutability="readOnly", case_exact=True),
        Attr("created", "dateTime", mutability="readOnly"),
        Attr("lastModified", "dateTime", mutability="readOnly"),
        Attr("location", "reference", mutability="readOnly", case_exact=True),
        Attr("version", mutability="readOnly", case_exact=True),
    ),
)
SCHEMAS_ATTR = Attr("schemas", "reference", multi_valued=True, returned="always")
COMMON = (ID, EXTERNAL_ID, META)

# RFC 7643 §4.1
USER = Schema(
    CORE_USER,
    "User",
    "User Account",
    (
        Attr(
            "userName",
            required=True,
            uniqueness="server",
            description="Unique identifier for the User, compared case-insensitively.",
        ),
        Attr(
            "name",
            "complex",
            description="The components of the user's real name.",
            sub_attributes=(
                Attr("formatted", description="The full name, formatted for display."),
                Attr("familyName", description="The family name (last name)."),
                Attr("givenName", description="The given name (first name)."),
                Attr("middleName", description="The middle name(s)."),
                Attr("honorificPrefix", description="Honorific prefix, e.g. 'Ms.'."),
                Attr("honorificSuffix", description="Honorific suffix, e.g. 'III'."),
            ),
        ),
        Attr("displayName", description="The name of the User, suitable for display."),
        Attr("nickName", description="The casual way to address the user."),
        Attr(
            "profileUrl",
            "reference",
            reference_types=("external",),
            description="A URI of the User's online profile.",
        ),
        Attr("title", description="The user's title, such as 'Vice President'."),
        Attr("userType", description="The relationship between organization and user."),
        Attr("preferredLanguage", description="Preferred written or spoken language."),
        Attr("locale", description="Default location, e.g. 'en-US'."),
        Attr("timezone", description="Time zone in IANA format, e.g. 'America/Los_Angeles'."),
        Attr("active", "boolean", description="The user's administrative status."),
        _multi("emails", "Email addresses for the user."),
        _multi("phoneNumbers", "Phone numbers for the user."),
        _multi("ims", "Instant messaging addresses for the user."),
        _multi("photos", "URLs of photos of the user.", "reference", reference_types=("external",)),
        Attr(
            "addresses",
            "complex",
            multi_valued=True,
            description="A physical mailing address for this user.",
            sub_attributes=(
                Attr("formatted", description="The full mailing address."),
                Attr("streetAddress", description="The full street address."),
                Attr("locality", description="The city or locality."),
                Attr("region", description="The state or region."),
                Attr("postalCode", description="The zip code or postal code."),
                Attr("country", description="The country name (ISO 3166-1 alpha-2)."),
                Attr("type", description="'work', 'home' or 'other'."),
                Attr("primary", "boolean", description="Whether this is the primary address."),
            ),
        ),
        Attr(
            "groups",
            "complex",
            multi_valued=True,
            mutability="readOnly",
            description="Groups the user belongs to directly; changed through /Groups.",
            sub_attributes=(
                Attr("value", mutability="readOnly", description="The group's id."),
                Attr(
                    "$ref",
                    "reference",
                    mutability="readOnly",
                    reference_types=("Group",),
                    description="The URI of the group.",
                ),
                Attr("display", mutability="readOnly", description="The group's displayName."),
                Attr(
                    "type",
                    mutability="readOnly",
                    canonical_values=("direct",),
                    description="Always 'direct'.",
                ),
            ),
        ),
        _multi("entitlements", "Entitlements of the user."),
        _multi("roles", "Roles of the user, as the IdP sends them."),
        _multi("x509Certificates", "X.509 certificates of the user.", "binary"),
    ),
)

# RFC 7643 §4.3
ENTERPRISE = Schema(
    ENTERPRISE_USER,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attr("employeeNumber", description="Numeric or alphanumeric identifier of the employee."),
        Attr("costCenter", description="Name of a cost center."),
        Attr("organization", description="Name of an organization."),
        Attr("division", description="Name of a division."),
        Attr("department", description="Name of a department."),
        Attr(
            "manager",
            "complex",
            description="The user's manager.",
            sub_attributes=(
                Attr("value", description="The id of the manager's User resource."),
                Attr(
                    "$ref",
                    "reference",
                    reference_types=("User",),
                    description="The URI of the manager's User resource.",
                ),
                Attr(
                    "displayName",
                    mutability="readOnly",
                    description="The manager's displayName.",
                ),
            ),
        ),
    ),
)

# RFC 7643 §4.2
GROUP = Schema(
    CORE_GROUP,
    "Group",
    "Group",
    (
        Attr("displayName", required=True, description="A human-readable name for the Group."),
        Attr(
            "members",
            "complex",
            multi_valued=True,
            description="A list of members of the Group.",
            sub_attributes=(
                Attr(
                    "value",
                    mutability="immutable",
                    case_exact=True,
                    description="The id of the member (a User or a Group).",
                ),
                Attr(
                    "$ref",
                    "reference",
                    mutability="immutable",
                    reference_types=("User", "Group"),
                    description="The URI of the member.",
                ),
                Attr(
                    "type",
                    mutability="immutable",
                    canonical_values=("User", "Group"),
                    description="The type of the member.",
                ),
                Attr("display", mutability="readOnly", description="The member's display name."),
            ),
        ),
    ),
)

SCHEMAS: tuple[Schema, ...] = (USER, ENTERPRISE, GROUP)


def schema_by_id(schema_id: str) -> Schema | None:
    low = schema_id.lower()
    for s in SCHEMAS:
        if s.id.lower() == low:
            return s
    return None


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


USER_TYPE = ResourceType("User", "User", "/Users", "User Account", USER, (ENTERPRISE,))
GROUP_TYPE = ResourceType("Group", "Group", "/Groups", "Group", GROUP)
RESOURCE_TYPES: tuple[ResourceType, ...] = (USER_TYPE, GROUP_TYPE)


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


# -- tenant-defined schemas (TenantPolicy.extension_schemas) ------------------------------

#: Attribute types a tenant may declare (identity.v1.SchemaAttribute.type).
TENANT_ATTRIBUTE_TYPES = ("string", "boolean", "integer", "decimal", "dateTime", "reference")


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """The schemas and resource types one tenant sees: the built-in ones plus the
    tenant's extension schemas. Built per request from the tenant's policy."""

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
        return self.resource_types[0]


BUILTIN_SCHEMAS = SchemaSet(SCHEMAS, RESOURCE_TYPES)


def _tenant_attr(a: Any) -> Attr:
    """An `Attr` from an identity.v1.SchemaAttribute."""
    return Attr(
        a.name,
        a.type if a.type in TENANT_ATTRIBUTE_TYPES else "string",
        multi_valued=a.multi_valued,
        description=a.description,
        required=a.required,
        case_exact=a.case_exact,
    )


def _add_attrs(schema: Schema, attrs: Iterable[Attr]) -> Schema:
    names = {a.name.lower() for a in schema.attributes}
    extra = []
    for a in attrs:
        if a.name.lower() not in names:  # the core refuses clashes; never shadow one
            names.add(a.name.lower())
            extra.append(a)
    return Schema(schema.id, schema.name, schema.description, (*schema.attributes, *extra))


def schema_set(extension_schemas: Iterable[Any]) -> SchemaSet:
    """The built-in schemas plus a policy's `extension_schemas`.

    A schema equal to the core User URN adds attributes to the User schema itself
    (Panther's `pantherRole`); any other URN is an extension of its resource type.
    Core-namespace additions to Group are not supported by the gateway and ignored.
    """
    user, group = USER, GROUP
    extensions: dict[str, list[Schema]] = {"User": [], "Group": []}
    for ext in extension_schemas:
        rtype = ext.resource_type
        if rtype not in extensions or not ext.schema.lower().startswith("urn:"):
            continue
        attrs = [_tenant_attr(a) for a in ext.attributes]
        low = ext.schema.lower()
        if low == CORE_USER.lower():
            if rtype == "User":
                user = _add_attrs(user, attrs)
            continue
        if low in (CORE_GROUP.lower(), ENTERPRISE_USER.lower()):
            continue
        same = [i for i, s in enumerate(extensions[rtype]) if s.id.lower() == low]
        if same:
            extensions[rtype][same[0]] = _add_attrs(extensions[rtype][same[0]], attrs)
            continue
        name = ext.name or ext.schema.rpartition(":")[2]
        extensions[rtype].append(Schema(ext.schema, name, ext.description, tuple(attrs)))
    if user is USER and not extensions["User"] and not extensions["Group"]:
        return BUILTIN_SCHEMAS
    user_type = ResourceType(
        "User", "User", "/Users", "User Account", user, (ENTERPRISE, *extensions["User"])
    )
    group_type = ResourceType(
        "Group", "Group", "/Groups", "Group", group, tuple(extensions["Group"])
    )
    schemas: list[Schema] = [user, ENTERPRISE, group]
    for s in (*extensions["User"], *extensions["Group"]):
        known = next((i for i, k in enumerate(schemas) if k.id.lower() == s.id.lower()), None)
        if known is None:
            schemas.append(s)
        else:  # one URN extending both resource types: one document
            schemas[known] = _add_attrs(schemas[known], s.attributes)
    return SchemaSet(tuple(schemas), (user_type, group_type))
