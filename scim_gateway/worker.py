"""The gunicorn worker class: uvicorn's ASGI worker, configured for the gateway.

gunicorn stays the process manager (SCIM_WORKERS processes, restarts, graceful
stops); each worker runs one asyncio event loop serving the ASGI app, so a slow
client costs a socket and a task, not a thread.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # gunicorn is untyped
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": "httptools",
        # The channel to the core is opened and closed by the app's lifespan.
        "lifespan": "on",
        # The app writes its own access lines (JSON, with tenant and request id).
        "access_log": False,
    }
