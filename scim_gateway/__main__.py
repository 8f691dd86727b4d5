"""`scim-gateway`: runs the gateway under gunicorn with settings from SCIM_* variables.

Workers load the app themselves (no preload), so each opens its own gRPC
channel after the fork.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from .settings import Settings, SettingsError

THREADS_PER_WORKER = 4
GRACEFUL_TIMEOUT_SECONDS = 10
TIMEOUT_SECONDS = 60


class GatewayApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", [s.listen])
        self.cfg.set("workers", s.workers)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", THREADS_PER_WORKER)
        self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT_SECONDS)
        self.cfg.set("timeout", TIMEOUT_SECONDS)
        self.cfg.set("preload_app", False)
        self.cfg.set("proc_name", "scim-gateway")
        self.cfg.set("errorlog", "-")
        # No control socket: several gateways may run side by side.
        self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        # Called in each worker after fork: the app (and its channel) is built there.
        from .app import get_app  # noqa: PLC0415 - keep the parent free of app state

        return get_app()


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"scim-gateway: {exc}", file=sys.stderr)
        return 2
    GatewayApplication(settings).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
