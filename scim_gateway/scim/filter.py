"""SCIM filter expressions (RFC 7644 §3.4.2.2) and attribute paths.

The text is parsed into a small tree (`Compare`, `And`, `Or`, `Not`,
`ValuePath`) which converts to the core's `identity.v1.Filter` (`to_proto`);
a PATCH path's value filter goes to the core in that form too, which evaluates
it on the elements of a multi-valued attribute. Grammar, with `not` binding
tighter than `and`, tighter than `or`:

    FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
    valuePath = attrPath "[" valFilter "]"
    attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
    compValue = false / null / true / number / string
    attrPath  = [URI ":"] ATTRNAME *1subAttr

Attribute *names* are not checked here: the core rejects unknown attributes
(INVALID_FILTER). This module only rejects what it cannot parse, always with a
400 `invalidFilter` ScimError and never with any other exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import orjson

from scim_identity_api.urns import CORE_GROUP, CORE_USER, ENTERPRISE_USER
from scim_identity_api.v1 import common_pb2

from ..errors import ScimError, invalid_filter

# Longest filter accepted and deepest nesting of parentheses/brackets/not: a
# guard against inputs built to exhaust the parser.
MAX_FILTER_LENGTH = 8192
MAX_DEPTH = 32

# Schema URNs a path may name without an attribute after them.
KNOWN_SCHEMAS = (CORE_USER, CORE_GROUP, ENTERPRISE_USER)

OPERATORS = ("eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le")
_PROTO_OPS = {
    "eq": common_pb2.COMPARE_OP_EQ,
    "ne": common_pb2.COMPARE_OP_NE,
    "co": common_pb2.COMPARE_OP_CO,
    "sw": common_pb2.COMPARE_OP_SW,
    "ew": common_pb2.COMPARE_OP_EW,
    "gt": common_pb2.COMPARE_OP_GT,
    "ge": common_pb2.COMPARE_OP_GE,
    "lt": common_pb2.COMPARE_OP_LT,
    "le": common_pb2.COMPARE_OP_LE,
    "pr": common_pb2.COMPARE_OP_PR,
}

_ATTRNAME = r"\$?[A-Za-z][A-Za-z0-9_\-]*"
_ATTRNAME_RE = re.compile(rf"{_ATTRNAME}\Z")


@dataclass(frozen=True, slots=True)
class AttrPath:
    """`[schema:]attribute[.sub_attribute]`; schema "" is the resource's core schema."""

    schema: str
    attribute: str
    sub_attribute: str = ""

    def to_proto(self) -> common_pb2.AttributePath:
        return common_pb2.AttributePath(
            schema=self.schema, attribute=self.attribute, sub_attribute=self.sub_attribute
        )

    def __str__(self) -> str:
        name = f"{self.attribute}.{self.sub_attribute}" if self.sub_attribute else self.attribute
        return f"{self.schema}:{name}" if self.schema else name


@dataclass(frozen=True, slots=True)
class Compare:
    path: AttrPath
    op: str  # one of OPERATORS or "pr"
    value: Any = None  # str | bool | float | int | None


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class ValuePath:
    """`attr[filter]`: some element of the multi-valued `attr` satisfies `filter`."""

    path: AttrPath
    filter: Node


Node = Union[Compare, And, Or, Not, ValuePath]  # noqa: UP007 - recursive alias needs Union


