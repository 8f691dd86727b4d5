"""Around every call of the service's own RPCs: errors become statuses (status.abort,
the one place), and each call's outcome is recorded (access line and metrics)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from identity_log.jsonlog import AccessLog

from ..context import CURRENT_CALL, CallRecord, RequestContext
from .auth import tenant_named
from .observability import Metrics
from .status import abort

if TYPE_CHECKING:  # generic only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

access = AccessLog("identity_service.access")


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
        else:  # a stream (Watch): service credentials only, no tenant's API token
            ctx = RequestContext.from_metadata(context.invocation_metadata())
            tenant, token = "", ""
        if token:
            actor = f"token:{token}"  # what the call was attributed to (see Caller)
        else:
            actor = f"{ctx.actor_kind}:{ctx.actor_id}" if ctx.actor_id else ctx.actor_kind
        fields = {
            "operation": short,
            "status": code_name,
            "duration_ms": round(elapsed * 1000, 3),
            "request_id": ctx.request_id,
            "tenant": tenant or tenant_named(request),
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
                record = CallRecord(
                    method, RequestContext.from_metadata(context.invocation_metadata())
                )
                token = CURRENT_CALL.set(record)
                ok = False
                try:
                    answer = await inner_uu(request, context)
                    ok = True
                    return answer
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await abort(context, exc, method)
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
                    await abort(context, exc, method)
                finally:
                    self._done(method, request, context, started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
