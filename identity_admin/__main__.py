"""`identity-admin`: the admin console under gunicorn with uvicorn workers, settings
from ADMIN_* variables. As for the gateway, workers load the app themselves (no
preload) and each opens its own gRPC channel in the app's lifespan, after the fork."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from scim_identity_client.cli import VersionAction

from .settings import Settings, SettingsError

WORKER_CLASS = "identity_admin.worker.ConsoleWorker"


class ConsoleApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", [s.listen])
        self.cfg.set("workers", s.workers)
        self.cfg.set("worker_class", WORKER_CLASS)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("timeout", 60)
        self.cfg.set("preload_app", False)
        self.cfg.set("proc_name", "identity-admin")
        self.cfg.set("errorlog", "-")
        self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        from .app import get_app  # noqa: PLC0415 - built in each worker, after the fork

        return get_app()


def main(argv: list[str] | None = None) -> int:
    # Options first: --help and --version answer and leave, never start a server
    # (identityctl's and scim-gateway's convention).
    parser = argparse.ArgumentParser(
        prog="identity-admin",
        description="The admin console: gunicorn workers serving the console's pages and "
        "calling the identity service over gRPC.",
        epilog="Settings are ADMIN_* environment variables (README, 'Configuration').",
    )
    parser.add_argument("--version", action=VersionAction)
    parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"identity-admin: {exc}", file=sys.stderr)
        return 2
    ConsoleApplication(settings).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
