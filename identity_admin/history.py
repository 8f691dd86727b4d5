"""The operations history as the console shows it: the History page's filters (its
query parameters read into an `OperationQuery`, or refused with a message that says
what to fix: the page answers 400 and asks the core nothing), an operation as JSON,
and the API's history routes, which read the same filters. The filters are a GET
form, so a filtered view is a URL an admin can bookmark or send."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from google.protobuf import timestamp_pb2

from scim_identity_api.v1 import history_pb2 as H
from scim_identity_api.v1 import tenants_pb2
from scim_identity_client import OperationQuery
from scim_identity_client.errors import InvalidArgument, NotFound

from .api import INTEGER, STRING, TIME, ApiCall, ApiError, Param, Route, obj, time_json
from .console import NOT_FOUND, Console, whole_number

KINDS = {
    "create": H.OPERATION_KIND_CREATE,
    "read": H.OPERATION_KIND_READ,
    "update": H.OPERATION_KIND_UPDATE,
    "delete": H.OPERATION_KIND_DELETE,
    "search": H.OPERATION_KIND_SEARCH,
    "bulk": H.OPERATION_KIND_BULK,
}
KIND_NAMES = {v: k for k, v in KINDS.items()}
#: The resource types the gateway and the console record (others are accepted).
RESOURCE_TYPES = ("User", "Group", "Bulk", "Tenant", "Token", "Role", "Policy")
OUTCOMES = {
    "any": H.OUTCOME_FILTER_ANY,
    "success": H.OUTCOME_FILTER_SUCCESS,
    "error": H.OUTCOME_FILTER_ERROR,
}
SOURCES = {
    "any": H.OPERATION_SOURCE_ANY,
    "scim": H.OPERATION_SOURCE_SCIM,
    "token": H.OPERATION_SOURCE_API_TOKEN,
    "admin": H.OPERATION_SOURCE_ADMIN,
}
#: Operations per page.
PAGE_SIZE = 50
_RESOURCE_TYPE = re.compile(r"[A-Za-z][A-Za-z.]{0,31}")
#: A date, a date and time (the form's datetime-local: UTC), or RFC 3339 (the API's).
_WHEN = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)
#: What a request id may be: printable ASCII, as long as the gateway keeps (64).
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")
#: A page token is the id of the previous page's last record (a UUID), as is an
#: operation's id.
PAGE_TOKEN = OPERATION_ID = re.compile(r"[0-9a-fA-F-]{1,36}")


class BadFilter(ValueError):
    """A filter that is not one: its message says which and what to write."""


@dataclass(frozen=True)
class Filters:
    """The filters as the admin wrote them (to show the form again) and as a query."""

    kinds: tuple[str, ...] = ()
    resource_type: str = ""
    outcome: str = "any"
    status: str = ""
    since: str = ""
    until: str = ""
    request_id: str = ""
    source: str = "any"
    page: str = ""
    query: OperationQuery = field(default_factory=OperationQuery)

    @property
    def active(self) -> bool:
        return self.query != OperationQuery()

    def params(self, **changes: str) -> list[tuple[str, str]]:
        """The query parameters of this view (a page link: `page=...`)."""
        out = [("kind", k) for k in self.kinds]
        for name in ("resource_type", "outcome", "status", "since", "until", "request_id"):
            value = changes.get(name, getattr(self, name))
            if value and value != "any":
                out.append((name, value))
        if self.source != "any":
            out.append(("source", self.source))
        if changes.get("page"):
            out.append(("page", changes["page"]))
        return out


def _one(params: Mapping[str, Sequence[str]], name: str) -> str:
    values = params.get(name, ())
    if len(values) > 1:
        raise BadFilter(f"Give {name} once.")
    return values[0].strip() if values else ""


def _when(text: str, name: str) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    if not _WHEN.fullmatch(text):
        raise BadFilter(f"{name}: write a date and time as YYYY-MM-DD HH:MM (UTC).")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{name}: {text} is not a date and time.") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(moment)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise BadFilter(f"{name}: {text} is out of range.") from None
    return stamp


def parse(params: Mapping[str, Sequence[str]]) -> Filters:
    """The filters of a History URL's query parameters (each a list of values)."""
    unknown = set(params) - {
        "kind",
        "resource_type",
        "outcome",
        "status",
        "since",
        "until",
        "request_id",
        "source",
        "page",
    }
    if unknown:
        raise BadFilter(f"Unknown filter: {sorted(unknown)[0][:40]}.")
    kinds = tuple(dict.fromkeys(v.strip() for v in params.get("kind", ()) if v.strip()))
    for k in kinds:
        if k not in KINDS:
            raise BadFilter(f"kind must be one of {', '.join(KINDS)}.")
    resource_type = _one(params, "resource_type")
    if resource_type and not _RESOURCE_TYPE.fullmatch(resource_type):
        raise BadFilter("resource type: a name such as User or Group.")
    outcome = _one(params, "outcome") or "any"
    if outcome not in OUTCOMES:
        raise BadFilter("outcome must be any, success or error.")
    status = _one(params, "status")
    code = whole_number(status, most=599) if status else 0
    if code is None or (status and code < 100):
        raise BadFilter("HTTP status: a code from 100 to 599, such as 401.")
    source = _one(params, "source") or "any"
    if source not in SOURCES:
        raise BadFilter(f"source must be one of {', '.join(SOURCES)}.")
    request_id = _one(params, "request_id")
    if request_id and not _REQUEST_ID.fullmatch(request_id):
        raise BadFilter("request id: up to 64 printable characters, no spaces.")
    page = _one(params, "page")
    if page and not PAGE_TOKEN.fullmatch(page):
        raise BadFilter("That page link is not one the console made; start from the first page.")
    since_text, until_text = _one(params, "since"), _one(params, "until")
    since, until = _when(since_text, "from"), _when(until_text, "until")
    if since is not None and until is not None and until.ToDatetime() <= since.ToDatetime():
        raise BadFilter("until must be later than from.")
    return Filters(
        kinds=kinds,
        resource_type=resource_type,
        outcome=outcome,
        status=status,
        since=since_text,
        until=until_text,
        request_id=request_id,
        source=source,
        page=page,
        query=OperationQuery(
            kinds=tuple(KINDS[k] for k in kinds),
            resource_type=resource_type,
            outcome=OUTCOMES[outcome],
            since=since,
            until=until,
            request_id=request_id,
            status=code,
            source=SOURCES[source],
        ),
    )


