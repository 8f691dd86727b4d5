"""`identity-service [serve|migrate]`: settings from IDENTITY_* environment variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import migrate
from .db import Database
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="identity-service", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The health probe checks the schema every few seconds: keep Alembic quiet.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = Settings.from_env()
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
