"""The identity service: a grpc.aio server over one Database.

    service = create_server(settings)
    port = await service.start()      # binds settings.listen (port 0: a free one)
    ...
    await service.stop(grace=10)

Health (grpc.health.v1) says SERVING only while the database answers and its
schema is at the migration head, and goes back to NOT_SERVING when it stops
answering, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from scim_identity_api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    changes_pb2,
    groups_pb2,
    groups_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    roles_pb2,
    roles_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)

from ..changes.compaction import Compactor
from ..changes.streams import StreamHub
from ..settings import Settings
from ..storage import migrate
from ..storage.db import Database
from .auth import AuthInterceptor, ReplicaRoleInterceptor, load_credentials
from .interceptors import ErrorInterceptor
from .observability import Metrics
from .servicers import (
    AdminServicer,
    ChangeServicer,
    GroupServicer,
    HistoryServicer,
    PolicyServicer,
    RoleServicer,
    TenantServicer,
    UserServicer,
)
from .status import abort as abort_call
from .token_uses import TokenUses

log = logging.getLogger("identity_service")

SERVICE_NAMES = (
    tenants_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    groups_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
    roles_pb2.DESCRIPTOR.services_by_name["RoleService"].full_name,
    changes_pb2.DESCRIPTOR.services_by_name["ChangeService"].full_name,
    history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name,
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


#: gRPC reflection v1 (grpcurl, Postman, grpcui ask it first). grpcio-reflection
#: serves only v1alpha, whose messages are the same on the wire: the same servicer
#: answers under both names.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server) -> None:
    """Reflection v1 beside v1alpha, listing both, the service's own services and
    health. Open without credentials only when the core has none (auth.py)."""
    names = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
        REFLECTION_V1,
    )
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


class IdentityService:
    def __init__(
        self, settings: Settings, db: Database | None = None, tracer_provider: Any = None
    ) -> None:
        """`tracer_provider`: an OpenTelemetry TracerProvider to trace calls with (tests
        hand one in); None traces only when settings.tracing (OTLP), else not at all."""
        self.settings = settings
        self.db = db or Database(settings)
        self.metrics = Metrics()
        self.metrics.pool_in_use.set_function(self.db.connections_in_use)
        self.metrics.pool_size.set_function(self.db.pool_size)
        self.metrics_port = 0
        self.health = health.aio.HealthServicer()
        errors = ErrorInterceptor(self.metrics)
        interceptors: list[grpc.aio.ServerInterceptor] = [errors]
        if settings.role == "streams":
            # Before the error handling: a refused call reaches no servicer.
            interceptors.insert(0, ReplicaRoleInterceptor())
        if settings.credentials_file:
            # First, so a refused call reaches neither the error handling nor a servicer.
            creds = load_credentials(settings.credentials_file)
            interceptors.insert(0, AuthInterceptor(creds, self.db))
        self.tracer_provider = tracer_provider
        self._own_provider = tracer_provider is None and settings.tracing
        if self._own_provider:
            from .tracing import otlp_provider  # noqa: PLC0415 - only when tracing is on

            self.tracer_provider = otlp_provider("identity-service")
        if self.tracer_provider is not None:
            from . import tracing  # noqa: PLC0415 - opentelemetry only when tracing is on

            # Outermost: the span covers refusals too, and is current in the rest.
            interceptors.insert(0, tracing.install(self.tracer_provider, self.db, self.db.dialect))
            errors.trace_ids = tracing.trace_ids
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        #: Tokens' last use, written in batches off the calls (shared by the servicers).
        self.token_uses = TokenUses(self.db)
        self.changes = ChangeServicer(self.db, settings, self.token_uses)
        self.streams = StreamHub(self.db, settings, abort=abort_call)
        self.changes.streams = self.streams
        self.metrics.active_streams.set_function(self.streams.active_streams)
        self.metrics.subscriber_lag.set_function(self.streams.lag)
        self.compactor = Compactor(self.db, settings)
        tenants_pb2_grpc.add_TenantServiceServicer_to_server(
            TenantServicer(self.db, settings, self.token_uses), self.server
        )
        users_pb2_grpc.add_UserServiceServicer_to_server(
            UserServicer(self.db, settings, self.token_uses), self.server
        )
        groups_pb2_grpc.add_GroupServiceServicer_to_server(
            GroupServicer(self.db, settings, self.token_uses), self.server
        )
        roles_pb2_grpc.add_RoleServiceServicer_to_server(
            RoleServicer(self.db, settings, self.token_uses), self.server
        )
        self.changes.add_to_server(self.server)
        history_pb2_grpc.add_HistoryServiceServicer_to_server(
            HistoryServicer(self.db, settings, self.token_uses), self.server
        )
        self.admin = AdminServicer(self.db, settings, self.token_uses)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self.admin, self.server)
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(
            PolicyServicer(self.db, settings, self.token_uses), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(self.server)
        self.port = 0
        self.serving = False
        self._stopping = asyncio.Event()
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        await self._set_health(False)
        if self.settings.metrics_listen:
            self.metrics_port = self.metrics.serve(self.settings.metrics_listen)
        creds = server_credentials(self.settings)
        if creds is None:
            self.port = self.server.add_insecure_port(self.settings.listen)
        else:
            self.port = self.server.add_secure_port(self.settings.listen, creds)
        if self.port == 0:
            raise SystemExit(f"cannot bind {self.settings.listen}")
        await self._probe()
        await self.streams.start()
        if self.settings.role != "streams":  # a stream replica never writes
            self.compactor.start()
        await self.server.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="health")
        log.info(
            "identity service listening on port %d (%s%s, %s%s)",
            self.port,
            self.db.dialect,
            ", stream replica" if self.settings.role == "streams" else "",
            "mTLS" if self.settings.tls_client_ca_file else "TLS" if creds else "plaintext",
            ", service credentials required" if self.settings.credentials_file else "",
        )
        return self.port

    def _check(self) -> None:
        self.db.ping()
        if not migrate.is_current(self.db):
            if self.settings.role == "streams":
                raise RuntimeError(
                    "database schema is not at the migration head; a stream replica "
                    "never migrates: run migrate or start a replica with IDENTITY_ROLE=all"
                )
            if not self.settings.migrate_on_start:
                raise RuntimeError("database schema is not at the migration head; run migrate")
            migrate.upgrade(self.db)

    async def _probe(self) -> None:
        try:
            await self.db.run(self._check)
            ok = True
        except Exception as exc:
            if self.serving:
                log.warning("database check failed: %s", type(exc).__name__)
            ok = False
        if ok != self.serving:
            log.info("health: %s", "SERVING" if ok else "NOT_SERVING")
        await self._set_health(ok)

    async def _set_health(self, ok: bool) -> None:
        self.serving = ok
        self.metrics.serving.set(1 if ok else 0)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _health_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.health_interval)
            if not self._stopping.is_set():
                await self._probe()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        await self.health.enter_graceful_shutdown()
        # Streams never end by themselves: close them first so the grace period
        # is spent on unary calls, and subscribers resume elsewhere at once.
        await self.streams.stop()
        await self.compactor.stop()
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        await self.token_uses.stop()  # what the last calls noted
        if self._health_task is not None:
            await self._health_task
        await self.db.close_quick()
        self.db.close()
        if self._own_provider:
            # The spans still batched go out before the process ends.
            await asyncio.to_thread(self.tracer_provider.shutdown)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when a certificate and key are configured; client certificates are
    required (mTLS) when a client CA is configured too. None: plaintext."""
    if not settings.tls_cert_file:
        return None
    try:
        key = Path(settings.tls_key_file).read_bytes()
        cert = Path(settings.tls_cert_file).read_bytes()
        client_ca = (
            Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
        )
    except OSError as exc:
        raise SystemExit(f"cannot read a TLS file: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def create_server(
    settings: Settings, db: Database | None = None, tracer_provider: Any = None
) -> IdentityService:
    return IdentityService(settings, db, tracer_provider)
