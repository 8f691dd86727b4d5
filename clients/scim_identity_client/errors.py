"""Typed exceptions for failed identity-service calls.

Every failure the core reports carries a gRPC status code and an
`identity.v1.ErrorDetail` (reason, field, ...) packed in the standard
`grpc-status-details-bin` trailer; `from_rpc_error` turns both into one of the
classes below, so callers branch on types, never on strings.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_status import rpc_status

from scim_identity_api.v1 import common_pb2

ErrorReason = common_pb2.ErrorReason


class IdentityError(Exception):
    """A call to the identity service failed."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        detail: common_pb2.ErrorDetail | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail if detail is not None else common_pb2.ErrorDetail()

    @property
    def reason(self) -> int:
        """The `identity.v1.ErrorReason` value (0 when the core gave none)."""
        return self.detail.reason

    @property
    def field(self) -> str:
        """The attribute or field at fault, when the core named one."""
        return self.detail.field

    def __str__(self) -> str:
        return self.message


class NotFound(IdentityError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(IdentityError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(IdentityError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class VersionMismatch(IdentityError):
    code = grpc.StatusCode.ABORTED


class FailedPrecondition(IdentityError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(IdentityError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(IdentityError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(IdentityError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(IdentityError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(IdentityError):
    """The service (or its database) cannot be reached; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


_BY_CODE: dict[grpc.StatusCode, type[IdentityError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        VersionMismatch,
        FailedPrecondition,
        OutOfRange,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
    )
}
_BY_CODE[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable


def from_rpc_error(err: grpc.RpcError) -> IdentityError:
    """The typed exception for a failed call (a grpc.Call that is also an RpcError)."""
    call: Any = err  # every RpcError raised by a call is also a grpc.Call
    code: grpc.StatusCode = call.code()
    message: str = call.details() or code.name.lower()
    detail = common_pb2.ErrorDetail()
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        status = None
    if status is not None:
        for any_detail in status.details:
            if any_detail.Is(common_pb2.ErrorDetail.DESCRIPTOR):
                any_detail.Unpack(detail)
                break
    cls = _BY_CODE.get(code, IdentityError)
    return cls(message, code=code, detail=detail)
