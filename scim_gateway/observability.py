"""Gateway logs and metrics.

Logs: one JSON object per line (SCIM_LOG_FORMAT=json, the default; `text` for a
terminal). Every SCIM request gets an access line with its request id, tenant,
operation, status and duration, and its trace and span ids while tracing is on
(tracing.py). Bearer tokens never reach a log line.

Metrics: Prometheus, on a port of their own (SCIM_METRICS_LISTEN; off unless set),
never on the SCIM port. The HTTP metrics carry OpenTelemetry's semantic-convention
names, as its Prometheus exporter writes them, so stock HTTP dashboards read them:
`http_server_request_duration_seconds{http_request_method,http_route,
http_response_status_code}` and `http_server_active_requests{http_request_method,
url_scheme}`; `http_route` is the SCIM endpoint (`Users`, `Groups`, ...), never an id
or a tenant. gunicorn runs several worker processes, so the workers keep their
series in prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, which
`scim-gateway` creates) and gunicorn's master serves them, summed (`serve_metrics`),
with its own process and Python runtime collectors (`process_*`, `python_*`) and each
live worker's resident memory and CPU time (`scim_gateway_worker_*{pid}`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from identity_log import jsonlog
from identity_log.jsonlog import AccessLog

#: The methods OpenTelemetry's HTTP conventions name (RFC 9110, and PATCH); any other
#: token is `_OTHER`, so a client cannot mint series or span names.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
#: OpenTelemetry's advised bucket boundaries for http.server.request.duration (s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
access = AccessLog("scim_gateway.access")
#: The current span's ids for the access line, once tracing is on (tracing.install).
_trace_ids: Callable[[], dict[str, str]] | None = None


def configure_logging(fmt: str) -> None:
    jsonlog.configure(fmt)


def log_trace_ids(ids: Callable[[], dict[str, str]]) -> None:
    """Access lines carry what `ids` answers (the current span's trace and span ids)."""
    global _trace_ids  # noqa: PLW0603 - one hook per process, set once by tracing
    _trace_ids = ids


def http_method(method: str) -> str:
    """The request's method as metrics and spans label it (`_OTHER` if unknown)."""
    return method if method in _METHODS else "_OTHER"


class Metrics:
    """A worker's HTTP metrics: in the multiprocess files under gunicorn (served by
    the master), else on a registry of its own (apps built in code, tests)."""

    def __init__(self) -> None:
        multiprocess_mode = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        registry = None if multiprocess_mode else self.registry
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        #: Requests being answered (guard.Guard counts them; SCIM_MAX_CONCURRENCY
        #: bounds each worker's share); summed over the live workers.
        self.active = Gauge(
            "http_server_active_requests",
            "Number of active HTTP server requests",
            ["http_request_method", "url_scheme"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        # The labelled series are made once (labels() takes a lock and builds a key).
        self._durations: dict[tuple[str, str, int], Any] = {}
        self._active: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._durations.get(key)
        if series is None:
            series = self._durations[key] = self.duration.labels(
                http_method(method), route, str(status)
            )
        series.observe(seconds)

    def active_requests(self, method: str, scheme: str) -> Any:
        """The gauge of requests in flight with this method and scheme (inc/dec)."""
        key = (method, scheme)
        series = self._active.get(key)
        if series is None:
            series = self._active[key] = self.active.labels(http_method(method), scheme)
        return series


class WorkerCollector(Collector):
    """Each live gunicorn worker's resident memory and CPU time, read by the master
    from /proc at scrape time (multiprocess mode has no per-process collector)."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def collect(self) -> Iterator[Metric]:
        rss = GaugeMetricFamily(
            "scim_gateway_worker_resident_memory_bytes",
            "Resident memory of each gunicorn worker, in bytes",
            labels=["pid"],
        )
        cpu = CounterMetricFamily(
            "scim_gateway_worker_cpu_seconds",
            "User and system CPU time of each gunicorn worker, in seconds",
            labels=["pid"],
        )
        for pid in list(self._pids()):
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                    stat = f.read()
            except OSError:
                continue  # gone, or no /proc (not Linux)
            # Fields after the command name (which may hold spaces): state is field 3.
            fields = stat.rpartition(")")[2].split()
            utime, stime, pages = int(fields[11]), int(fields[12]), int(fields[21])
            rss.add_metric([str(pid)], pages * self._page)
            cpu.add_metric([str(pid)], (utime + stime) / self._ticks)
        yield rss
        yield cpu


def serve_metrics(listen: str, worker_pids: Callable[[], Iterable[int]]) -> Any:
    """In gunicorn's master: serves /metrics on `listen` (host:port) from a thread,
    summing the workers' multiprocess files, with the master's process and runtime
    collectors and the workers' own memory and CPU. Answers the HTTP server."""
    registry = CollectorRegistry()
    # (the ignore below) prometheus_client has no annotations
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    registry.register(WorkerCollector(worker_pids))
    host, _, port = listen.rpartition(":")
    # An empty host binds every interface, as the operator asked (":9465").
    server, _thread = start_http_server(int(port), addr=host or "::", registry=registry)
    return server


def log_request(
    *, request_id: str, tenant: str, operation: str, status: int, duration_ms: float, token_id: str
) -> None:
    if not access.enabled():
        return
    fields: dict[str, Any] = {
        "request_id": request_id,
        "tenant": tenant,
        "operation": operation,
        "status": status,
        "duration_ms": round(duration_ms, 3),
        "token_id": token_id,
    }
    if _trace_ids is not None:
        fields.update(_trace_ids())
    access.write(f"{operation} {status}", fields)
