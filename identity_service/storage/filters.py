"""Compiles the contract's filter tree (identity.v1.Filter) to SQLAlchemy Core.

Attribute paths resolve through a catalog per resource type. Indexed
attributes compare on columns (userName, externalId, displayName, emails.value,
members.value are index lookups on both databases); other scalar attributes
read the JSON document; multi-valued attributes become `pk IN (subquery)` over
their rows, which both SQLite and PostgreSQL answer from an index.

Every compiled comparison yields TRUE or FALSE, never NULL, so `not` behaves
as a person expects for absent attributes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import QueryableAttribute

from scim_identity_api.v1 import common_pb2, policy_pb2

from ..errors import InvalidFilter
from ..schema import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA, case_exact
from . import names
from .models import GroupRow, MemberRow, UserRow, UserValueRow

#: Multi-valued attributes whose values may be longer than an index key (MAX_KEY).
LONG_VALUES = frozenset({"photos", "x509Certificates"})

Op = common_pb2.CompareOp
AttrType = Literal["string", "boolean", "dateTime", "number"]
MAX_FILTER_NODES = 200
MAX_FILTER_DEPTH = 32


_MEMBER_TYPES = {"user": 1, "group": 2}


@dataclass(frozen=True)
class Scalar:
    """A single-valued attribute stored in a column or the JSON document."""

    name: str
    type: AttrType = "string"
    case_exact: bool = False
    #: The column (or JSON path into `doc`) holding the value.
    expr: Callable[[], ColumnElement[Any]] | None = None
    #: True when expr is a lower-cased shadow column (compare with value.lower(), or
    #: with `fold(value)` when the column holds another mapping).
    lowered: bool = False
    fold: Callable[[str], str] | None = None
    #: For enum-coded columns: the accepted names (lower-case) and their codes.
    codes: Mapping[str, int] | None = None


@dataclass(frozen=True)
class MultiValued:
    """A multi-valued attribute; `sub` maps sub-attribute names to Scalars over
    the element table, `rows` gives the subquery (selecting owner keys) to filter."""

    name: str
    sub: Mapping[str, Scalar]
    #: (condition on the element rows, tenant pk) -> condition on the owner row.
    owner_in: Callable[[ColumnElement[bool], int], ColumnElement[bool]]
    default_sub: str = "value"


@dataclass(frozen=True)
class Complex:
    name: str
    sub: Mapping[str, Scalar]


Attr = Scalar | MultiValued | Complex


@dataclass(frozen=True)
class Catalog:
    resource: str
    core_schema: str
    #: schema URN -> attribute name (lower-case) -> definition
    schemas: Mapping[str, Mapping[str, Attr]] = field(default_factory=dict)
    #: attribute (lower-case) -> definition when the schema URN is omitted
    default: Mapping[str, Attr] = field(default_factory=dict)

    def extended(
        self, extensions: Mapping[str, Mapping[str, policy_pb2.SchemaAttribute]]
    ) -> Catalog:
        """This catalog plus a tenant's extension attributes (single-valued ones are
        filterable: they are read from the JSON document)."""
        if not extensions or self.resource != "User":
            return self
        schemas = {k: dict(v) for k, v in self.schemas.items()}
        default = dict(self.default)
        for urn, attrs in extensions.items():
            entries: dict[str, Attr] = {
                name: _extension_scalar(urn, a) for name, a in attrs.items() if not a.multi_valued
            }
            key = next((k for k in schemas if k.lower() == urn.lower()), urn)
            schemas.setdefault(key, {}).update(entries)
            if urn.lower() == self.core_schema.lower():
                default.update(entries)
        return Catalog(self.resource, self.core_schema, schemas, default)

    def resolve(self, path: common_pb2.AttributePath) -> tuple[Attr, Scalar | None]:
        """The attribute and, when a sub-attribute is named (or implied), its definition."""
        schema = path.schema.strip()
        name = path.attribute.strip().lower()
        attrs: Mapping[str, Attr] | None
        if not schema:
            attrs = self.default
        else:
            attrs = next((v for k, v in self.schemas.items() if k.lower() == schema.lower()), None)
            if attrs is None:
                raise InvalidFilter(
                    f"unknown schema {schema!r} for {self.resource} filters", field=schema
                )
        attr = attrs.get(name)
        if attr is None:
            raise InvalidFilter(
                f"unknown attribute {_shown(path)!r} for {self.resource}", field=_shown(path)
            )
        sub_name = path.sub_attribute.strip().lower()
        if isinstance(attr, Scalar):
            if sub_name:
                raise InvalidFilter(
                    f"attribute {attr.name!r} has no sub-attribute {path.sub_attribute!r}",
                    field=_shown(path),
                )
            return attr, attr
        if not sub_name:
            if isinstance(attr, MultiValued):
                return attr, None
            example = next(iter(attr.sub.values())).name
            raise InvalidFilter(
                f"{attr.name!r} is complex: name a sub-attribute (e.g. {attr.name}.{example})",
                field=_shown(path),
            )
        sub = attr.sub.get(sub_name)
        if sub is None:
            raise InvalidFilter(
                f"attribute {attr.name!r} has no sub-attribute {path.sub_attribute!r}",
                field=_shown(path),
            )
        return attr, sub


def _shown(path: common_pb2.AttributePath) -> str:
    s = path.attribute + (f".{path.sub_attribute}" if path.sub_attribute else "")
    return f"{path.schema}:{s}" if path.schema else s


def _json(*keys: str) -> Callable[[], ColumnElement[Any]]:
    def expr() -> ColumnElement[Any]:
        # (the ignore below) SQLAlchemy's JSON element types are untyped
        return UserRow.doc[keys].as_string()  # type: ignore[no-any-return]

    return expr


def _extension_scalar(urn: str, attr: policy_pb2.SchemaAttribute) -> Scalar:
    kind: AttrType = {"boolean": "boolean", "integer": "number", "decimal": "number"}.get(
        attr.type, "string"
    )  # type: ignore[assignment]  # dict.get widens the Literal values to str

    def expr() -> ColumnElement[Any]:
        value = UserRow.doc[("extensions", urn, attr.name)]
        if kind == "boolean":
            # (the ignore below) SQLAlchemy's JSON element types are untyped
            return value.as_boolean()  # type: ignore[no-any-return]
        if kind == "number":
            # (the ignore below) SQLAlchemy's JSON element types are untyped
            return value.as_float()  # type: ignore[no-any-return]
        # (the ignore below) SQLAlchemy's JSON element types are untyped
        return value.as_string()  # type: ignore[no-any-return]

    return Scalar(attr.name, kind, attr.case_exact or attr.type == "reference", expr)


def _col(c: Any) -> Callable[[], ColumnElement[Any]]:
    return lambda: c


def _value_sub(attr: str) -> dict[str, Scalar]:
    exact = case_exact(USER_SCHEMA, attr, "value")
    if exact:
        value = Scalar("value", "string", True, _col(UserValueRow.value))
    elif attr in LONG_VALUES:
        # value_key is only kept for values of up to MAX_KEY characters: compare lower().
        value = Scalar("value", "string", False, _col(UserValueRow.value))
    else:
        value = Scalar("value", "string", False, _col(UserValueRow.value_key), lowered=True)
    return {
        "value": value,
        "type": Scalar("type", "string", False, _col(UserValueRow.type)),
        "primary": Scalar("primary", "boolean", False, _col(UserValueRow.primary)),
        "display": Scalar("display", "string", False, _col(UserValueRow.display)),
    }


def _user_values(attr: str) -> Callable[[ColumnElement[bool], int], ColumnElement[bool]]:
    def owner_in(cond: ColumnElement[bool], tenant_pk: int) -> ColumnElement[bool]:
        # (tenant_pk, attr, value_key) is the index that answers emails.value eq ...
        sub = select(UserValueRow.user_pk).where(
            UserValueRow.tenant_pk == tenant_pk, UserValueRow.attr == attr, cond
        )
        return UserRow.pk.in_(sub)

    return owner_in


def _address_sub() -> dict[str, Scalar]:
    def extra(key: str) -> Callable[[], ColumnElement[Any]]:
        def expr() -> ColumnElement[Any]:
            # (the ignore below) SQLAlchemy's JSON element types are untyped
            return UserValueRow.extra[(key,)].as_string()  # type: ignore[no-any-return]

        return expr

    subs = {
        k.lower(): Scalar(k, "string", False, extra(k))
        for k in ("formatted", "streetAddress", "locality", "region", "postalCode", "country")
    }
    subs["type"] = Scalar("type", "string", False, _col(UserValueRow.type))
    subs["primary"] = Scalar("primary", "boolean", False, _col(UserValueRow.primary))
    return subs


def _user_groups(cond: ColumnElement[bool], tenant_pk: int) -> ColumnElement[bool]:
    sub = (
        select(MemberRow.member_id)
        .join(GroupRow, GroupRow.pk == MemberRow.group_pk)
        .where(GroupRow.tenant_pk == tenant_pk, cond)
    )
    return UserRow.id.in_(sub)


def _group_members(cond: ColumnElement[bool], tenant_pk: int) -> ColumnElement[bool]:
    # Member rows carry no tenant: their group (the owner row) is already tenant-scoped.
    return GroupRow.pk.in_(select(MemberRow.group_pk).where(cond))


def _meta(model: Any) -> Complex:
    return Complex(
        "meta",
        {
            "created": Scalar("created", "dateTime", False, _col(model.created)),
            "lastmodified": Scalar("lastModified", "dateTime", False, _col(model.last_modified)),
        },
    )


def _user_catalog() -> Catalog:
    core: dict[str, Attr] = {
        "id": Scalar("id", "string", True, _col(UserRow.id)),
        "externalid": Scalar("externalId", "string", True, _col(UserRow.external_id)),
        # user_name_key holds the PRECIS mapping of the name (storage.names).
        "username": Scalar(
            "userName", "string", False, _col(UserRow.user_name_key), lowered=True, fold=names.fold
        ),
        "displayname": Scalar(
            "displayName", "string", False, _col(UserRow.display_name_key), lowered=True
        ),
        "name": Complex(
            "name",
            {
                "givenname": Scalar("givenName", "string", False, _col(UserRow.given_name)),
                "familyname": Scalar("familyName", "string", False, _col(UserRow.family_name)),
                **{
                    k.lower(): Scalar(k, "string", False, _json("name", k))
                    for k in ("formatted", "middleName", "honorificPrefix", "honorificSuffix")
                },
            },
        ),
        **{
            k.lower(): Scalar(k, "string", case_exact(USER_SCHEMA, k), _json(k))
            for k in (
                "nickName",
                "profileUrl",
                "title",
                "userType",
                "preferredLanguage",
                "locale",
                "timezone",
            )
        },
        "active": Scalar("active", "boolean", False, _col(UserRow.active)),
        "meta": _meta(UserRow),
        "groups": MultiValued(
            "groups",
            {
                # Group ids are stored lower-case: a lowered column for caseExact false.
                "value": Scalar(
                    "value",
                    "string",
                    case_exact(USER_SCHEMA, "groups", "value"),
                    _col(GroupRow.id),
                    lowered=True,
                ),
                "display": Scalar(
                    "display", "string", False, _col(GroupRow.display_name_key), lowered=True
                ),
            },
            _user_groups,
        ),
        "addresses": MultiValued(
            "addresses", _address_sub(), _user_values("addresses"), "formatted"
        ),
    }
    for attr in (
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "entitlements",
        "roles",
        "x509Certificates",
    ):
        core[attr.lower()] = MultiValued(attr, _value_sub(attr), _user_values(attr))
    enterprise: dict[str, Attr] = {
        k.lower(): Scalar(k, "string", False, _json("enterprise", k))
        for k in ("employeeNumber", "costCenter", "organization", "division", "department")
    }
    enterprise["manager"] = Complex(
        "manager",
        {
            "value": Scalar(
                "value",
                "string",
                case_exact(ENTERPRISE_SCHEMA, "manager", "value"),
                _json("enterprise", "manager", "value"),
            ),
            "displayname": Scalar(
                "displayName", "string", False, _json("enterprise", "manager", "displayName")
            ),
        },
    )
    return Catalog("User", USER_SCHEMA, {USER_SCHEMA: core, ENTERPRISE_SCHEMA: enterprise}, core)


def _group_catalog() -> Catalog:
    core: dict[str, Attr] = {
        "id": Scalar("id", "string", True, _col(GroupRow.id)),
        "externalid": Scalar("externalId", "string", True, _col(GroupRow.external_id)),
        "displayname": Scalar(
            "displayName", "string", False, _col(GroupRow.display_name_key), lowered=True
        ),
        "members": MultiValued(
            "members",
            {
                "value": Scalar("value", "string", True, _col(MemberRow.member_id)),
                "type": Scalar(
                    "type", "string", True, _col(MemberRow.member_type), codes=_MEMBER_TYPES
                ),
            },
            _group_members,
        ),
        "meta": _meta(GroupRow),
    }
    return Catalog("Group", GROUP_SCHEMA, {GROUP_SCHEMA: core}, core)


USERS = _user_catalog()
GROUPS = _group_catalog()

_LIKE_ESCAPE = re.compile(r"([\\%_])")


def _like(value: str, op: int) -> str:
    esc = _LIKE_ESCAPE.sub(r"\\\1", value)
    if op == Op.COMPARE_OP_CO:
        return f"%{esc}%"
    if op == Op.COMPARE_OP_SW:
        return f"{esc}%"
    return f"%{esc}"


def _literal(scalar: Scalar, value: common_pb2.Value, shown: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return None
    if scalar.type == "boolean":
        if kind == "bool_value":
            return value.bool_value
        if kind == "string_value" and value.string_value.lower() in {"true", "false"}:
            return value.string_value.lower() == "true"
        raise InvalidFilter(f"{shown} is boolean: compare it with true or false", field=shown)
    if scalar.type == "dateTime":
        if kind != "string_value":
            raise InvalidFilter(f"{shown} is a dateTime: give an ISO 8601 string", field=shown)
        try:
            parsed = datetime.fromisoformat(value.string_value)
        except ValueError:
            raise InvalidFilter(
                f"{shown}: {value.string_value!r} is not an ISO 8601 dateTime", field=shown
            ) from None
        if parsed.tzinfo is None:
            raise InvalidFilter(f"{shown}: dateTime needs a timezone (e.g. Z)", field=shown)
        return parsed
    if scalar.type == "number":
        if kind != "number_value":
            raise InvalidFilter(f"{shown} is a number", field=shown)
        return value.number_value
    # string attributes: numbers and booleans compare as their text
    if kind == "string_value":
        text = value.string_value
        if "\x00" in text:
            raise InvalidFilter(f"{shown}: the value contains a NUL character", field=shown)
    elif kind == "bool_value":
        text = "true" if value.bool_value else "false"
    else:
        num = value.number_value
        text = str(int(num)) if num.is_integer() else str(num)
    if scalar.codes is not None:
        code = scalar.codes.get(text.lower())
        if code is None:
            names = ", ".join(sorted(scalar.codes))
            raise InvalidFilter(f"{shown}: expected one of {names}", field=shown)
        return code
    return text


def _compare(scalar: Scalar, cmp: common_pb2.Comparison, shown: str) -> ColumnElement[bool]:
    assert scalar.expr is not None
    col = scalar.expr()
    op = cmp.op
    if op == Op.COMPARE_OP_PR:
        if scalar.type == "string":
            return and_(col.is_not(None), col != "")
        return col.is_not(None)
    if op == Op.COMPARE_OP_UNSPECIFIED or op not in Op.values():
        raise InvalidFilter(f"{shown}: comparison operator missing", field=shown)
    if not cmp.HasField("value"):
        raise InvalidFilter(f"{shown}: comparison needs a value", field=shown)
    lit = _literal(scalar, cmp.value, shown)
    if lit is None:
        if op == Op.COMPARE_OP_EQ:
            return col.is_(None) if scalar.type != "string" else or_(col.is_(None), col == "")
        if op == Op.COMPARE_OP_NE:
            return _compare(
                scalar, common_pb2.Comparison(path=cmp.path, op=Op.COMPARE_OP_PR), shown
            )
        raise InvalidFilter(f"{shown}: null can only be compared with eq or ne", field=shown)
    if (scalar.type == "boolean" or scalar.codes) and op not in (
        Op.COMPARE_OP_EQ,
        Op.COMPARE_OP_NE,
    ):
        raise InvalidFilter(f"{shown}: only eq and ne apply", field=shown)
    if scalar.type != "string" and op in (Op.COMPARE_OP_CO, Op.COMPARE_OP_SW, Op.COMPARE_OP_EW):
        raise InvalidFilter(
            f"{shown} is a {scalar.type}: co, sw and ew apply to strings", field=shown
        )
    if isinstance(lit, str) and not scalar.case_exact:
        lit = scalar.fold(lit) if scalar.fold is not None else lit.lower()
        if not scalar.lowered:
            col = func.lower(col)
    if op == Op.COMPARE_OP_EQ:
        cond = col == lit
    elif op == Op.COMPARE_OP_NE:
        return or_(col.is_(None), col != lit)
    elif op in (Op.COMPARE_OP_CO, Op.COMPARE_OP_SW, Op.COMPARE_OP_EW):
        cond = col.like(_like(lit, op), escape="\\")
    elif op == Op.COMPARE_OP_GT:
        cond = col > lit
    elif op == Op.COMPARE_OP_GE:
        cond = col >= lit
    elif op == Op.COMPARE_OP_LT:
        cond = col < lit
    else:
        cond = col <= lit
    return and_(col.is_not(None), cond)


class _Compiler:
    def __init__(self, catalog: Catalog, tenant_pk: int) -> None:
        self.catalog = catalog
        self.tenant_pk = tenant_pk
        self.nodes = 0

    def node(
        self, f: common_pb2.Filter, depth: int, element: MultiValued | None
    ) -> ColumnElement[bool]:
        self.nodes += 1
        if self.nodes > MAX_FILTER_NODES:
            raise InvalidFilter(f"filter too complex: more than {MAX_FILTER_NODES} terms")
        if depth > MAX_FILTER_DEPTH:
            raise InvalidFilter(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
        which = f.WhichOneof("node")
        if which == "compare":
            return self.compare(f.compare, element)
        if which in ("and", "or"):
            parts = [self.node(x, depth + 1, element) for x in getattr(f, which).filters]
            if not parts:
                raise InvalidFilter(f"'{which}' needs at least one operand")
            return and_(*parts) if which == "and" else or_(*parts)
        if which == "not":
            return not_(self.node(f.__getattribute__("not"), depth + 1, element))
        if which == "value_filter":
            if element is not None:
                raise InvalidFilter("value filters cannot be nested")
            attr, _ = self.catalog.resolve(f.value_filter.path)
            if not isinstance(attr, MultiValued) or f.value_filter.path.sub_attribute:
                raise InvalidFilter(
                    f"{_shown(f.value_filter.path)!r} is not multi-valued: "
                    "[...] filters apply to multi-valued attributes",
                    field=_shown(f.value_filter.path),
                )
            inner = self.node(f.value_filter.filter, depth + 1, attr)
            return attr.owner_in(inner, self.tenant_pk)
        raise InvalidFilter("empty filter node")

    def compare(
        self, cmp: common_pb2.Comparison, element: MultiValued | None
    ) -> ColumnElement[bool]:
        shown = _shown(cmp.path)
        if element is not None:
            # Inside emails[...]: paths name the element's sub-attributes.
            name = (cmp.path.sub_attribute or cmp.path.attribute).strip().lower()
            if cmp.path.sub_attribute and cmp.path.attribute.lower() != element.name.lower():
                raise InvalidFilter(
                    f"{shown!r} is not a sub-attribute of {element.name}", field=shown
                )
            sub = element.sub.get(name)
            if sub is None:
                raise InvalidFilter(f"{element.name} has no sub-attribute {name!r}", field=shown)
            return _compare(sub, cmp, f"{element.name}.{sub.name}")
        attr, sub = self.catalog.resolve(cmp.path)
        if isinstance(attr, MultiValued):
            if sub is None:
                if cmp.op == Op.COMPARE_OP_PR:
                    return attr.owner_in(true(), self.tenant_pk)
                sub = attr.sub[attr.default_sub]
            return attr.owner_in(_compare(sub, cmp, f"{attr.name}.{sub.name}"), self.tenant_pk)
        assert sub is not None
        return _compare(sub, cmp, shown)


@dataclass(frozen=True)
class Equality:
    """A filter that is one `attribute eq "text"` on a string attribute kept in a
    column of its own: the lookup IdPs make before nearly every write."""

    #: Which attribute (stable, for statement caches).
    name: str
    column: ColumnElement[Any]
    value: str


def equality(catalog: Catalog, f: common_pb2.Filter | None) -> Equality | None:
    """`f` as an Equality, or None (then compile_filter handles it, errors included)."""
    if f is None or f.WhichOneof("node") != "compare":
        return None
    cmp = f.compare
    if cmp.op != Op.COMPARE_OP_EQ or cmp.value.WhichOneof("kind") != "string_value":
        return None
    try:
        attr, _ = catalog.resolve(cmp.path)
    except InvalidFilter:
        return None
    if (
        not isinstance(attr, Scalar)
        or attr.type != "string"
        or attr.codes is not None
        or attr.expr is None
        or not (attr.case_exact or attr.lowered)
        or "\x00" in cmp.value.string_value
    ):
        return None
    column = attr.expr()
    if not isinstance(column, QueryableAttribute):
        return None  # read from the JSON document
    text = cmp.value.string_value
    if not attr.case_exact:
        text = attr.fold(text) if attr.fold is not None else text.lower()
    return Equality(f"{catalog.resource}.{attr.name}", column, text)


def compile_filter(
    catalog: Catalog, f: common_pb2.Filter | None, tenant_pk: int
) -> ColumnElement[bool]:
    """The WHERE condition for a filter tree within one tenant (TRUE when there is none)."""
    if f is None or f.WhichOneof("node") is None:
        return true()
    return _Compiler(catalog, tenant_pk).node(f, 0, None)


#: What an absent value sorts as, per type: keys are never NULL, so keyset paging's
#: `(key, pk) > (last_key, last_pk)` never skips a row (NULL compares as unknown).
_SORT_DEFAULT: dict[str, Any] = {"string": "", "number": -1.0e300, "boolean": False}


def sort_key(
    catalog: Catalog, path: common_pb2.AttributePath
) -> tuple[ColumnElement[Any], AttrType]:
    """A sortable, never-NULL expression for a sortBy path (RFC 7644 §3.4.2.3):
    multi-valued attributes sort by their smallest value."""
    attr, sub = catalog.resolve(path)
    if isinstance(attr, MultiValued):
        if catalog.resource != "User" or attr.name == "groups":
            raise InvalidFilter(f"cannot sort by {attr.name}", field=_shown(path))
        sub = sub or attr.sub[attr.default_sub]
        if sub.type != "string":
            raise InvalidFilter(
                f"cannot sort by {attr.name}.{sub.name}: sort by a text sub-attribute",
                field=_shown(path),
            )
        assert sub.expr is not None
        expr = (
            select(func.min(sub.expr()))
            .where(UserValueRow.user_pk == UserRow.pk, UserValueRow.attr == attr.name)
            .scalar_subquery()
        )
        return func.coalesce(expr, literal("")), "string"
    assert sub is not None and sub.expr is not None
    col = sub.expr()
    if sub.type == "string" and not sub.case_exact and not sub.lowered:
        col = func.lower(col)
    if sub.type in _SORT_DEFAULT:
        return func.coalesce(col, literal(_SORT_DEFAULT[sub.type])), sub.type
    return col, sub.type  # dateTime: meta.created / lastModified are never NULL


def path_is(path: common_pb2.AttributePath, schema: str, attribute: str) -> bool:
    """Whether `path` names `attribute` of `schema` (or of no schema), read as
    Catalog.resolve reads it: stripped, and case-insensitively."""
    urn = path.schema.strip().lower()
    return path.attribute.strip().lower() == attribute.lower() and urn in ("", schema.lower())


def names_attribute(f: common_pb2.Filter, schema: str, attribute: str) -> bool:
    """Whether filter `f` names `attribute` of `schema` (or of no schema) anywhere, a
    value filter's path included. Iterative, and gives up (False) past
    MAX_FILTER_NODES nodes: compile_filter refuses such a filter anyway."""

    def named(path: common_pb2.AttributePath) -> bool:
        return path_is(path, schema, attribute)

    todo = [f]
    seen = 0
    while todo and seen <= MAX_FILTER_NODES:
        node = todo.pop()
        seen += 1
        which = node.WhichOneof("node")
        if which == "compare":
            if named(node.compare.path):
                return True
        elif which in ("and", "or"):
            todo.extend(getattr(node, which).filters)
        elif which == "not":
            todo.append(node.__getattribute__("not"))
        elif which == "value_filter" and named(node.value_filter.path):
            # (Paths inside name the element's sub-attributes, not the resource's.)
            return True
    return False


__all__ = ["GROUPS", "USERS", "Catalog", "compile_filter", "names_attribute", "path_is", "sort_key"]
