"""OpenTelemetry tracing of the core: a server span per RPC, continuing the caller's
W3C `traceparent` (the gateway sends it through its channel), and a client span per
SQL statement under it.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
set, or a tracer provider is handed in (tests): then, and only then, are the
opentelemetry packages imported, the interceptor installed and the engines' cursor
events listened to, so a core without tracing runs exactly the code it ran before
(BENCHMARKS.md, "Tracing off"). Spans go over OTLP/gRPC, configured by the standard
`OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, ...), batched
off the request path. The trace and span ids also go into the access line and every
other JSON log line written inside a traced call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from scim_identity_api.tracing import otlp_provider, trace_ids, trace_ids_in_logs

if TYPE_CHECKING:
    from sqlalchemy import Engine

    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

TRACER_NAME = "identity_service"
#: Where a statement's span waits in its connection's `info` for the statement's end.
_SPAN = "identity_service.tracing.span"

__all__ = ["TracingInterceptor", "install", "otlp_provider", "trace_ids", "trace_sql"]


def install(provider: trace.TracerProvider, db: Any, system: str) -> TracingInterceptor:
    """Tracing for one service: SQL spans on the database's engines, trace ids on the
    log lines; answers the interceptor that opens each call's span."""
    db.observe(lambda engine: trace_sql(engine, provider, system))
    trace_ids_in_logs()
    return TracingInterceptor(provider)


def _metadata_getter() -> Any:
    from opentelemetry.propagators.textmap import Getter  # noqa: PLC0415  # tracing on only

    class MetadataGetter(Getter[Any]):
        """W3C trace context from gRPC invocation metadata (keys are lower-case)."""

        def get(self, carrier: Any, key: str) -> list[str] | None:
            values = [
                v if isinstance(v, str) else v.decode("ascii", "replace")
                for k, v in carrier
                if k == key
            ]
            return values or None

        def keys(self, carrier: Any) -> list[str]:
            return [k for k, _ in carrier]

    return MetadataGetter()


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span around each call, child of the caller's traceparent, named and
    attributed per the OpenTelemetry RPC semantic conventions."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._getter = _metadata_getter()
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith("/grpc.health."):
            return handler  # probes every few seconds: not worth a trace
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _start(self, method: str, context: Context) -> Any:
        service, _, name = method.lstrip("/").rpartition("/")
        parent = propagate.extract(tuple(context.invocation_metadata() or ()), getter=self._getter)
        return self._tracer.start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )

    @staticmethod
    def _finish(span: Any, context: Context, failed: BaseException | None) -> None:
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed is not None else grpc.StatusCode.OK
        if isinstance(code, grpc.StatusCode):
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                with self._start(method, context) as span:
                    failed: BaseException | None = None
                    try:
                        return await inner_uu(request, context)
                    except BaseException as exc:
                        failed = exc
                        raise
                    finally:
                        self._finish(span, context, failed)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                with self._start(method, context) as span:
                    failed: BaseException | None = None
                    try:
                        async for item in inner_us(request, context):
                            yield item
                    except BaseException as exc:
                        failed = exc
                        raise
                    finally:
                        self._finish(span, context, failed)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def trace_sql(engine: Engine, provider: trace.TracerProvider, system: str) -> None:
    """A CLIENT span per statement the engine runs (the prepared statements too: they
    fire the same cursor events), named by its first keyword, with the statement's
    text (parameters are never recorded), per the database semantic conventions. The
    spans are leaves: started under the current span, never made current."""
    from sqlalchemy import event  # noqa: PLC0415  # tracing on only

    tracer = provider.get_tracer(TRACER_NAME)

    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split(None, 1)
        operation = words[0].upper() if words else "SQL"
        conn.info[_SPAN] = tracer.start_span(
            f"{operation} {system}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": system,
                "db.operation.name": operation,
                "db.query.text": statement,
            },
        )

    def after(conn: Any, *_: Any) -> None:
        span = conn.info.pop(_SPAN, None)
        if span is not None:
            span.end()

    def failed(exception_context: Any) -> None:
        conn = exception_context.connection
        span = conn.info.pop(_SPAN, None) if conn is not None else None
        if span is not None:
            error = type(exception_context.original_exception).__name__
            span.set_status(Status(StatusCode.ERROR, error))
            span.end()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)
