"""Fuzzing the filter and PATCH-path parsers: every input parses or raises the
gateway's SCIM 400 error; nothing else escapes (so no input becomes a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scim_gateway.errors import ScimError, invalid_filter
from scim_gateway.scim.filter import _SIMPLE_EQ, MAX_DEPTH, Parser, filter_to_proto, parse_filter
from scim_gateway.scim.mapping import normalize
from scim_gateway.scim.patch import parse_operations, parse_path
from scim_gateway.scim.projection import Projection

from .catalogue import USER_TYPE
from .core_patch import apply_patch

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of the grammar, so random text often gets deep into the parser.
ATOMS = st.sampled_from(
    [
        "userName",
        "emails",
        "name.givenName",
        "members",
        "value",
        "type",
        "meta.created",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "eq",
        "ne",
        "co",
        "sw",
        "ew",
        "gt",
        "ge",
        "lt",
        "le",
        "pr",
        "and",
        "or",
        "not",
        "(",
        ")",
        "[",
        "]",
        ".",
        '"x"',
        '"',
        "\\",
        "true",
        "false",
        "null",
        "1",
        "-2.5e3",
        "1e999",
        " ",
        "  ",
        ":",
        "$ref",
        '"\\u00e9"',
        '"\\ud800"',
        "\x00",
        "é",
    ]
)
GRAMMARISH = st.lists(ATOMS, max_size=25).map(" ".join) | st.lists(ATOMS, max_size=25).map("".join)
ANY_TEXT = st.text(max_size=200)


def _only_scim_400(fn: Any, text: str, scim_types: set[str]) -> None:
    try:
        fn(text)
    except ScimError as err:
        assert err.status == 400
        assert err.scim_type in scim_types
        assert err.detail


@FAST
@given(GRAMMARISH | ANY_TEXT)
def test_filter_parser_never_fails_otherwise(text: str) -> None:
    _only_scim_400(filter_to_proto, text, {"invalidFilter"})


WS = st.sampled_from(["", " ", "  ", "\t", "\r\n", "\n "])
# The shape of the IdPs' lookups, and shapes close to it the shortcut must leave alone.
EQ_LIKE = st.builds(
    lambda w1, name, w2, op, w3, value, w4: f"{w1}{name}{w2}{op}{w3}{value}{w4}",
    WS,
    st.sampled_from(["userName", "externalId", "x", "not", "and", "a-b_1", "$ref", "name.x"])
    | st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,12}", fullmatch=True),
    WS,
    st.sampled_from(["eq", "EQ", "Eq", "ne", "eq\x00"]),
    WS,
    st.text(max_size=20).map(lambda t: '"' + t + '"')
    | st.sampled_from(['"a\\"b"', '"\\u0041"', '"x', 'x"', "1", "true"]),
    WS,
)


@FAST
@given(EQ_LIKE | GRAMMARISH)
def test_the_lookup_shortcut_answers_what_the_parser_answers(text: str) -> None:
    try:
        expected: Any = Parser(text, invalid_filter).parse_filter()
    except ScimError as err:
        expected = err.detail
    if _SIMPLE_EQ.match(text) is not None and text.strip():
        assert parse_filter(text) == expected
    try:
        got: Any = parse_filter(text)
    except ScimError as err:
        got = err.detail
    if text.strip() and len(text) <= 8192:
        assert got == expected


@FAST
@given(GRAMMARISH | ANY_TEXT)
def test_patch_path_parser_never_fails_otherwise(text: str) -> None:
    _only_scim_400(parse_path, text, {"invalidPath"})


@FAST
@given(st.integers(min_value=1, max_value=200))
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    """Up to MAX_DEPTH levels (the innermost expression is one) parse; deeper is
    refused with a 400 invalidFilter that says why, never parsed nor crashed."""
    for text in ("(" * depth + "a pr" + ")" * depth, "not (" * depth + "a pr" + ")" * depth):
        if depth < MAX_DEPTH:
            assert parse_filter(text) is not None
            continue
        with pytest.raises(ScimError) as err:
            parse_filter(text)
        assert (err.value.status, err.value.scim_type) == (400, "invalidFilter")
        assert f"nested more than {MAX_DEPTH} levels" in err.value.detail


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@FAST
@given(
    st.lists(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "Replace", "remove", "x"]), "value": JSON},
            optional={"path": GRAMMARISH},
        ),
        min_size=1,
        max_size=3,
    )
)
def test_patch_operations_never_fail_otherwise(operations: list[dict[str, Any]]) -> None:
    doc = normalize({"userName": "a", "emails": [{"value": "a@x", "type": "work"}]}, USER_TYPE)
    try:
        apply_patch(USER_TYPE, doc, parse_operations({"Operations": operations}))
    except ScimError as err:
        assert err.status == 400


@FAST
@given(
    st.dictionaries(st.text(max_size=12) | st.sampled_from(["userName", "emails", "name"]), JSON)
)
def test_normalize_never_fails_otherwise(body: dict[str, Any]) -> None:
    try:
        normalize(body, USER_TYPE)
    except ScimError as err:
        assert err.status == 400


@FAST
@given(GRAMMARISH | ANY_TEXT)
def test_attribute_lists_never_fail_otherwise(text: str) -> None:
    try:
        Projection.parse(text, text).apply({"schemas": [], "id": "1", "userName": "a"}, USER_TYPE)
    except ScimError as err:
        assert err.status == 400