# -- tokens -------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<punct>[()\[\].])
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_:.\-$]))
  | (?P<word>[A-Za-z$][A-Za-z0-9_:.\-$]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "punct", "string", "number", "word", "end"
    text: str
    pos: int


def _tokens(text: str, error: Callable[[str], ScimError]) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise error(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


def _check_text(text: str, what: str, error: Callable[[str], ScimError]) -> None:
    if not text.strip():
        raise error(f"the {what} is empty")
    if len(text) > MAX_FILTER_LENGTH:
        raise error(f"the {what} is longer than {MAX_FILTER_LENGTH} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"the {what} is not valid UTF-8 text") from None


def split_attr_path(
    text: str, error: Callable[[str], ScimError], *, allow_schema_only: bool = False
) -> AttrPath:
    """`urn:...:User:name.givenName` -> AttrPath(urn, "name", "givenName").

    With `allow_schema_only`, a bare known schema URN gives AttrPath(urn, "").
    """
    schema = ""
    rest = text
    if ":" in text:
        for known in KNOWN_SCHEMAS:
            if text.lower() == known.lower():
                if allow_schema_only:
                    return AttrPath(known, "")
                raise error(f"{text!r} names a schema, not an attribute")
            if text.lower().startswith(known.lower() + ":"):
                schema, rest = known, text[len(known) + 1 :]
                break
        else:
            schema, _, rest = text.rpartition(":")
            if not schema.lower().startswith("urn:"):
                raise error(f"{text!r} is not an attribute path (a schema must be a URN)")
    parts = rest.split(".")
    if len(parts) > 2 or not all(_ATTRNAME_RE.match(p) for p in parts):
        raise error(f"{text!r} is not a valid attribute path")
    return AttrPath(schema, parts[0], parts[1] if len(parts) == 2 else "")


def parse_attr_path(text: str, *, allow_schema_only: bool = False) -> AttrPath:
    """One attribute path (as in `sortBy` or `attributes`); 400 invalidFilter if malformed."""
    text = text.strip()
    _check_text(text, "attribute path", invalid_filter)
    return split_attr_path(text, invalid_filter, allow_schema_only=allow_schema_only)


# -- parser -------------------------------------------------------------------


class Parser:
    """Recursive descent over the token list; also used for PATCH paths."""

    def __init__(self, text: str, error: Callable[[str], ScimError]) -> None:
        self.text = text
        self.error = error
        self.toks = _tokens(text, error)
        self.i = 0
        self.depth = 0

    # helpers
    def peek(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text.lower() in words

    def at_punct(self, p: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.text == p

    def expect_punct(self, p: str) -> None:
        tok = self.next()
        if tok.kind != "punct" or tok.text != p:
            raise self.error(f"expected {p!r} at position {tok.pos + 1}, found {self._desc(tok)}")

    def _desc(self, tok: Token) -> str:
        return "the end of the expression" if tok.kind == "end" else repr(tok.text)

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the expression is nested more than {MAX_DEPTH} levels deep")

    # grammar
    def parse_filter(self) -> Node:
        node = self.or_expr(in_brackets=False)
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(f"unexpected {self._desc(tok)} at position {tok.pos + 1}")
        return node

    def or_expr(self, *, in_brackets: bool) -> Node:
        items = [self.and_expr(in_brackets=in_brackets)]
        while self.at_word("or"):
            self.next()
            items.append(self.and_expr(in_brackets=in_brackets))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, *, in_brackets: bool) -> Node:
        items = [self.unary(in_brackets=in_brackets)]
        while self.at_word("and"):
            self.next()
            items.append(self.unary(in_brackets=in_brackets))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, *, in_brackets: bool) -> Node:
        self._enter()
        try:
            if self.at_word("not"):
                # RFC 7644 §3.4.2.2: "not" "(" FILTER ")"; the word alone could
                # also be an attribute named "not", so look ahead for "(".
                nxt = self.toks[self.i + 1]
                if nxt.kind == "punct" and nxt.text == "(":
                    self.next()
                    self.next()
                    inner = self.or_expr(in_brackets=in_brackets)
                    self.expect_punct(")")
                    return Not(inner)
            if self.at_punct("("):
                self.next()
                inner = self.or_expr(in_brackets=in_brackets)
                self.expect_punct(")")
                return inner
            return self.attr_exp(in_brackets=in_brackets)
        finally:
            self.depth -= 1

    def attr_path(self) -> AttrPath:
        tok = self.next()
        if tok.kind != "word":
            raise self.error(
                f"expected an attribute name at position {tok.pos + 1}, found {self._desc(tok)}"
            )
        return split_attr_path(tok.text, self.error)

    def attr_exp(self, *, in_brackets: bool) -> Node:
        start = self.peek()
        path = self.attr_path()
        if self.at_punct("["):
            if in_brackets:
                raise self.error(f"value filters cannot be nested (position {self.peek().pos + 1})")
            if path.sub_attribute:
                raise self.error(f"{str(path)!r} cannot take a value filter: it is a sub-attribute")
            self.next()
            inner = self.or_expr(in_brackets=True)
            self.expect_punct("]")
            return ValuePath(path, inner)
        op_tok = self.next()
        op = op_tok.text.lower() if op_tok.kind == "word" else ""
        if op == "pr":
            return Compare(path, "pr")
        if op not in OPERATORS:
            raise self.error(
                f"expected an operator (eq, ne, co, sw, ew, gt, lt, ge, le, pr) after "
                f"{start.text!r}, found {self._desc(op_tok)}"
            )
        return Compare(path, op, self.comp_value())

    def comp_value(self) -> Any:
        tok = self.next()
        if tok.kind == "string":
            try:
                value = orjson.loads(tok.text)
            except orjson.JSONDecodeError:
                raise self.error(f"invalid string literal at position {tok.pos + 1}") from None
            if not isinstance(value, str):  # pragma: no cover - the regex admits strings only
                raise self.error(f"invalid string literal at position {tok.pos + 1}")
            if "\x00" in value:
                # No stored value holds NUL (PostgreSQL text cannot).
                raise self.error(f"the string at position {tok.pos + 1} contains NUL (\\u0000)")
            return value
        if tok.kind == "number":
            num: float | int
            num = float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
            if isinstance(num, float) and not math.isfinite(num):
                raise self.error(f"number out of range at position {tok.pos + 1}")
            if isinstance(num, int) and abs(num) > 2**53:
                raise self.error(f"number out of range at position {tok.pos + 1}")
            return num
        if tok.kind == "word":
            word = tok.text.lower()
            if word == "true":
                return True
            if word == "false":
                return False
            if word == "null":
                return None
        raise self.error(
            f"expected a value (a quoted string, number, true, false or null) at position "
            f"{tok.pos + 1}, found {self._desc(tok)}"
        )


#: `attribute eq "string"` with a plain name and no escapes in the string: the IdPs'
#: lookup (`userName eq "..."`, `externalId eq "..."`), on nearly every request they make.
_SIMPLE_EQ = re.compile(
    r"[ \t\r\n]*([A-Za-z][A-Za-z0-9_\-]*)"  # the attribute
    r"[ \t\r\n]+[Ee][Qq][ \t\r\n]+"
    r'"([^"\\\x00-\x1f]*)"[ \t\r\n]*\Z'  # the string, no escapes
)


def parse_filter(text: str) -> Node:
    """Parses filter text; raises a 400 invalidFilter ScimError when it can't."""
    _check_text(text, "filter", invalid_filter)
    simple = _SIMPLE_EQ.match(text)
    if simple is not None:
        # What the parser answers for this shape (tests/gateway/test_fuzz.py checks
        # that they agree), without tokenizing.
        return Compare(AttrPath("", simple.group(1)), "eq", simple.group(2))
    return Parser(text, invalid_filter).parse_filter()


# -- conversion to the core's filter tree ----------------------------------------


def _value_proto(value: Any) -> common_pb2.Value:
    if value is None:
        return common_pb2.Value(null_value=True)
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return common_pb2.Value(number_value=float(value))
    return common_pb2.Value(string_value=str(value))


def _core_path(path: AttrPath, core_schema: str) -> common_pb2.AttributePath:
    proto = path.to_proto()
    if core_schema and path.schema.lower() == core_schema.lower():
        proto.schema = ""
    return proto


def to_proto(node: Node, core_schema: str = "") -> common_pb2.Filter:
    """The core's filter tree; paths in `core_schema` get an empty schema."""
    if isinstance(node, Compare):
        cmp = common_pb2.Comparison(path=_core_path(node.path, core_schema), op=_PROTO_OPS[node.op])
        if node.op != "pr":
            cmp.value.CopyFrom(_value_proto(node.value))
        return common_pb2.Filter(compare=cmp)
    out = common_pb2.Filter()
    # `and`, `or` and `not` are Python keywords: reach the fields by name.
    if isinstance(node, And | Or):
        field = getattr(out, "and" if isinstance(node, And) else "or")
        field.filters.extend(to_proto(n, core_schema) for n in node.items)
        return out
    if isinstance(node, Not):
        getattr(out, "not").CopyFrom(to_proto(node.item, core_schema))
        return out
    return common_pb2.Filter(
        value_filter=common_pb2.ValueFilter(
            path=_core_path(node.path, core_schema), filter=to_proto(node.filter, core_schema)
        )
    )


def filter_to_proto(text: str, core_schema: str = "") -> common_pb2.Filter:
    return to_proto(parse_filter(text), core_schema)
