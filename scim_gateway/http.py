"""Request/response plumbing shared by every resource: JSON bodies, ETags,
the per-request call facts, and the result type resources return."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson
from falcon.asgi import Request, Response

from scim_identity_client import Authenticated, CallContext

from .errors import ScimError, invalid_syntax, invalid_value

SCIM_MEDIA_TYPE = "application/scim+json"
_JSON_TYPES = ("application/scim+json", "application/json")
REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128
# Deepest JSON nesting a request body may have. SCIM documents nest a handful of
# levels (a PATCH inside a Bulk request about ten); extension values are stored
# as protobuf Structs, which cost up to three message levels per JSON level, and
# protobuf refuses to decode messages nested over 100 levels.
MAX_JSON_DEPTH = 24


#: Call.memo key: the endpoint sends what the service answers, so the answer may be
#: a stream (resource endpoints; /Bulk reads the documents and never streams).
STREAMABLE = "streamable"


class Call:
    """Who is calling, for which tenant, under which request id.

    The bearer secret travels with every core call of the request (`ctx`), and the
    core checks it in that call's own transaction, with what its scope allows (the
    core decides; `write` tells it the request writes); the first answer tells
    which tenant and token it is (`learn`). A request that must know them before
    any core call (rate limits, /Bulk) or that made none asks with `authenticate()`.
    """

    __slots__ = (
        "_authenticator",
        "_secret",
        "_tenant_ref",
        "base_url",
        "deadline",
        "memo",
        "request_id",
        "tenant_id",
        "token_id",
        "write",
    )

    def __init__(
        self,
        *,
        request_id: str,
        base_url: str,
        secret: str = "",
        tenant_ref: str = "",
        tenant_id: str = "",
        token_id: str = "",
        write: bool = False,
        authenticator: Callable[[Call, bool], Awaitable[None]] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.request_id = request_id
        #: time.monotonic() by which the request is answered; every core call of
        #: the request carries it (CallContext.deadline).
        self.deadline = deadline
        #: e.g. "https://scim.example.com/scim/v2/acme": prefix of meta.location.
        self.base_url = base_url
        #: "" until the core said (see `authenticate`).
        self.tenant_id = tenant_id
        self.token_id = token_id
        #: The request writes (RFC 7644: not a GET, HEAD or POST .search): the core
        #: refuses its calls, reads included, to a read-only token.
        self.write = write
        #: Per-request memo (e.g. the tenant's schemas, fetched at most once per request).
        self.memo: dict[str, Any] = {}
        self._secret = secret
        self._tenant_ref = tenant_ref
        self._authenticator = authenticator

    def __repr__(self) -> str:
        return f"Call(request_id={self.request_id!r}, tenant_id={self.tenant_id!r})"

    @property
    def authenticated(self) -> bool:
        return bool(self.tenant_id)

    def learn(self, who: Authenticated) -> None:
        self.tenant_id, self.token_id = who.tenant_id, who.token_id

    async def authenticate(self, *, as_request: bool = False) -> None:
        """Makes sure the tenant and token are known (one AuthenticateToken call
        unless a core call already told); raises the SCIM error of a bad token.
        `as_request`: asked before the request runs, with its intent, so the core
        refuses a write request of a read-only token here (as it would its calls)."""
        if not self.authenticated and self._authenticator is not None:
            await self._authenticator(self, as_request)

    @property
    def secret(self) -> str:
        return self._secret

    @property
    def tenant_ref(self) -> str:
        return self._tenant_ref

    @property
    def ctx(self) -> CallContext:
        if not self._secret:
            return CallContext(
                request_id=self.request_id,
                actor_kind="token",
                actor_id=self.token_id,
                deadline=self.deadline,
            )
        return CallContext(
            request_id=self.request_id,
            deadline=self.deadline,
            bearer=self._secret,
            tenant=self._tenant_ref,
            write=self.write,
            on_authenticated=None if self.authenticated else self.learn,
        )


@dataclass(slots=True)
class Result:
    """What a resource operation answers: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resource_id: str = ""
    #: A body sent in pieces instead of `body` (a large group's members); only
    #: where the request allows it (`STREAMABLE`).
    stream: AsyncIterator[bytes] | None = None
    #: A remark for the operation's history record (e.g. member ids skipped).
    note: str = ""


def request_id(req: Request) -> str:
    given = (req.get_header(REQUEST_ID_HEADER) or "").strip()
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and given.isascii():
        return given
    return secrets.token_hex(16)


