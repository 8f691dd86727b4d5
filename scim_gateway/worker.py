"""The gunicorn worker class: uvicorn's ASGI worker, configured for the gateway.

gunicorn stays the process manager (SCIM_WORKERS processes, restarts, graceful
stops); each worker runs one asyncio event loop serving the ASGI app, so a slow
client costs a socket and a task, not a thread.

uvicorn has no limit on how long a client may take to send a request's headers
(a connection that trickles them, or sends nothing, stays open for ever).
`HeaderTimeoutProtocol` gives each request SCIM_CLIENT_TIMEOUT_SECONDS from its
connection (or the end of the previous response) to the end of its headers, then
closes the connection; the body's own limit is the app's (`guard.Guard`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, ClassVar

from gunicorn.glogging import Logger
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from identity_log.jsonlog import JsonFormatter

from .settings import Settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    #: Seconds; set on the subclass the worker makes from its settings.
    header_timeout: ClassVar[float] = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            # RFC 9110 §15.5.9: 408, and the connection is closed.
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    # (the ignore below) its transport type differs from the base protocol's
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()  # a next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # gunicorn is untyped
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "asyncio",
        # The channel to the core is opened and closed by the app's lifespan.
        "lifespan": "on",
        # The app writes its own access lines (JSON, with tenant and request id).
        "access_log": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        timeout = Settings.from_env(os.environ).client_timeout_seconds
        protocol = type(
            "GatewayHttpProtocol", (HeaderTimeoutProtocol,), {"header_timeout": timeout}
        )
        self.CONFIG_KWARGS = {**type(self).CONFIG_KWARGS, "http": protocol}
        super().__init__(*args, **kwargs)


class GatewayLogger(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's own lines (master and workers: starts, stops, worker exits, and
    uvicorn's, which the worker sends to the same handlers) in the format of the
    gateway's access lines: one JSON object per line under SCIM_LOG_FORMAT=json."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if Settings.from_env(os.environ).log_format != "json":
            return
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
                handler.addFilter(_no_color)


def _no_color(record: logging.LogRecord) -> bool:
    """uvicorn adds its message with terminal colour codes as an extra field."""
    record.__dict__.pop("color_message", None)
    return True
