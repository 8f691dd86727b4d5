"""SCIM errors (RFC 7644 §3.12) and the one table from core failures to HTTP.

`ScimError` is what every layer of the gateway raises for a request it refuses;
the app's single error handler renders it. Failures of the identity core arrive
as `scim_identity_client.errors.IdentityError` (gRPC code + `identity.v1.ErrorReason`)
and are translated by `from_identity_error` through `_CORE_TABLE`, the only place
that knows how core failures look over HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from scim_identity_api.v1 import common_pb2
from scim_identity_client.errors import IdentityError

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"

# scimType values of RFC 7644 §3.12, Table 9, and RFC 9865 §4 (cursors).
INVALID_FILTER = "invalidFilter"
TOO_MANY = "tooMany"
UNIQUENESS = "uniqueness"
MUTABILITY = "mutability"
INVALID_SYNTAX = "invalidSyntax"
INVALID_PATH = "invalidPath"
NO_TARGET = "noTarget"
INVALID_VALUE = "invalidValue"
INVALID_VERS = "invalidVers"
SENSITIVE = "sensitive"
INVALID_CURSOR = "invalidCursor"


# What a bearer secret looks like: the core issues tenant tokens as "scim_" and
# 43 url-safe characters (identity_service TOKEN_PREFIX; tests/security checks
# the two agree) and service credentials as "svc-<role>-...". Anything of that
# shape in text the gateway echoes or records is a leaked credential, whoever's.
_SECRET_SHAPE = re.compile(r"(?:scim_|svc-[a-z]+-)[A-Za-z0-9_\-]{8,}")
REDACTED = "[redacted]"


def redact(text: str, presented: str = "") -> str:
    """`text` with the presented bearer secret and anything shaped like a bearer
    secret replaced, for error details and history records (a filter or a path
    segment may quote a token; RFC 6750 §5.3: bearer tokens must not leak)."""
    if presented and presented in text:
        text = text.replace(presented, REDACTED)
    return _SECRET_SHAPE.sub(REDACTED, text)


class ScimError(Exception):
    """A request the gateway answers with a SCIM error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        scim_type: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = dict(headers or {})

    def body(self, presented: str = "") -> dict[str, Any]:
        """The error JSON; `status` is a string (RFC 7644 §3.12). The detail may
        quote the request, so it never carries `presented` (the caller's bearer
        secret) nor anything shaped like a secret."""
        doc: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status)}
        if self.scim_type:
            doc["scimType"] = self.scim_type
        doc["detail"] = redact(self.detail, presented)
        return doc

    def __repr__(self) -> str:
        return f"ScimError({self.status}, {self.detail!r}, {self.scim_type!r})"


def bad_request(detail: str, scim_type: str) -> ScimError:
    return ScimError(400, detail, scim_type)


def invalid_filter(detail: str) -> ScimError:
    return ScimError(400, detail, INVALID_FILTER)


def invalid_path(detail: str) -> ScimError:
    return ScimError(400, detail, INVALID_PATH)


def invalid_value(detail: str) -> ScimError:
    return ScimError(400, detail, INVALID_VALUE)


def invalid_syntax(detail: str) -> ScimError:
    return ScimError(400, detail, INVALID_SYNTAX)


def mutability(detail: str) -> ScimError:
    return ScimError(400, detail, MUTABILITY)


def no_target(detail: str) -> ScimError:
    return ScimError(400, detail, NO_TARGET)


def not_found(detail: str) -> ScimError:
    return ScimError(404, detail)


_R = common_pb2.ErrorReason
_C = grpc.StatusCode
_ANY = -1