async def read_json(req: Request, max_bytes: int) -> Any:
    """The request body as JSON, bounded by `max_bytes` (RFC 7644 §3.12 413)."""
    ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise ScimError(
            415,
            f"Content-Type {ctype!r} is not supported; send application/scim+json "
            "(application/json is accepted too).",
        )
    length = req.content_length
    too_big = ScimError(
        413, f"The request body exceeds the maximum payload size ({max_bytes} bytes)."
    )
    if length is not None and length > max_bytes:
        raise too_big
    data = await req.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_big
    if not data.strip():
        raise invalid_syntax("The request body is empty; a JSON object is required.")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise invalid_syntax(f"The request body is not valid JSON: {exc}") from None
    _check_json(doc, data)
    return doc


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        low = key.lower()
        if low in seen:
            raise _DuplicateKey(key)
        seen.add(low)
    return dict(pairs)


#: A key's closing quote, then whitespace, then its colon.
_SPACED_COLON = re.compile(rb'"\s+:')


def _duplicate_key(data: bytes, keys: int) -> str | None:
    """A key that some object of `data` holds twice (compared case-insensitively), or
    None; `keys` is how many keys the parsed document kept (orjson keeps the last of
    duplicates).

    Fast path: without an escaped quote in the text, `":` occurs only where a key
    ends, so when no key is followed by whitespace before its colon their count is
    the number of keys written; duplicates (exact ones) are then `keys` < that.
    Keys differing only in case were checked on the parsed document. Otherwise
    the text is parsed again with the standard library, pair by pair."""
    if b'\\"' not in data and not _SPACED_COLON.search(data) and data.count(b'":') == keys:
        return None
    try:
        json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as dup:
        return dup.key
    except ValueError:
        pass  # orjson accepted it; the standard library's grammar differs at the edges
    return None


def _check_json(doc: Any, data: bytes) -> None:
    """Refuses what no attribute can hold: nesting deeper than MAX_JSON_DEPTH, the
    NUL character (PostgreSQL text cannot store it), and an object with the same key
    twice, exactly or in another case (attribute names are case-insensitive, RFC 7643
    §2.1: which of the two was meant cannot be known; JSON parsers keep either)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    keys = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise invalid_value(
                    "The request body contains the NUL character (\\u0000), "
                    "which no attribute can hold."
                )
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise invalid_syntax(
                    f"The request body is nested more than {MAX_JSON_DEPTH} levels deep."
                )
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
            if isinstance(value, dict):
                keys += len(value)
                stack.extend((k, depth) for k in value)
                if len({k.lower() for k in value}) != len(value):
                    _duplicate(next(k for k in value if _twice(k, value)))
    found = _duplicate_key(data, keys)
    if found is not None:
        _duplicate(found)


def _twice(key: str, obj: dict[str, Any]) -> bool:
    low = key.lower()
    return sum(k.lower() == low for k in obj) > 1


def _duplicate(key: str) -> NoReturn:
    raise invalid_syntax(
        f"The request body has the attribute {key[:100]!r} twice in one object "
        "(attribute names are case-insensitive, RFC 7643 §2.1)."
    )


def json_object(doc: Any, what: str = "The request body") -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise invalid_syntax(f"{what} must be a JSON object.")
    return doc


def send(resp: Response, result: Result) -> None:
    resp.status = result.status
    for k, v in result.headers.items():
        resp.set_header(k, v)
    if result.stream is not None:
        resp.content_type = SCIM_MEDIA_TYPE
        resp.stream = result.stream
    elif result.body is not None:
        resp.content_type = SCIM_MEDIA_TYPE
        resp.data = orjson.dumps(result.body)


# -- ETags (RFC 7644 §3.14, RFC 7232) -------------------------------------------------------------


def etag_versions(header: str | None) -> set[str] | None:
    """The opaque values of an If-Match / If-None-Match header ("*" kept); None if absent."""
    if header is None or not header.strip():
        return None
    out = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith(("W/", "w/")):
            tag = tag[2:]
        out.add(tag.strip().strip('"'))
    return out


#: A version no resource reaches (each write adds one). As a write's expected_version
#: it fails as a stale version does (412), after the core's own checks (404 first).
NO_VERSION = 2**63 - 1


async def expected_version(tags: set[str] | None, current: Callable[[], Awaitable[int]]) -> int:
    """The version a write must find (0: no check) under an If-Match (RFC 7644 §3.14).

    This service's ETags are its versions, positive integers. One version goes to the
    core as the write's expected_version, compared under the row lock; tags naming no
    version match nothing (NO_VERSION: still one call, so a resource that does not
    exist is 404 before 412, RFC 7232 §5). Only several versions need the current
    one, read with `current()`."""
    if tags is None or "*" in tags:
        return 0
    # 0 is no version (they start at 1) and, as the core's expected_version, would
    # mean "no check": such a tag matches nothing, like any other non-version.
    versions = {int(t) for t in tags if t.isascii() and t.isdigit() and len(t) < 19 and int(t) > 0}
    if len(versions) <= 1:
        return versions.pop() if versions else NO_VERSION
    now = await current()
    return now if now in versions else NO_VERSION


def matches_version(tags: set[str], version: int) -> bool:
    return "*" in tags or str(version) in tags
