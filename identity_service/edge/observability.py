"""Logs and metrics.

Logs are one JSON object per line (`IDENTITY_LOG_FORMAT=json`, the default; `text`
for people at a terminal), with the request id, tenant, operation, status and
duration of every RPC. Secrets never reach a log line: token secrets are read
only by AuthenticateToken and never logged.

Metrics are Prometheus, served on IDENTITY_METRICS_LISTEN (host:port; empty = off),
under the names the gRPC ecosystem's dashboards already know (go-grpc-prometheus,
py-grpc-prometheus): `grpc_server_started_total`, `grpc_server_handled_total` and
`grpc_server_handling_seconds`, labelled `grpc_type`, `grpc_service`, `grpc_method`
(and `grpc_code`), plus the process and Python runtime collectors
(`process_*`, `python_gc_*`, `python_info`).
"""

from __future__ import annotations

import logging

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from identity_log import jsonlog

# `*_created` series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client has no annotations


def configure_logging(fmt: str, level: str = "INFO") -> None:
    jsonlog.configure(fmt, level)
    # The health probe checks the schema every few seconds: keep Alembic quiet.
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Metrics:
    """The service's Prometheus metrics, on a registry of its own (tests run several
    services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own CPU, memory and file descriptors, and the interpreter's
        # garbage collector: the collectors prometheus_client registers by default,
        # shared (they read the process, not a registry's state).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started",
            "RPCs started on the server",
            labels,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure",
            [*labels, "grpc_code"],
            registry=self.registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time to answer an RPC (server streams: until the stream ends)",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "identity_watch_streams_active", "Watch streams open now", registry=self.registry
        )
        self.subscriber_lag = Gauge(
            "identity_watch_lag_revisions",
            "Largest gap between a tenant's revision and what a subscriber was sent",
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "identity_db_pool_connections_in_use",
            "Database connections checked out of the pool",
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "identity_db_pool_size", "Database connection pool size", registry=self.registry
        )
        self.serving = Gauge(
            "identity_serving", "1 while health says SERVING", registry=self.registry
        )

    def serve(self, listen: str) -> int:
        """Starts the /metrics HTTP endpoint; returns its port."""
        host, _, port = listen.rpartition(":")
        # An empty host binds every interface, as the operator asked (":9464").
        server, _thread = start_http_server(int(port), addr=host or "::", registry=self.registry)
        return int(server.server_port)
