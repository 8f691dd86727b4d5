"""The filter parser (RFC 7644 §3.4.2.2), without HTTP. Fixtures are the RFC's
own examples, named by section."""

from __future__ import annotations

import pytest

from identity_service.domain.patching import matches
from scim_gateway.errors import ScimError
from scim_gateway.scim.filter import (
    CORE_USER,
    And,
    AttrPath,
    Compare,
    Not,
    Or,
    ValuePath,
    filter_to_proto,
    parse_attr_path,
    parse_filter,
)
from scim_identity_api.v1 import common_pb2

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# RFC 7644 §3.4.2.2, the example filters listed after Figure 2.
RFC7644_3_4_2_2_EXAMPLES = [
    'userName Eq "john"',
    'Username eq "john"',
    'userName eq "bjensen"',
    'name.familyName co "O\'Malley"',
    'userName sw "J"',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"',
    "title pr",
    'meta.lastModified gt "2011-05-13T04:42:34Z"',
    'meta.lastModified ge "2011-05-13T04:42:34Z"',
    'meta.lastModified lt "2011-05-13T04:42:34Z"',
    'meta.lastModified le "2011-05-13T04:42:34Z"',
    'title pr and userType eq "Employee"',
    'title pr or userType eq "Intern"',
    'schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"',
    'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")',
    'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")',
    'userType eq "Employee" and (emails.type eq "work")',
    'userType eq "Employee" and emails[type eq "work" and value co "@example.com"]',
    'emails[type eq "work" and value co "@example.com"] or '
    'ims[type eq "xmpp" and value co "@foo.com"]',
]


def _p(name: str, schema: str = "") -> AttrPath:
    attr, _, sub = name.partition(".")
    return AttrPath(schema, attr, sub)


def _c(name: str, op: str, value: object = None) -> Compare:
    return Compare(_p(name), op, value)


_WHEN = "2011-05-13T04:42:34Z"
_EMAILS_WORK = ValuePath(
    _p("emails"), And((_c("type", "eq", "work"), _c("value", "co", "@example.com")))
)
_EMAILS_CO = Or((_c("emails", "co", "example.com"), _c("emails.value", "co", "example.org")))

#: The tree each example means (RFC 7644 §3.4.2.2: "and" binds tighter than "or",
#: operators are case-insensitive, "[...]" filters the elements of a multi-valued
#: attribute, a schema URN prefix names the attribute's schema).
RFC7644_3_4_2_2_TREES = [
    _c("userName", "eq", "john"),
    _c("Username", "eq", "john"),  # attribute names resolve case-insensitively later
    _c("userName", "eq", "bjensen"),
    _c("name.familyName", "co", "O'Malley"),
    _c("userName", "sw", "J"),
    Compare(_p("userName", CORE_USER), "sw", "J"),
    _c("title", "pr"),
    _c("meta.lastModified", "gt", _WHEN),
    _c("meta.lastModified", "ge", _WHEN),
    _c("meta.lastModified", "lt", _WHEN),
    _c("meta.lastModified", "le", _WHEN),
    And((_c("title", "pr"), _c("userType", "eq", "Employee"))),
    Or((_c("title", "pr"), _c("userType", "eq", "Intern"))),
    _c("schemas", "eq", ENTERPRISE),
    And((_c("userType", "eq", "Employee"), _EMAILS_CO)),
    And((_c("userType", "ne", "Employee"), Not(_EMAILS_CO))),
    And((_c("userType", "eq", "Employee"), _c("emails.type", "eq", "work"))),
    And((_c("userType", "eq", "Employee"), _EMAILS_WORK)),
    Or(
        (
            _EMAILS_WORK,
            ValuePath(_p("ims"), And((_c("type", "eq", "xmpp"), _c("value", "co", "@foo.com")))),
        )
    ),
]


@pytest.mark.parametrize(
    ("text", "tree"), list(zip(RFC7644_3_4_2_2_EXAMPLES, RFC7644_3_4_2_2_TREES, strict=True))
)
def test_rfc7644_3_4_2_2_examples_parse_to_their_meaning(text: str, tree: object) -> None:
    assert len(RFC7644_3_4_2_2_EXAMPLES) == 19
    assert parse_filter(text) == tree
    assert filter_to_proto(text, CORE_USER).WhichOneof("node")


def test_rfc7644_3_4_2_2_operators_are_case_insensitive() -> None:
    assert parse_filter('userName Eq "john"') == Compare(AttrPath("", "userName"), "eq", "john")


def test_rfc7644_3_4_2_2_precedence_not_and_or() -> None:
    node = parse_filter("a pr or b pr and not (c pr)")
    assert node == Or(
        (
            Compare(AttrPath("", "a"), "pr"),
            And((Compare(AttrPath("", "b"), "pr"), Not(Compare(AttrPath("", "c"), "pr")))),
        )
    )


