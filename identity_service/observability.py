"""Logs and metrics.

Logs are one JSON object per line (`IDENTITY_LOG_FORMAT=json`, the default; `text`
for people at a terminal), with the request id, tenant, operation, status and
duration of every RPC. Secrets never reach a log line: token secrets are read
only by AuthenticateToken and never logged.

Metrics are Prometheus, served on IDENTITY_METRICS_LISTEN (host:port; empty = off).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

# `*_created` series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: LogRecord attributes that are not the caller's structured fields.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(
            (k, v)
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(fmt: str, level: str = "INFO") -> None:
    lean_records()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The health probe checks the schema every few seconds: keep Alembic quiet.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def lean_records() -> None:
    """Every call writes an access line: skip what building a LogRecord would
    gather that no line shows (the caller's file and line, the thread's name),
    as the logging documentation's "Optimization" section describes."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


class Metrics:
    """The service's Prometheus metrics, on a registry of its own (tests run several
    services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "identity_rpc_requests",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "identity_rpc_duration_seconds",
            "Time to answer a unary RPC (streams: time to set up), by method",
            ["method"],
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
