"""`identity-service [serve|migrate]`: settings from IDENTITY_* environment variables."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import migrate
from .db import Database
from .observability import configure_logging
from .server import create_server
from .settings import Settings


async def _serve(settings: Settings) -> None:
    service = create_server(settings)
    await service.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(service.stop()))
    await service.wait()
    await service.stop()


def _healthcheck(listen: str) -> int:
    """For container healthchecks: asks the local service's grpc.health.v1."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - a bind address, not a bind
        host = "127.0.0.1"
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as err:
            print(f"identity-service healthcheck: {err.code().name}", file=sys.stderr)
            return 1
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        print("identity-service healthcheck: NOT_SERVING", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="identity-service", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", "healthcheck"],
        help="serve (default); migrate: apply migrations and exit; "
        "healthcheck: exit 0 when the service on IDENTITY_LISTEN reports SERVING",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "healthcheck":
        if settings.tls_cert_file:
            # It would need a client certificate and the server's name; say so plainly.
            print(
                "identity-service healthcheck speaks plaintext; with TLS on, probe "
                "grpc.health.v1 with a TLS client (e.g. grpc_health_probe -tls ...)",
                file=sys.stderr,
            )
            return 2
        return _healthcheck(settings.listen)
    configure_logging(settings.log_format, settings.log_level)
    if args.command == "migrate":
        db = Database(settings)
        try:
            migrate.upgrade(db)
        except Exception as exc:
            print(f"identity-service migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            db.close()
        print(f"database at revision {migrate.head()}")
        return 0
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