# (gRPC code, ErrorReason or _ANY) -> (HTTP status, scimType). Looked up with
# the exact reason first, then with _ANY. RFC 7644 §3.12 gives the statuses.
_CORE_TABLE: dict[tuple[grpc.StatusCode, int], tuple[int, str | None]] = {
    (_C.NOT_FOUND, _ANY): (404, None),
    (_C.ALREADY_EXISTS, _ANY): (409, UNIQUENESS),
    # Only reached when the client sent If-Match (RFC 7644 §3.14): writes without
    # it never state a version (PATCH is applied under the core's row lock).
    (_C.ABORTED, _ANY): (412, None),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_INVALID_FILTER): (400, INVALID_FILTER),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_MUTABILITY): (400, MUTABILITY),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_INVALID_PATH): (400, INVALID_PATH),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_NO_TARGET): (400, NO_TARGET),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_TOO_MANY): (400, TOO_MANY),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_INVALID_CURSOR): (400, INVALID_CURSOR),
    (_C.INVALID_ARGUMENT, _R.ERROR_REASON_UNIQUENESS): (409, UNIQUENESS),
    (_C.INVALID_ARGUMENT, _ANY): (400, INVALID_VALUE),
    (_C.OUT_OF_RANGE, _ANY): (400, INVALID_VALUE),
    (_C.RESOURCE_EXHAUSTED, _R.ERROR_REASON_TOO_MANY): (400, TOO_MANY),
    (_C.RESOURCE_EXHAUSTED, _ANY): (429, None),
    (_C.FAILED_PRECONDITION, _R.ERROR_REASON_TENANT_INACTIVE): (403, None),
    (_C.FAILED_PRECONDITION, _ANY): (409, INVALID_VALUE),
    (_C.UNAUTHENTICATED, _ANY): (401, None),
    (_C.PERMISSION_DENIED, _ANY): (403, None),
    (_C.PERMISSION_DENIED, _R.ERROR_REASON_TOKEN_SCOPE): (403, None),
    (_C.UNAVAILABLE, _ANY): (503, None),
    # The request's deadline passed (SCIM_REQUEST_TIMEOUT_SECONDS): the core
    # commits nothing past the point where its answer could still arrive in time.
    (_C.DEADLINE_EXCEEDED, _ANY): (504, None),
}

# Details a person can act on, for failures whose core message is not meant
# for an IdP administrator.
_DETAILS: dict[int, str] = {
    401: "The bearer token is missing, unknown, revoked or expired, or not valid for "
    "this tenant. Issue a token for this tenant and configure it in the IdP.",
    403: "This token is not allowed to perform this operation.",
    412: "The resource has changed: its version does not match If-Match. "
    "Read it again and retry with the current ETag.",
    503: "The identity service is temporarily unavailable; retry later.",
    504: "The request could not be completed in time and was not carried out; retry it.",
}

RETRY_AFTER_SECONDS = "5"


def classify(code: grpc.StatusCode, reason: int) -> tuple[int, str | None]:
    """HTTP status and scimType for a core failure; (500, None) when unknown."""
    return _CORE_TABLE.get((code, reason)) or _CORE_TABLE.get((code, _ANY)) or (500, None)


def from_identity_error(err: IdentityError) -> ScimError:
    """The SCIM error the client sees for a failed core call."""
    status, scim_type = classify(err.code, err.reason)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scim"'
        detail = _DETAILS[401]
    elif status == 403 and err.reason == _R.ERROR_REASON_TENANT_INACTIVE:
        detail = (
            "SCIM provisioning is turned off for this tenant (the connector is "
            "inactive). Activate the connector, then retry."
        )
    elif status == 403 and err.reason in (
        _R.ERROR_REASON_TOKEN_SCOPE,
        _R.ERROR_REASON_MANAGED_ELSEWHERE,
    ):
        # Written for the IdP administrator: the scope, or where the change belongs
        # (Panther: "the user must sign in first").
        detail = err.message
    elif status in (403, 412):
        detail = _DETAILS[status]
    elif status in (503, 504):
        headers["Retry-After"] = RETRY_AFTER_SECONDS
        detail = _DETAILS[status]
    elif status == 500:
        detail = "Internal error."
    else:
        detail = err.message or "The request was refused."
        if err.field and err.field not in detail:
            detail = f"{detail} (attribute: {err.field})"
    return ScimError(status, detail, scim_type, headers=headers)


@contextmanager
def core_errors() -> Iterator[None]:
    """Turns a failed core call inside the block into the client's SCIM error."""
    try:
        yield
    except IdentityError as err:
        raise from_identity_error(err) from None
