"""OpenTelemetry tracing of the gateway: a SERVER span per HTTP request (continuing a
caller's W3C `traceparent`), a CLIENT span per call to the core, whose `traceparent`
the core's span continues (`identity_service/edge/tracing.py`), down to its SQL.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
set (`Settings.tracing`), or a tracer provider is handed to `app.create_app` (tests):
then, and only then, is this module (and opentelemetry) imported, the ASGI wrapper put
around the app and the interceptor on the core channel. Each worker makes its own
provider after the fork (the batching thread does not survive one); spans go over
OTLP/gRPC as the standard `OTEL_*` variables say, and the worker's lifespan shutdown
flushes them. Trace and span ids go into the access line and every other JSON line
written inside a request.

Span attributes follow the HTTP semantic conventions: `http.request.method`,
`http.route` (the SCIM endpoint, as the metrics label it), `url.scheme`, `url.path`
(redacted like an error detail; the query, which may hold a filter's values, is never
recorded) and `http.response.status_code`. Health probes are not traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from scim_identity_api.tracing import (
    ClientTracingInterceptor,
    otlp_provider,
    trace_ids,
    trace_ids_in_logs,
)

from .errors import redact
from .guard import AsgiCallable, Message, Receive, Scope, Send
from .observability import http_method, log_trace_ids

TRACER_NAME = "scim_gateway"
SERVICE_NAME = "scim-gateway"
#: Liveness and readiness probes: every few seconds, not worth a trace.
UNTRACED = frozenset({"/healthz", "/readyz"})
#: Incoming headers a trace context is read from (W3C Trace Context).
_PROPAGATED = (b"traceparent", b"tracestate")

__all__ = ["TracingMiddleware", "client_interceptor", "install", "otlp_provider"]


def install() -> None:
    """Trace ids on this process's log lines (the access lines and the others)."""
    log_trace_ids(trace_ids)
    trace_ids_in_logs()


def client_interceptor(provider: trace.TracerProvider) -> ClientTracingInterceptor:
    """For the core channel: a CLIENT span per call, its traceparent in the metadata."""
    return ClientTracingInterceptor(provider, TRACER_NAME)


class TracingMiddleware:
    """ASGI: a SERVER span around each HTTP request (outermost, so requests the guard
    refuses are traced too, and the span is current for everything under it)."""

    def __init__(
        self,
        app: AsgiCallable,
        provider: trace.TracerProvider,
        route: Callable[[str], str],
        *,
        shutdown: bool = False,
    ) -> None:
        """`route`: the bounded label of a path; `shutdown`: the provider is this
        app's own, flushed and shut down at the lifespan's end."""
        self.app = app
        self._provider: Any = provider  # the SDK's (shutdown), not the API's
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._route = route
        self._shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._shutdown:
            await self.app(scope, receive, self._flushing(send))
            return
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in UNTRACED:
            await self.app(scope, receive, send)
            return
        method = http_method(str(scope.get("method", "")))
        route = self._route(path)
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in _PROPAGATED
        }
        parent = propagate.extract(carrier) if carrier else None
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self._tracer.start_as_current_span(
            f"{method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "url.scheme": str(scope.get("scheme", "http")),
                "url.path": redact(path[:2048]),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                if status:
                    span.set_attribute("http.response.status_code", status)
                if status >= 500:  # a client's error is not the server's (semconv)
                    span.set_status(Status(StatusCode.ERROR, str(status)))

    def _flushing(self, send: Send) -> Send:
        async def send_after_flush(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                # The spans still batched go out before the worker ends.
                await asyncio.to_thread(self._provider.shutdown)
            await send(message)

        return send_after_flush
