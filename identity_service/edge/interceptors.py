"""The one place domain errors become gRPC statuses.

A DomainError becomes its status code with an identity.v1.ErrorDetail packed
into the standard google.rpc.Status trailer; a lost database becomes
UNAVAILABLE; anything else is logged with its traceback and answered INTERNAL
without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from identity_log.jsonlog import AccessLog

from ..context import AUTHENTICATED_KEY, CURRENT_CALL, CallRecord, RequestContext
from ..errors import DomainError, Unavailable
from .observability import Metrics

log = logging.getLogger("identity_service.rpc")
access = AccessLog("identity_service.access")


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
    Handler = grpc.RpcMethodHandler[Any, Any]


async def _abort(context: Context, exc: BaseException, method: str) -> None:
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


def _authenticated(context: Context) -> tuple[str, str]:
    """(tenant id, token id) a call authenticated (its trailer, see servicers.Caller)."""
    for key, value in context.trailing_metadata() or ():
        if key == AUTHENTICATED_KEY:
            tenant, _, rest = str(value).partition(" ")
            return tenant, rest.partition(" ")[0]
    return "", ""


def _tenant_of(request: Any) -> str:
    # Requests name their tenant as tenant_id or (admin calls) a TenantRef, or leave it
    # to the bearer they pass (then the trailer says which); never log more.
    tenant_id = getattr(request, "tenant_id", "")
    if tenant_id:
        return str(tenant_id)
    ref = getattr(request, "tenant", None)
    if ref is not None and hasattr(ref, "WhichOneof") and ref.WhichOneof("ref"):
        return str(getattr(ref, ref.WhichOneof("ref")))
    op = getattr(request, "operation", None)
    return str(getattr(op, "tenant_id", "") or "")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Converts errors to statuses, and records each call's outcome (log + metrics)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        # Per-call work kept small (it runs on every call of the event loop): the
        # wrapped handler of each method and the labelled metric series are made once.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        self._handled: dict[tuple[str, str], Any] = {}
        self._series: dict[str, tuple[Any, Any, tuple[str, str, str]]] = {}
        #: The current trace and span ids for the access line (tracing.py), when on.
        self.trace_ids: Callable[[], dict[str, str]] | None = None

    def _method_series(self, method: str, grpc_type: str) -> tuple[Any, Any, tuple[str, ...]]:
        """(started counter, handling histogram, labels) of a method, made once."""
        series = self._series.get(method)
        if series is None:
            service, _, name = method.lstrip("/").rpartition("/")
            labels = (grpc_type, service, name)
            series = self._series[method] = (
                self.metrics.started.labels(*labels),
                self.metrics.handling.labels(*labels),
                labels,
            )
        return series

    def _done(
        self,
        method: str,
        request: Any,
        context: Context,
        started: float,
        *,
        record: CallRecord | None = None,
        ok: bool = False,
    ) -> None:
        """`record`: what the call told of itself (unary calls); `ok`: it returned an
        answer (our servicers set no status but by raising, so that is OK)."""
        if ok:
            code_name = "OK"
        else:
            code = context.code() or grpc.StatusCode.OK
            code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        elapsed = time.perf_counter() - started
        short = method.rsplit("/", 1)[-1]
        _, histogram, labels = self._series[method]
        counter = self._handled.get((method, code_name))
        if counter is None:
            counter = self._handled[method, code_name] = self.metrics.handled.labels(
                *labels, code_name
            )
        counter.inc()
        histogram.observe(elapsed)
        if not access.enabled():
            return
        if record is not None:
            ctx, tenant, token = record.ctx, record.tenant, record.token
        else:
            ctx = RequestContext.from_metadata(context.invocation_metadata())
            tenant, token = _authenticated(context)
        if token:
            actor = f"token:{token}"  # what the call was attributed to (see Caller)
        else:
            actor = f"{ctx.actor_kind}:{ctx.actor_id}" if ctx.actor_id else ctx.actor_kind
        fields = {
            "operation": short,
            "status": code_name,
            "duration_ms": round(elapsed * 1000, 3),
            "request_id": ctx.request_id,
            "tenant": tenant or _tenant_of(request),
            "actor": actor,
        }
        if self.trace_ids is not None:
            fields.update(self.trace_ids())
        access.write(f"{short} {code_name}", fields)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if method.startswith("/grpc."):
            return handler  # health and reflection: not the service's own calls
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        # On the aio server, behaviours are coroutines / async generators.
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            started_total = self._method_series(method, "unary")[0]

            async def unary_unary(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                started_total.inc()
                # The metadata, parsed once for the servicer and the access line.
                record = CallRecord(RequestContext.from_metadata(context.invocation_metadata()))
                token = CURRENT_CALL.set(record)
                ok = False
                try:
                    answer = await inner_uu(request, context)
                    ok = True
                    return answer
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, exc, method)
                finally:
                    CURRENT_CALL.reset(token)
                    self._done(method, request, context, started, record=record, ok=ok)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            stream_started = self._method_series(method, "server_stream")[0]

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                started = time.perf_counter()
                stream_started.inc()
                try:
                    async for item in inner_us(request, context):
                        yield item
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, exc, method)
                finally:
                    self._done(method, request, context, started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