def raw(params: Mapping[str, Sequence[str]]) -> Filters:
    """The filters as written, unchecked (to show a refused form again), no query."""

    def text(name: str, default: str = "") -> str:
        values = params.get(name, ())
        return values[0][:100] if values else default

    return Filters(
        kinds=tuple(k for k in params.get("kind", ()) if k in KINDS),
        resource_type=text("resource_type"),
        outcome=text("outcome", "any"),
        status=text("status"),
        since=text("since"),
        until=text("until"),
        request_id=text("request_id"),
        source=text("source", "any"),
    )


def status_text(status: int) -> str:
    """ "401 Unauthorized"."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


#: What an admin can do about the answers an IdP gets most.
ADVICE = {
    401: "The token is wrong, revoked or expired: generate one on the Connector page and "
    "paste it into your identity provider.",
    403: "Refused: the connector is inactive (activate it on the Connector page), the "
    "token's scope does not allow this, or the tenant's policy reserves it (the detail "
    "says which).",
    404: "Not found: the URL names no tenant or resource, or this tenant has Groups turned off.",
    409: "A conflict: a user or group with the same unique value exists already.",
    429: "Too many requests: the identity provider should slow down and retry.",
}


#: Template filters of the history's pages.
FILTERS = {"status_text": status_text, "kind": lambda k: KIND_NAMES.get(k, "?")}


async def page(
    console: Console, t: tenants_pb2.Tenant, filters: Filters, size: int = PAGE_SIZE
) -> H.ListOperationsResponse:
    """A page of the tenant's history; a page token the core no longer knows (its
    record passed retention) is a BadFilter too."""
    try:
        return await console.core.list_operations(
            t.id, filters.query, page_size=size, page_token=filters.page
        )
    except InvalidArgument:
        raise BadFilter(STALE_PAGE) from None


STALE_PAGE = (
    "That page of the history is gone (its records passed the retention period). "
    "Start again from the first page."
)


async def operation(console: Console, t: tenants_pb2.Tenant, operation_id: str) -> H.Operation:
    """One operation of the tenant; 404 for any id that names none of its own."""
    if not OPERATION_ID.fullmatch(operation_id):
        raise NOT_FOUND
    try:
        return await console.core.get_operation(t.id, operation_id)
    except (NotFound, InvalidArgument):
        raise NOT_FOUND from None


async def token_prefixes(console: Console, t: tenants_pb2.Tenant) -> dict[str, str]:
    """Every token the tenant had (revoked ones too), id → prefix."""
    return {k.id: k.prefix for k in await console.core.list_tokens(t.id, include_inactive=True)}


def operation_json(op: H.Operation, prefixes: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": op.id,
        "time": time_json(op.time),
        "method": op.method,
        "kind": KIND_NAMES.get(op.kind, "unspecified"),
        "resource_type": op.resource_type,
        "resource_id": op.resource_id,
        "status": op.status,
        "scim_type": op.scim_type,
        "detail": op.detail,
        "duration_ms": op.duration_ms,
        "request_id": op.request_id,
        "actor": op.actor,
        "token": {"id": op.token_id, "prefix": prefixes.get(op.token_id, "")}
        if op.token_id
        else None,
    }


# -- the API ---------------------------------------------------------------------------------

OPERATION = obj(
    {
        "id": STRING,
        "time": TIME,
        "method": STRING,
        "kind": {"enum": [*KINDS, "unspecified"]},
        "resource_type": STRING,
        "resource_id": STRING,
        "status": {**INTEGER, "description": "The HTTP status answered."},
        "scim_type": {**STRING, "description": "The SCIM error's scimType, when any."},
        "detail": {**STRING, "description": "The error's detail, or what was done."},
        "duration_ms": {"type": "number"},
        "request_id": STRING,
        "actor": {**STRING, "description": "Who acted when no token did (an admin)."},
        "token": {
            "oneOf": [obj({"id": STRING, "prefix": STRING}), {"type": "null"}],
            "description": "The API token the request was made with, when it was the tenant's.",
        },
    }
)
_KIND_LIST = "|".join(KINDS)
API_PAGE_SIZE = 200
QUERY = (
    Param(
        "kind",
        {"type": "string", "pattern": f"^({_KIND_LIST})(,({_KIND_LIST}))*$"},
        "Kinds, comma-separated (e.g. create,update).",
    ),
    Param("resource_type", {"type": "string", "maxLength": 32}, "e.g. User, Group, Bulk."),
    Param("outcome", {"enum": list(OUTCOMES)}, "success (status < 400) or error."),
    Param(
        "status",
        {"type": "integer", "minimum": 100, "maximum": 599},
        "An exact HTTP status, e.g. 401.",
    ),
    Param(
        "source",
        {"enum": list(SOURCES)},
        "scim: SCIM requests; token: those made with one of the tenant's API tokens; "
        "admin: admins' actions.",
    ),
    Param("since", {"type": "string", "maxLength": 40}, "From this time (RFC 3339), inclusive."),
    Param("until", {"type": "string", "maxLength": 40}, "Before this time (RFC 3339)."),
    Param("request_id", {"type": "string", "maxLength": 64}, "An exact request id."),
    Param(
        "page_token", {"type": "string", "maxLength": 36}, "The previous page's next_page_token."
    ),
    Param(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": API_PAGE_SIZE},
        f"Operations per page (default {PAGE_SIZE}).",
    ),
)


async def list_operations(call: ApiCall) -> dict[str, Any]:
    q = call.query
    raw = {
        name: [str(q[name])]
        for name in ("resource_type", "outcome", "status", "source", "since", "until", "request_id")
        if name in q
    }
    if q.get("kind"):
        raw["kind"] = q["kind"].split(",")
    if q.get("page_token"):
        raw["page"] = [q["page_token"]]
    try:
        filters = parse(raw)
        found = await page(call.console, call.tenant, filters, q.get("page_size", PAGE_SIZE))
    except BadFilter as err:
        raise ApiError(422, str(err)) from None
    prefixes = await token_prefixes(call.console, call.tenant)
    return {
        "operations": [operation_json(op, prefixes) for op in found.operations],
        "next_page_token": found.next_page_token or None,
    }


async def get_operation(call: ApiCall) -> dict[str, Any]:
    op = await operation(call.console, call.tenant, call.params["operation_id"])
    return operation_json(op, await token_prefixes(call.console, call.tenant))


ROUTES = (
    Route(
        "GET",
        "/tenants/{tenant}/operations",
        "The operations history, filtered, newest first",
        list_operations,
        obj(
            {
                "operations": {"type": "array", "items": OPERATION},
                "next_page_token": {"type": ["string", "null"]},
            }
        ),
        query=QUERY,
        tag="history",
        description="Every SCIM request of the tenant's IdP and every admin action, "
        "with the History page's filters. A page past the first is asked for with the "
        "previous page's `next_page_token` and the same filters.",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/operations/{operation_id}",
        "One operation: its detail and error",
        get_operation,
        OPERATION,
        path_params={"operation_id": "The operation's id."},
        tag="history",
    ),
)
