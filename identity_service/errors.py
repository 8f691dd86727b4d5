"""Domain errors. Each carries its gRPC status code and an ErrorDetail reason;
one server interceptor (identity_service.edge.interceptors) turns them into statuses."""

from __future__ import annotations

import grpc

from scim_identity_api.v1 import common_pb2

R = common_pb2


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: int = R.ERROR_REASON_UNSPECIFIED

    def __init__(self, message: str, *, field: str = "", **detail: int | str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = detail

    def detail(self) -> common_pb2.ErrorDetail:
        # (the ignore below) extra is each error's own ErrorDetail fields, checked by the message
        return common_pb2.ErrorDetail(reason=self.reason, field=self.field, **self.extra)  # type: ignore[arg-type]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = R.ERROR_REASON_NOT_FOUND


class Conflict(DomainError):
    """A unique attribute clashes (RFC 7643 §2.2 uniqueness)."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = R.ERROR_REASON_UNIQUENESS


class VersionMismatch(DomainError):
    code = grpc.StatusCode.ABORTED
    reason = R.ERROR_REASON_VERSION_MISMATCH


class InvalidValue(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_INVALID_VALUE


class InvalidFilter(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_INVALID_FILTER


class InvalidCursor(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_INVALID_CURSOR


class Mutability(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_MUTABILITY


class TooMany(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_TOO_MANY


class LimitReached(DomainError):
    """A per-tenant limit (e.g. live tokens) is reached."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = R.ERROR_REASON_TOO_MANY


class ReplicaReadOnly(DomainError):
    """A write (or any RPC outside its role) sent to a stream replica."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class TenantInactive(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = R.ERROR_REASON_TENANT_INACTIVE


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = R.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = R.ERROR_REASON_PERMISSION_DENIED


class TokenScope(DomainError):
    """A tenant API token (passed as the call's bearer) whose scope forbids the call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = R.ERROR_REASON_TOKEN_SCOPE


class ManagedElsewhere(DomainError):
    """A change the tenant's policy reserves to another source (SCIM, or JIT sign-in).
    Its message is written for the administrator who made the request, and says
    where the change can be made: the gateway shows it as the 403's detail."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = R.ERROR_REASON_MANAGED_ELSEWHERE


class Compacted(DomainError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = R.ERROR_REASON_COMPACTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = R.ERROR_REASON_UNAVAILABLE


class InvalidPath(DomainError):
    """A PATCH path names no attribute the operation can apply to (RFC 7644 §3.5.2)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_INVALID_PATH


class NoTarget(DomainError):
    """A PATCH operation's value filter matches nothing to change (RFC 7644 §3.5.2)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = R.ERROR_REASON_NO_TARGET


class DeadlineExceeded(DomainError):
    """The call's deadline passed, or its caller went away, before its changes could
    be committed: they were rolled back (the caller's error answer is then true)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
