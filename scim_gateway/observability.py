"""Gateway logs and metrics.

Logs: one JSON object per line (SCIM_LOG_FORMAT=json, the default; `text` for a
terminal). Every SCIM request gets an access line with its request id, tenant,
operation, status and duration. Bearer tokens never reach a log line.

Metrics: Prometheus at GET /metrics. gunicorn runs several worker processes, so
counters are kept in prometheus_client's multiprocess files (the directory named by
PROMETHEUS_MULTIPROC_DIR, which `scim-gateway` creates) and /metrics, answered by
any worker, adds them up.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from falcon.asgi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from identity_log import jsonlog
from identity_log.jsonlog import AccessLog

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
access = AccessLog("scim_gateway.access")


def configure_logging(fmt: str) -> None:
    jsonlog.configure(fmt)


class Metrics:
    def __init__(self) -> None:
        # Multiprocess mode writes to files; a private registry keeps test apps apart.
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scim_requests",
            "SCIM requests answered, by method, endpoint and HTTP status",
            ["method", "endpoint", "status"],
            registry=None if self._multiprocess else self.registry,
        )
        self.latency = Histogram(
            "scim_request_duration_seconds",
            "Time to answer a SCIM request, by method and endpoint",
            ["method", "endpoint"],
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=None if self._multiprocess else self.registry,
        )
        #: Requests being answered (guard.Guard counts them; SCIM_MAX_CONCURRENCY
        #: bounds each worker's share).
        self.in_flight = Gauge(
            "scim_requests_in_flight",
            "SCIM requests being answered now, summed over the gateway's workers",
            registry=None if self._multiprocess else self.registry,
            multiprocess_mode="livesum",
        )
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        # The labelled series are made once (labels() takes a lock and builds a key).
        # Any token is an HTTP method: unknown ones share one label (bounded series).
        if method not in _METHODS:
            method = "OTHER"
        key = (method, endpoint, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(method, endpoint, str(status)),
                self.latency.labels(method, endpoint),
            )
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        if self._multiprocess:
            registry = CollectorRegistry()
            # (the ignore below) prometheus_client has no annotations
            # (the ignore below) prometheus_client has no annotations
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsResource:
    """GET /metrics (Prometheus text format)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        # In multiprocess mode this reads every worker's files: off the event loop.
        resp.data = await asyncio.to_thread(self._metrics.exposition)


def log_request(
    *, request_id: str, tenant: str, operation: str, status: int, duration_ms: float, token_id: str
) -> None:
    if not access.enabled():
        return
    access.write(
        f"{operation} {status}",
        {
            "request_id": request_id,
            "tenant": tenant,
            "operation": operation,
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "token_id": token_id,
        },
    )
