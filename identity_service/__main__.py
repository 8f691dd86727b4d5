"""identity-service: the identity core's gRPC server, and its operational commands.

    identity-service                 serve (settings from IDENTITY_* variables)
    identity-service migrate         apply the database migrations, then exit
    identity-service healthcheck     exit 0 when the local server reports SERVING
    identity-service init-credentials DIR   generate a deployment's secrets (once)

Each command imports only what it uses: the healthcheck, run by a container every
few seconds, loads grpc and the health stubs, not SQLAlchemy or Alembic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .settings import Settings


def version() -> str:
    from importlib import metadata  # noqa: PLC0415 - 30 ms the healthcheck need not pay

    try:
        return metadata.version("scim-identity")
    except metadata.PackageNotFoundError:  # running from a source tree, not installed
        return "unknown"


class _Version(argparse.Action):
    """--version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{parser.prog} {version()}")  # stdout, as argparse's own version action
        parser.exit()


def _serve(settings: Settings) -> int:
    import asyncio  # noqa: PLC0415 - the server's imports stay out of the other commands
    import signal  # noqa: PLC0415  # as above

    from .edge.observability import configure_logging  # noqa: PLC0415  # as above
    from .edge.server import create_server  # noqa: PLC0415  # as above

    configure_logging(settings.log_format, settings.log_level)

    async def serve() -> None:
        service = create_server(settings)
        await service.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(service.stop()))
        await service.wait()
        await service.stop()

    asyncio.run(serve())
    return 0


def _migrate(settings: Settings, wait_seconds: float) -> int:
    from sqlalchemy.exc import OperationalError  # noqa: PLC0415  # migrate only

    from .edge.observability import configure_logging  # noqa: PLC0415  # as above
    from .storage import migrate  # noqa: PLC0415  # migrate only
    from .storage.db import Database  # noqa: PLC0415  # migrate only

    configure_logging(settings.log_format, settings.log_level)
    db = Database(settings)
    try:
        migrate.wait_for_database(db, wait_seconds)
        migrate.upgrade(db)
    except OperationalError as exc:
        print(
            f"identity-service migrate: database unreachable after {wait_seconds:.0f} s "
            f"(OperationalError: {migrate.unreachable_reason(exc)})",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        print(f"identity-service migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"database at revision {migrate.head()}")
    return 0


def _healthcheck(settings: Settings) -> int:
    from .edge.probe import probe  # noqa: PLC0415  # healthcheck only

    return probe(settings)


def _init_credentials(root: str, subscriber_tenants: list[str]) -> int:
    from .edge.bootstrap import init_credentials  # noqa: PLC0415  # init-credentials only

    for line in init_credentials(Path(root), subscriber_tenants):
        print(f"identity-service init-credentials: {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identity-service",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Settings are IDENTITY_* environment variables (README, 'Configuration').",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC server (the default)")
    m = sub.add_parser(
        "migrate",
        help="apply the database migrations and exit",
        description="Apply the database migrations and exit. Waits for the database "
        "first, retrying with backoff for at most --wait seconds.",
    )
    m.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for the database (default: IDENTITY_MIGRATE_WAIT_SECONDS, 0)",
    )
    sub.add_parser(
        "healthcheck",
        help="exit 0 when the service on IDENTITY_LISTEN reports SERVING (TLS too)",
        description="Ask the local server's grpc.health.v1; exit 0 when SERVING. With "
        "IDENTITY_TLS_CERT_FILE set it speaks TLS (see IDENTITY_HEALTHCHECK_* in the README).",
    )
    i = sub.add_parser(
        "init-credentials",
        help="generate a deployment's database password and service credentials once",
        description="Generate missing secrets under DIR and (re)write DIR/core/"
        "credentials.json from them. Existing secrets are kept; nothing secret is printed.",
    )
    i.add_argument("directory", metavar="DIR")
    i.add_argument(
        "--subscriber-tenant",
        action="append",
        default=[],
        metavar="TENANT",
        help="limit the subscriber credential to this tenant (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    if command == "init-credentials":
        return _init_credentials(args.directory, args.subscriber_tenant)
    settings = Settings.from_env()
    if command == "healthcheck":
        return _healthcheck(settings)
    if command == "migrate":
        wait = args.wait
        if wait is None:
            wait = float(settings.migrate_wait_seconds)
        return _migrate(settings, wait)
    return _serve(settings)


if __name__ == "__main__":
    raise SystemExit(main())
