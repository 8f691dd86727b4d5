"""Typed Python client of the identity service (identity.v1 over gRPC)."""

from ._common import CallContext
from .client import IdentityClient
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    IdentityError,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VersionMismatch,
)

__all__ = [
    "AlreadyExists",
    "CallContext",
    "FailedPrecondition",
    "IdentityClient",
    "IdentityError",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "VersionMismatch",
]
