"""The core's metrics under the gRPC ecosystem's names, its traces (W3C traceparent in,
a server span, SQL spans under it, trace ids in the log lines), and reflection v1 and
v1alpha (behind credentials when credentials are on). Real servers, both databases."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from identity_service.edge.server import create_server
from identity_service.settings import Settings
from scim_identity_api.v1 import tenants_pb2, tenants_pb2_grpc, users_pb2, users_pb2_grpc
from scim_identity_client import IdentityClient, NotFound

from ..security.helpers import ADMIN_SECRET, SUBSCRIBER_SECRET, write_credentials
from ..support import ServiceThread, scrape, value

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


class TracedService(ServiceThread):
    """A ServiceThread whose server traces into `provider`."""

    def __init__(self, settings: Settings, provider: TracerProvider) -> None:
        super().__init__(settings)
        self.provider = provider

    def start(self) -> str:
        self.thread.start()

        async def boot() -> int:
            self.service = create_server(self.settings, tracer_provider=self.provider)
            return await self.service.start()

        self.port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(60)
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def metered(database_url: str) -> Iterator[ServiceThread]:
    service = ServiceThread(
        Settings(database_url=database_url, listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    )
    service.start()
    yield service
    service.stop()


def test_a_scrape_shows_grpc_server_metrics_and_process_collectors(
    metered: ServiceThread,
) -> None:
    assert metered.service is not None
    with IdentityClient(f"127.0.0.1:{metered.port}") as client:
        tenant = client.create_tenant(f"metrics-{metered.port}")
        with pytest.raises(NotFound):
            client.get_tenant("no-such-tenant-anywhere")
        client.create_user(tenant.id, users_pb2.User(user_name="metered@example.com"))
        watch = client.watch(tenant.id, since=0)
        next(iter(watch))  # the stream is open once it has answered
        watch.close()
    m = scrape(metered.service.metrics_port)
    unary = {"grpc_type": "unary", "grpc_service": "identity.v1.TenantService"}
    assert value(m["grpc_server_started_total"], **unary, grpc_method="CreateTenant") == 1
    assert (
        value(m["grpc_server_handled_total"], **unary, grpc_method="CreateTenant", grpc_code="OK")
        == 1
    )
    assert (
        value(
            m["grpc_server_handled_total"],
            **unary,
            grpc_method="GetTenant",
            grpc_code="NOT_FOUND",
        )
        == 1
    )
    assert value(m["grpc_server_handling_seconds_count"], **unary, grpc_method="CreateTenant") == 1
    assert any(
        lab.get("le") == "+Inf" and lab.get("grpc_method") == "CreateTenant"
        for lab, _ in m["grpc_server_handling_seconds_bucket"]
    )
    stream = {"grpc_type": "server_stream", "grpc_service": "identity.v1.ChangeService"}
    assert value(m["grpc_server_started_total"], **stream, grpc_method="Watch") >= 1
    # The process and the Python runtime, as every Python exporter shows them.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert name in m, name
    assert "python_gc_objects_collected_total" in m
    # The old names are gone (dashboards know the ecosystem's names).
    assert not any(name.startswith("identity_rpc_") for name in m)


def _spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def test_a_call_continues_the_callers_trace_down_to_its_sql(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = TracedService(Settings(database_url=database_url, listen="127.0.0.1:0"), provider)
    target = service.start()
    try:
        with grpc.insecure_channel(target) as channel, caplog.at_level(logging.INFO):
            tenants = tenants_pb2_grpc.TenantServiceStub(channel)
            tenant = tenants.CreateTenant(
                tenants_pb2.CreateTenantRequest(name=f"traced-{service.port}"),
                metadata=[("traceparent", TRACEPARENT)],
                timeout=10,
            )
            users_pb2_grpc.UserServiceStub(channel).CreateUser(
                users_pb2.CreateUserRequest(
                    tenant_id=tenant.id, user=users_pb2.User(user_name="ada@example.com")
                ),
                metadata=[("traceparent", TRACEPARENT)],
                timeout=10,
            )
        spans = _spans(exporter)
        servers = [s for s in spans if s.kind is SpanKind.SERVER]
        assert {s.name for s in servers} == {
            "identity.v1.TenantService/CreateTenant",
            "identity.v1.UserService/CreateUser",
        }
        for server in servers:
            ctx = server.context
            assert ctx is not None and format(ctx.trace_id, "032x") == TRACE_ID
            assert server.parent is not None and format(server.parent.span_id, "016x") == (
                PARENT_SPAN
            )
            assert server.attributes is not None
            assert server.attributes["rpc.system"] == "grpc"
            assert server.attributes["rpc.grpc.status_code"] == 0
        create_user = next(s for s in servers if s.name.endswith("CreateUser"))
        assert create_user.context is not None
        sql = [
            s
            for s in spans
            if s.kind is SpanKind.CLIENT
            and s.parent is not None
            and s.parent.span_id == create_user.context.span_id
        ]
        system = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        assert sql, "no SQL span under the call"
        assert all(s.attributes and s.attributes["db.system.name"] == system for s in sql)
        assert any(s.name == f"INSERT {system}" for s in sql)
        # Parameters are never recorded: the user's name is not in any span.
        assert not any("ada@example.com" in str(s.attributes) for s in spans)
        # The access line carries the trace id.
        access = [r for r in caplog.records if r.name == "identity_service.access"]
        assert access and all(getattr(r, "trace_id", None) == TRACE_ID for r in access)
    finally:
        service.stop()


def _list_services(channel: grpc.Channel, v1: bool, token: str | None = None) -> list[str]:
    service = (
        "grpc.reflection.v1.ServerReflection" if v1 else "grpc.reflection.v1alpha.ServerReflection"
    )
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")] if token else None
    responses = call(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=metadata,
        timeout=10,
    )
    (resp,) = list(responses)
    return [s.name for s in resp.list_services_response.service]


def test_reflection_v1_beside_v1alpha_and_behind_credentials(tmp_path: Path) -> None:
    open_service = ServiceThread(
        Settings(database_url=f"sqlite:///{tmp_path / 'open.db'}", listen="127.0.0.1:0")
    )
    creds = write_credentials(tmp_path / "credentials.json", ["acme"])
    secured = ServiceThread(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'secured.db'}",
            listen="127.0.0.1:0",
            credentials_file=str(creds),
        )
    )
    try:
        with grpc.insecure_channel(open_service.start()) as channel:
            for v1 in (True, False):
                names = _list_services(channel, v1)
                assert "identity.v1.UserService" in names
                assert "grpc.reflection.v1.ServerReflection" in names
                assert "grpc.reflection.v1alpha.ServerReflection" in names
        with grpc.insecure_channel(secured.start()) as channel:
            for v1 in (True, False):
                with pytest.raises(grpc.RpcError) as err:
                    _list_services(channel, v1)
                assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as err:
                    _list_services(channel, v1, token="not-a-credential")
                assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
                for token in (ADMIN_SECRET, SUBSCRIBER_SECRET):
                    assert "identity.v1.UserService" in _list_services(channel, v1, token)
            # Health stays open for probes.
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        open_service.stop()
        secured.stop()
