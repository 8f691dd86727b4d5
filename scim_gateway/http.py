"""Request/response plumbing shared by every resource: JSON bodies, ETags,
the per-request call facts, and the result type resources return."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import falcon
import orjson

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
    core checks it in that call's own transaction; the first answer tells which
    tenant and token it is (`learn`). A request that must know them before any
    core call (rate limits, /Bulk) or that made none asks with `authenticate()`.
    """

    __slots__ = (
        "_authenticator",
        "_secret",
        "_tenant_ref",
        "base_url",
        "memo",
        "request_id",
        "scope",
        "tenant_id",
        "token_id",
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
        scope: int | None = None,
        authenticator: Callable[[Call], None] | None = None,
    ) -> None:
        self.request_id = request_id
        #: e.g. "https://scim.example.com/scim/v2/acme": prefix of meta.location.
        self.base_url = base_url
        #: "" until the core said (see `authenticate`).
        self.tenant_id = tenant_id
        self.token_id = token_id
        #: identity.v1.TokenScope, None until known.
        self.scope = scope
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
        self.tenant_id, self.token_id, self.scope = who.tenant_id, who.token_id, who.scope

    def authenticate(self) -> None:
        """Makes sure the tenant and token are known (one AuthenticateToken call
        unless a core call already told); raises the SCIM error of a bad token."""
        if not self.authenticated and self._authenticator is not None:
            self._authenticator(self)

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
                request_id=self.request_id, actor_kind="token", actor_id=self.token_id
            )
        return CallContext(
            request_id=self.request_id,
            bearer=self._secret,
            tenant=self._tenant_ref,
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
    stream: Iterable[bytes] | None = None
    #: A remark for the operation's history record (e.g. member ids skipped).
    note: str = ""


def request_id(req: falcon.Request) -> str:
    given = (req.get_header(REQUEST_ID_HEADER) or "").strip()
    if given and len(given) <= MAX_REQUEST_ID and given.isprintable() and given.isascii():
        return given
    return secrets.token_hex(16)


def read_json(req: falcon.Request, max_bytes: int) -> Any:
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
    data = req.bounded_stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_big
    if not data.strip():
        raise invalid_syntax("The request body is empty; a JSON object is required.")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise invalid_syntax(f"The request body is not valid JSON: {exc}") from None
    _check_json(doc)
    return doc


def _check_json(doc: Any) -> None:
    """Refuses what no attribute can hold: nesting deeper than MAX_JSON_DEPTH, and
    the NUL character (PostgreSQL text cannot store it)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
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
                stack.extend((k, depth) for k in value)


def json_object(doc: Any, what: str = "The request body") -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise invalid_syntax(f"{what} must be a JSON object.")
    return doc


def send(resp: falcon.Response, result: Result) -> None:
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


def version_of(tags: set[str]) -> int | None:
    """The single version an If-Match names, when it names exactly one number."""
    if len(tags) != 1:
        return None
    (tag,) = tags
    # 0 is no version (they start at 1) and, as the core's expected_version,
    # would mean "no check": such a tag is compared, and fails, like any other.
    return int(tag) if tag.isdigit() and len(tag) < 19 and int(tag) > 0 else None


def matches_version(tags: set[str], version: int) -> bool:
    return "*" in tags or str(version) in tags
