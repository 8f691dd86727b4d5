"""Typed Python client of the identity service (identity.v1 over gRPC)."""

from ._common import Authenticated, CallContext, OperationQuery
from .aio import AsyncIdentityClient
from .checkpoint import Checkpoint, FileCheckpoint, MemoryCheckpoint, SqliteCheckpoint
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
from .watch import AsyncWatchIterator, Backoff, WatchIterator, event_name, event_type

__all__ = [
    "AlreadyExists",
    "AsyncIdentityClient",
    "AsyncWatchIterator",
    "Authenticated",
    "Backoff",
    "CallContext",
    "Checkpoint",
    "FailedPrecondition",
    "FileCheckpoint",
    "IdentityClient",
    "IdentityError",
    "InvalidArgument",
    "MemoryCheckpoint",
    "NotFound",
    "OperationQuery",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "SqliteCheckpoint",
    "Unauthenticated",
    "Unavailable",
    "VersionMismatch",
    "WatchIterator",
    "event_name",
    "event_type",
]
