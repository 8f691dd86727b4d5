"""The attribute catalogue: what every attribute of a User and a Group is.

One definition per attribute (RFC 7643 §4 and §7): its type, whether it is
multi-valued, required, case-exact, its mutability, uniqueness and
sub-attributes. The core applies PATCH semantics with it (`patching`), and the
gateway's `/Schemas` and `/ResourceTypes` are rendered from it (served through
the contract). A tenant's own schemas (TenantPolicy.extension_schemas) extend it.

Where an earlier copy of this table disagreed with RFC 7643 §8.7.1/§8.7.2 on
`caseExact` (photos.value, x509Certificates.value, profileUrl, groups.value,
enterprise manager.value), the RFC's schema representation decides: none of
them is case-exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scim_identity_api import urns
from scim_identity_api.v1 import policy_pb2

USER_SCHEMA = urns.CORE_USER
ENTERPRISE_SCHEMA = urns.ENTERPRISE_USER
GROUP_SCHEMA = urns.CORE_GROUP

# -- catalogue name <-> identity.v1 field ---------------------------------------------------

#: Catalogue name -> proto field, for the User's simple string attributes.
USER_SIMPLE = {
    "userName": "user_name",
    "displayName": "display_name",
    "nickName": "nick_name",
    "profileUrl": "profile_url",
    "title": "title",
    "userType": "user_type",
    "preferredLanguage": "preferred_language",
    "locale": "locale",
    "timezone": "timezone",
}
NAME = {
    "formatted": "formatted",
    "familyName": "family_name",
    "givenName": "given_name",
    "middleName": "middle_name",
    "honorificPrefix": "honorific_prefix",
    "honorificSuffix": "honorific_suffix",
}
MULTI = {
    "emails": "emails",
    "phoneNumbers": "phone_numbers",
    "ims": "ims",
    "photos": "photos",
    "entitlements": "entitlements",
    "roles": "roles",
    "x509Certificates": "x509_certificates",
}
MULTI_SUB = {"value": "value", "type": "type", "display": "display", "primary": "primary"}
ADDRESS = {
    "formatted": "formatted",
    "streetAddress": "street_address",
    "locality": "locality",
    "region": "region",
    "postalCode": "postal_code",
    "country": "country",
    "type": "type",
    "primary": "primary",
}
ENTERPRISE_FIELDS = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
}


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
COMMON = (ID, EXTERNAL_ID, META)

# RFC 7643 §4.1
USER = Schema(
    USER_SCHEMA,
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
    ENTERPRISE_SCHEMA,
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
    GROUP_SCHEMA,
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


@dataclass(frozen=True, slots=True)
class ResourceType:
    id: str
    name: str
    endpoint: str
    description: str
    schema: Schema
    extensions: tuple[Schema, ...] = ()

    @property
    def all_schemas(self) -> Iterable[Schema]:
        return (self.schema, *self.extensions)

    def extension(self, urn: str) -> Schema | None:
        """The extension schema `urn` names (any letter case), if this type has it."""
        low = urn.lower()
        return next((e for e in self.extensions if e.id.lower() == low), None)


USER_TYPE = ResourceType("User", "User", "/Users", "User Account", USER, (ENTERPRISE,))
GROUP_TYPE = ResourceType("Group", "Group", "/Groups", "Group", GROUP)
RESOURCE_TYPES: tuple[ResourceType, ...] = (USER_TYPE, GROUP_TYPE)

# -- tenant-defined schemas (TenantPolicy.extension_schemas) ------------------------------

#: Attribute types a tenant may declare (identity.v1.SchemaAttribute.type).
TENANT_ATTRIBUTE_TYPES = ("string", "boolean", "integer", "decimal", "dateTime", "reference")


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """The schemas and resource types one tenant sees: the built-in ones plus the
    tenant's extension schemas."""

    schemas: tuple[Schema, ...]
    resource_types: tuple[ResourceType, ...]

    @property
    def user(self) -> ResourceType:
        return self.resource_types[0]

    @property
    def group(self) -> ResourceType:
        return self.resource_types[1]


BUILTIN_SCHEMAS = SchemaSet(SCHEMAS, RESOURCE_TYPES)


def _tenant_attr(a: Any) -> Attr:
    """An `Attr` from an identity.v1.SchemaAttribute."""
    return Attr(
        a.name,
        a.type if a.type in TENANT_ATTRIBUTE_TYPES else "string",
        multi_valued=a.multi_valued,
        description=a.description,
        required=a.required,
        # A reference compares exactly, as filters on it do (filters.Catalog.extended).
        case_exact=a.case_exact or a.type == "reference",
    )


