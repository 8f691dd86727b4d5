"""The one place domain errors become gRPC statuses.

A DomainError becomes its status code with an identity.v1.ErrorDetail packed
into the standard google.rpc.Status trailer; a lost database becomes
UNAVAILABLE; anything else is logged with its traceback and answered INTERNAL
without one. Used by the interceptors (interceptors.py, auth.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..errors import DomainError, Unavailable

log = logging.getLogger("identity_service.rpc")


def _as_domain(exc: BaseException) -> DomainError | None:
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, (OperationalError, PoolTimeout)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return Unavailable("the identity database is unavailable; retry shortly")
    return None


if TYPE_CHECKING:  # generic only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]


async def abort(context: Context, exc: BaseException, method: str) -> None:
    """Ends the call with the status `exc` stands for."""
    err = _as_domain(exc)
    if err is None:
        log.exception("unhandled error in %s", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
        return
    if isinstance(err, Unavailable) and err is not exc:
        log.warning("database unavailable in %s: %s", method, type(exc).__name__)
    detail = any_pb2.Any()
    detail.Pack(err.detail())
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
    # Keep what the call already set (the authenticated tenant and token).
    kept = tuple(context.trailing_metadata() or ())
    await context.abort(
        err.code,
        err.message,
        trailing_metadata=(*kept, ("grpc-status-details-bin", status.SerializeToString())),
    )
