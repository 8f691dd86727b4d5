"""The gateway's metrics and traces, from real processes (gunicorn with 2 uvicorn
workers in front of a real `identity-service`).

Metrics: on SCIM_METRICS_LISTEN, served by gunicorn's master and summed over the
workers, under OpenTelemetry's HTTP semantic-convention names, with the master's
process and runtime collectors and each worker's memory; the SCIM port has no
/metrics. Traces: both processes export over OTLP/gRPC to a collector this test runs,
and one SCIM request makes one trace: the gateway's server span, its client span for
the core call, the core's server span under it (continued from the W3C `traceparent`
the call carried) and the core's SQL spans under that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from scim_identity_client import IdentityClient

from ..support import (
    ROOT,
    eventually,
    free_port,
    http_request,
    scrape,
    start_gateway_process,
    start_identity_process,
    value,
)

pytestmark = pytest.mark.e2e

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT


def _tenant(target: str, name: str) -> tuple[str, str]:
    with IdentityClient(target) as admin:
        t = admin.create_tenant(f"{name}-{free_port()}")
        return t.name, admin.issue_token(t.id).secret


def _create_user(port: int, tenant: str, token: str, user_name: str) -> tuple[str, str]:
    """POSTs a user through the gateway; answers its id and the request id."""
    status, headers, body = http_request(
        port,
        "POST",
        f"/scim/v2/{tenant}/Users",
        token=token,
        body=json.dumps({"userName": user_name}).encode(),
    )
    assert status == 201, body
    return json.loads(body)["id"], headers["x-request-id"]


def test_metrics_on_their_own_port_under_the_http_semantic_conventions(tmp_path: Path) -> None:
    core_metrics = free_port()
    core, target = start_identity_process(
        f"sqlite:///{tmp_path / 'identity.db'}",
        tmp_path,
        IDENTITY_METRICS_LISTEN=f"127.0.0.1:{core_metrics}",
    )
    metrics_port = free_port()
    gateway, port = start_gateway_process(
        target, tmp_path, SCIM_METRICS_LISTEN=f"127.0.0.1:{metrics_port}"
    )
    try:
        tenant, token = _tenant(target, "metered")
        user_id, _ = _create_user(port, tenant, token, "metered@example.com")
        assert http_request(port, "GET", f"/scim/v2/{tenant}/Users/{user_id}", token=token)[0] == (
            200
        )
        missing = f"/scim/v2/{tenant}/Users/00000000-0000-0000-0000-000000000000"
        assert http_request(port, "GET", missing, token=token)[0] == 404
        # The SCIM port serves no metrics.
        status, _, body = http_request(port, "GET", "/metrics")
        assert status == 404 and b"http_server" not in body

        m = scrape(metrics_port)
        duration = "http_server_request_duration_seconds"
        requests = m[f"{duration}_count"]

        def count(method: str, status: str) -> float:
            return value(
                requests,
                http_request_method=method,
                http_route="Users",
                http_response_status_code=status,
            )

        # Summed over both workers, whichever answered.
        assert count("POST", "201") == 1
        assert count("GET", "200") == 1
        assert count("GET", "404") == 1
        assert any(
            lab.get("le") == "+Inf" and lab.get("http_route") == "Users"
            for lab, _ in m[f"{duration}_bucket"]
        )
        # Bounded labels: endpoints, never a tenant or an id.
        labels = {v for lab, _ in requests for v in lab.values()}
        assert not {tenant, user_id} & labels
        assert {lab["http_route"] for lab, _ in requests} <= {"Users", "health", "other"}
        # Back to 0 once every request has ended: a worker counts its request out after
        # the response went, so a scrape right after the last answer may still see it.
        eventually(
            lambda: value(scrape(metrics_port)["http_server_active_requests"]) == 0,
            what="no request in flight",
        )
        # The master's process and runtime collectors, and each worker's memory.
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
            assert name in m, name
        workers = m["scim_gateway_worker_resident_memory_bytes"]
        assert len(workers) == 2 and all(v > 1_000_000 for _, v in workers)
        assert len(m["scim_gateway_worker_cpu_seconds_total"]) == 2
        # The old names are gone.
        assert not any(name.startswith("scim_request") for name in m)

        # The core's side of the same requests, under the gRPC ecosystem's names.
        core_m = scrape(core_metrics)
        assert (
            value(
                core_m["grpc_server_handled_total"],
                grpc_service="identity.v1.UserService",
                grpc_method="CreateUser",
                grpc_code="OK",
            )
            == 1
        )
    finally:
        assert gateway.stop() == 0, gateway.output()
        core.stop()


def test_without_metrics_listen_no_metrics_are_served(tmp_path: Path) -> None:
    """The default: nothing listens for metrics, and the SCIM port answers 404."""
    gateway, port = start_gateway_process("127.0.0.1:9", tmp_path, SCIM_WORKERS="1")
    try:
        assert http_request(port, "GET", "/metrics")[0] == 404
        assert "Metrics at" not in gateway.output()
    finally:
        assert gateway.stop() == 0, gateway.output()


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector: keeps every span it is sent, with the name of
    the service that sent it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(service, s) for s in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[tuple[str, trace_pb2.Span]]:
        with self._lock:
            return list(self.spans)


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(None)


def _attrs(span: trace_pb2.Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


def test_one_trace_from_the_scim_request_through_the_core_to_its_sql(
    tmp_path: Path, collector: tuple[Collector, str]
) -> None:
    spans, endpoint = collector
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon, not after 5 s
    }
    core, target = start_identity_process(f"sqlite:///{tmp_path / 'identity.db'}", tmp_path, **otel)
    gateway, port = start_gateway_process(target, tmp_path, **otel)
    try:
        tenant, token = _tenant(target, "traced")
        user_id, request_id = _create_user(port, tenant, token, "traced@example.com")

        def gateway_server_span() -> trace_pb2.Span | None:
            for service, s in spans.snapshot():
                if (
                    service == "scim-gateway"
                    and s.kind == SERVER
                    and _attrs(s).get("http.response.status_code") == 201
                ):
                    return s
            return None

        eventually(lambda: gateway_server_span() is not None, 20, "the gateway's span")
        root = gateway_server_span()
        assert root is not None
        assert root.name == "POST Users"
        attrs = _attrs(root)
        assert attrs["http.request.method"] == "POST"
        assert attrs["http.route"] == "Users"
        assert attrs["url.path"] == f"/scim/v2/{tenant}/Users"
        assert not root.parent_span_id  # a request without traceparent starts a trace

        def in_trace() -> list[tuple[str, trace_pb2.Span]]:
            return [(svc, s) for svc, s in spans.snapshot() if s.trace_id == root.trace_id]

        def core_create_user() -> trace_pb2.Span | None:
            for service, s in in_trace():
                if service == "identity-service" and s.name.endswith("UserService/CreateUser"):
                    return s
            return None

        eventually(lambda: core_create_user() is not None, 20, "the core's span in the trace")
        core_span = core_create_user()
        assert core_span is not None and core_span.kind == SERVER
        # Its parent is the gateway's client span of that call, child of the request's.
        by_id = {s.span_id: (svc, s) for svc, s in in_trace()}
        service, call_span = by_id[core_span.parent_span_id]
        assert service == "scim-gateway" and call_span.kind == CLIENT
        assert call_span.name == "identity.v1.UserService/CreateUser"
        assert call_span.parent_span_id == root.span_id
        assert _attrs(call_span)["rpc.grpc.status_code"] == 0

        def sql_under_core() -> list[trace_pb2.Span]:
            return [
                s
                for svc, s in in_trace()
                if svc == "identity-service"
                and s.kind == CLIENT
                and s.parent_span_id == core_span.span_id
            ]

        eventually(lambda: bool(sql_under_core()), 20, "SQL spans under the core's span")
        assert any(s.name == "INSERT sqlite" for s in sql_under_core())
        # Nothing in any span quotes the bearer or the user's name.
        everything = str([(s.name, _attrs(s)) for _, s in spans.snapshot()])
        assert token not in everything and "traced@example.com" not in everything

        # The gateway's access line for the request carries the trace id.
        trace_id = root.trace_id.hex()
        access = [
            json.loads(line)
            for line in gateway.output().splitlines()
            if line.startswith("{") and request_id in line
        ]
        assert any(
            e.get("logger") == "scim_gateway.access" and e.get("trace_id") == trace_id
            for e in access
        ), access
        assert user_id
    finally:
        assert gateway.stop() == 0, gateway.output()
        core.stop()


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    """Without an OTLP endpoint a gateway worker's app imports no opentelemetry."""
    code = (
        "import sys\n"
        "from scim_gateway.app import get_app\n"
        "get_app()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    run = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
