"""The gunicorn worker class: uvicorn's ASGI worker, with the lifespan on (it opens
and closes the channel to the core)."""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class ConsoleWorker(UvicornWorker):  # type: ignore[misc]  # gunicorn is untyped
    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio", "lifespan": "on"}