def test_rfc7644_3_4_2_2_value_path_to_value_filter() -> None:
    f = filter_to_proto('emails[type eq "work" and value co "@x"]')
    vf = f.value_filter
    assert vf.path.attribute == "emails"
    terms = getattr(vf.filter, "and").filters
    assert terms[0].compare.path.attribute == "type"
    assert terms[0].compare.op == common_pb2.COMPARE_OP_EQ
    assert terms[1].compare.value.string_value == "@x"


def test_extension_urn_paths() -> None:
    node = parse_filter(f'{ENTERPRISE}:manager.value eq "42"')
    assert node == Compare(AttrPath(ENTERPRISE, "manager", "value"), "eq", "42")
    proto = filter_to_proto(f'{ENTERPRISE}:employeeNumber eq "701984"', CORE_USER)
    assert proto.compare.path.schema == ENTERPRISE
    assert proto.compare.path.attribute == "employeeNumber"


def test_core_schema_urn_becomes_empty_schema() -> None:
    proto = filter_to_proto(f'{CORE_USER}:name.familyName co "x"', CORE_USER)
    assert proto.compare.path == common_pb2.AttributePath(
        attribute="name", sub_attribute="familyName"
    )


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("true", common_pb2.Value(bool_value=True)),
        ("False", common_pb2.Value(bool_value=False)),
        ("null", common_pb2.Value(null_value=True)),
        ("42", common_pb2.Value(number_value=42)),
        ("-1.5e2", common_pb2.Value(number_value=-150)),
        ('"a\\"b\\u00e9"', common_pb2.Value(string_value='a"bé')),
    ],
)
def test_comp_values(literal: str, value: common_pb2.Value) -> None:
    assert filter_to_proto(f"x eq {literal}").compare.value == value


def test_pr_has_no_value() -> None:
    proto = filter_to_proto("title pr")
    assert proto.compare.op == common_pb2.COMPARE_OP_PR
    assert not proto.compare.HasField("value")


def test_not_and_or_convert() -> None:
    proto = filter_to_proto("not (a eq 1) or b eq 2")
    ors = getattr(proto, "or").filters
    assert getattr(ors[0], "not").compare.path.attribute == "a"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "userName",
        "userName eq",
        "userName xx 1",
        'userName eq "x',
        "(userName pr",
        "userName pr)",
        'emails[type eq "work"',
        'emails[type eq "work"].value eq "x"',
        'emails[type eq "w" and x[y eq 1]]',
        "userName eq 1 userName",
        "userName eq bareword",
        "a eq 1e999",
        'a eq "\\ud800"',
        "and eq 1 and",
        "not userName pr",
        "x.y.z eq 1",
        "userName eq 'single'",
        "foo:bar eq 1",
        "(" * 100 + "a pr" + ")" * 100,
    ],
)
def test_unparseable_filters_are_400_invalid_filter(text: str) -> None:
    with pytest.raises(ScimError) as exc:
        parse_filter(text)
    assert exc.value.status == 400
    assert exc.value.scim_type == "invalidFilter"
    assert exc.value.detail


def test_parse_attr_path_for_sort_by() -> None:
    assert parse_attr_path("name.givenName") == AttrPath("", "name", "givenName")
    assert parse_attr_path(f"{ENTERPRISE}:department") == AttrPath(ENTERPRISE, "department")
    assert parse_attr_path(ENTERPRISE, allow_schema_only=True) == AttrPath(ENTERPRISE, "")


def test_value_path_node_shape() -> None:
    node = parse_filter('members[value eq "1"]')
    assert isinstance(node, ValuePath)
    assert node.path == AttrPath("", "members")


@pytest.mark.parametrize(
    ("text", "element", "expected"),
    [
        ('type eq "work"', {"type": "Work", "value": "a@x"}, True),
        ('type eq "work" and value co "@x"', {"type": "work", "value": "a@X.org"}, True),
        ('type eq "home"', {"type": "work"}, False),
        ("primary eq true", {"primary": True}, True),
        ('primary eq "True"', {"primary": True}, True),
        ("display pr", {"display": ""}, False),
        ('not (type eq "work")', {"type": "home"}, True),
        ('value sw "a" or value ew "z"', {"value": "xyz"}, True),
        ("value gt 5", {"value": 7}, True),
        ("type eq null", {"value": "x"}, True),
    ],
)
def test_matches_evaluates_element_filters(
    text: str, element: dict[str, object], expected: bool
) -> None:
    # PATCH value filters are evaluated by the core, on the tree the gateway sends.
    assert matches(filter_to_proto(text), element) is expected
