"""OpenTelemetry tracing shared by the services and the client: the OTLP tracer
provider, trace ids in JSON log lines, and W3C `traceparent` on outgoing calls.
Beside the contract (like env.py) because the core, the gateway and the client's
users all need it and the core imports nothing of the client.

Importing this module imports opentelemetry (the server distribution depends on it;
the client distribution offers it as the `tracing` extra). Nothing imports it unless
tracing is on (`scim_identity_api.env.otlp_traces_configured`, or a tracer provider
handed in), so a process without tracing runs none of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode


def otlp_provider(service_name: str) -> trace.TracerProvider:
    """A tracer provider that batches spans to the OTLP/gRPC endpoint of the
    environment (`OTEL_EXPORTER_OTLP_*`); `OTEL_SERVICE_NAME` and
    `OTEL_RESOURCE_ATTRIBUTES` override `service_name`. Make it in the process that
    traces (after any fork: the batching thread does not survive one)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": service_name}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def trace_ids() -> dict[str, str]:
    """The current span's ids as the JSON log lines carry them; {} outside a span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class TraceIdFilter(logging.Filter):
    """Adds trace_id / span_id to log records made inside a span (jsonlog writes a
    record's extra attributes as fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in trace_ids().items():
            setattr(record, key, value)
        return True


def trace_ids_in_logs() -> None:
    """Every handler on the root logger adds the current span's ids to its lines."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())


def _with_traceparent(details: grpc.aio.ClientCallDetails, span: Any) -> Any:
    """`details` whose metadata also carries the span's W3C trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()), *carrier.items())
    return details._replace(metadata=metadata)  # type: ignore[attr-defined]  # a namedtuple


class ClientTracingInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor
):
    """For `AsyncIdentityClient(interceptors=...)`: a CLIENT span per call, child of
    the current span and named and attributed per the OpenTelemetry RPC semantic
    conventions; the call carries the span's W3C `traceparent`, so the server's span
    continues the caller's trace."""

    def __init__(self, provider: trace.TracerProvider, tracer_name: str) -> None:
        self._tracer = provider.get_tracer(tracer_name)
        #: Stream calls' span-ending tasks, held until they end.
        self._ending: set[asyncio.Task[None]] = set()

    def _start(self, details: grpc.aio.ClientCallDetails) -> Any:
        method = details.method
        full = (method.decode() if isinstance(method, bytes) else str(method)).lstrip("/")
        service, _, name = full.rpartition("/")
        return self._tracer.start_span(
            full,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    @staticmethod
    async def _finish(span: Any, call: Any) -> None:
        """Ends `span` when `call` ends, however it ends, with its status code."""
        try:
            code = await call.code()
        except BaseException:
            span.end()
            raise
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    async def _intercept(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        span = self._start(details)
        try:
            call = await continuation(_with_traceparent(details, span), request)
        except BaseException:
            span.end()
            raise
        # The call goes back to the caller at once, as without tracing: awaiting it
        # here would keep a caller's cancellation (a client that hung up) from
        # reaching the call. The span ends beside it, when the call does.
        task = asyncio.get_running_loop().create_task(self._finish(span, call))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return call

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request)