def _add_attrs(schema: Schema, attrs: Iterable[Attr]) -> Schema:
    names = {a.name.lower() for a in schema.attributes}
    extra = []
    for a in attrs:
        if a.name.lower() not in names:  # policy validation refuses clashes; never shadow one
            names.add(a.name.lower())
            extra.append(a)
    return Schema(schema.id, schema.name, schema.description, (*schema.attributes, *extra))


def schema_set(extension_schemas: Iterable[Any]) -> SchemaSet:
    """The built-in schemas plus a policy's `extension_schemas`.

    A schema equal to the core User URN adds attributes to the User schema itself
    (Panther's `pantherRole`); any other URN is an extension of its resource type.
    Core-namespace additions to Group are not supported and ignored.
    """
    user, group = USER, GROUP
    extensions: dict[str, list[Schema]] = {"User": [], "Group": []}
    for ext in extension_schemas:
        rtype = ext.resource_type
        if rtype not in extensions or not ext.schema.lower().startswith("urn:"):
            continue
        attrs = [_tenant_attr(a) for a in ext.attributes]
        low = ext.schema.lower()
        if low == USER_SCHEMA.lower():
            if rtype == "User":
                user = _add_attrs(user, attrs)
            continue
        if low in (GROUP_SCHEMA.lower(), ENTERPRISE_SCHEMA.lower()):
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


def case_exact(schema_id: str, attribute: str, sub_attribute: str = "") -> bool:
    """The catalogue's `caseExact` of a built-in attribute (filters compile with it)."""
    if attribute.lower() in ("id", "externalid") and not sub_attribute:
        return next(a for a in COMMON if a.name.lower() == attribute.lower()).case_exact
    schema = next(s for s in SCHEMAS if s.id == schema_id)
    attr = schema.attr(attribute)
    if attr is None:
        raise KeyError(f"{schema_id}:{attribute}")
    if not sub_attribute:
        return attr.case_exact
    sub = attr.sub(sub_attribute)
    if sub is None:
        raise KeyError(f"{schema_id}:{attribute}.{sub_attribute}")
    return sub.case_exact


# -- served through the contract (PolicyService.GetSchemas) --------------------------------

_SNAKE = re.compile(r"(?<!^)([A-Z])")
#: Sub-attributes the proto names otherwise, or derives (no field).
_FIELD_OVERRIDES = {
    "groups.value": "groups.id",
    "groups.display": "groups.display_name",
    "groups.type": "",
    "meta.resourceType": "",
    "meta.location": "",
}


def _proto_field(prefix: str, path: str, name: str) -> str:
    if name == "$ref":
        return ""  # derived from the id and the base URL
    key = f"{path}.{name}" if path else name
    if key in _FIELD_OVERRIDES:
        return _FIELD_OVERRIDES[key]
    return prefix + _SNAKE.sub(r"_\1", key).lower()


def _attr_proto(a: Attr, prefix: str, path: str = "") -> policy_pb2.AttributeDefinition:
    field_name = _proto_field(prefix, path, a.name) if prefix != "extensions" else "extensions"
    return policy_pb2.AttributeDefinition(
        name=a.name,
        type=a.type,
        multi_valued=a.multi_valued,
        description=a.description,
        required=a.required,
        case_exact=a.case_exact,
        mutability=a.mutability,
        returned=a.returned,
        uniqueness=a.uniqueness,
        sub_attributes=[
            _attr_proto(s, prefix, f"{path}.{a.name}" if path else a.name) for s in a.sub_attributes
        ],
        canonical_values=a.canonical_values,
        reference_types=a.reference_types,
        proto_field=field_name,
    )


def _schema_proto(s: Schema) -> policy_pb2.SchemaDefinition:
    builtin = {USER_SCHEMA: "", ENTERPRISE_SCHEMA: "enterprise.", GROUP_SCHEMA: ""}
    base = next((b for b in SCHEMAS if b.id == s.id), None)
    attrs = []
    for a in s.attributes:
        own = base is not None and base.attr(a.name) is a
        attrs.append(_attr_proto(a, builtin.get(s.id, "") if own else "extensions"))
    return policy_pb2.SchemaDefinition(
        id=s.id, name=s.name, description=s.description, attributes=attrs
    )


def definitions(sset: SchemaSet) -> policy_pb2.GetSchemasResponse:
    """The catalogue as the contract carries it."""
    common = [_attr_proto(ID, "meta."), _attr_proto(EXTERNAL_ID, ""), _attr_proto(META, "")]
    common[0].proto_field = "meta.id"
    return policy_pb2.GetSchemasResponse(
        schemas=[_schema_proto(s) for s in sset.schemas],
        resource_types=[
            policy_pb2.ResourceTypeDefinition(
                id=t.id,
                name=t.name,
                endpoint=t.endpoint,
                description=t.description,
                schema=t.schema.id,
                schema_extensions=[e.id for e in t.extensions],
            )
            for t in sset.resource_types
        ],
        common_attributes=common,
    )
