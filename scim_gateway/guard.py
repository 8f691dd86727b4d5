"""Admission in front of the Falcon app: request bodies, in-flight bound, hang-ups.

An ASGI layer (HTTP only; it knows nothing of SCIM beyond the error body shape):

- **The body is read first, within limits.** Before a request counts as in
  flight, its whole body is read (chunked or not: the server decodes
  `Transfer-Encoding: chunked`, RFC 9112 §7.1) within `client_timeout` seconds
  (else 408, connection closed) and `max_body` bytes (else 413, RFC 7644
  §3.7.4). A client that sends slowly costs a socket and a waiting task, never
  a place among the requests in flight. The app then reads the body from memory.
- **In-flight requests are bounded** (`max_in_flight`, per worker): past it a
  request is answered 503 with Retry-After at once (RFC 9110 §15.6.4) instead of
  queueing behind the others. Health paths are never refused, so a
  busy worker is not taken for a dead one.
- **A client that hangs up cancels its request**: once the body is read, the
  layer listens for `http.disconnect`; if it comes before the response is
  complete, the app's task is cancelled, which cancels the core call it awaits
  (grpc.aio sends the cancellation to the core; see docs/architecture.md,
  "Deadlines").

The headers' own read timeout is the protocol's (`worker.py`): an ASGI app sees a
request only once its headers are complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .errors import ScimError
from .http import SCIM_MEDIA_TYPE

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiCallable = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Called for each request the layer answers itself: (scope, status, seconds).
Observer = Callable[[Scope, int, float], None]

#: Seconds a client refused for load is asked to wait.
RETRY_AFTER_BUSY = 1


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client disconnected before its body was read."""


def _content_length(scope: Scope) -> int | None:
    # ASGI headers (and each pair) may be any iterable, which can be read once:
    # kept as a list of pairs, so the app can read them too.
    scope["headers"] = headers = [tuple(pair) for pair in scope.get("headers", ())]
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before us
    return None


class Guard:
    def __init__(
        self,
        app: AsgiCallable,
        *,
        max_body: int,
        max_in_flight: int,
        client_timeout: float,
        always_admitted: frozenset[str] = frozenset(),
        observe: Observer | None = None,
        active: Callable[[Scope], Any] | None = None,
    ) -> None:
        self.app = app
        self._max_body = max_body
        self._max_in_flight = max_in_flight
        self._client_timeout = client_timeout
        self._always = always_admitted
        self._observe = observe
        #: The gauge (inc/dec) that counts a request while it is answered, if any.
        self._active = active
        #: Requests of this worker being answered now (the bound's count).
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        started = time.perf_counter()
        try:
            body = await self._read_body(scope, receive)
        except _Gone:
            return
        except _TooLarge:
            await self._refuse(
                scope,
                send,
                started,
                ScimError(
                    413,
                    f"The request body exceeds the maximum payload size ({self._max_body} bytes).",
                ),
            )
            return
        except TimeoutError:
            await self._refuse(
                scope,
                send,
                started,
                ScimError(
                    408,
                    f"The request body did not arrive within {self._client_timeout:g} seconds.",
                ),
            )
            return
        if scope.get("path") in self._always:
            # Not counted either: a probe never takes a SCIM request's place.
            await self._run(scope, body, receive, send)
            return
        if self.in_flight >= self._max_in_flight:
            await self._refuse(
                scope,
                send,
                started,
                ScimError(
                    503,
                    "The gateway is answering as many requests as it is configured to "
                    f"(SCIM_MAX_CONCURRENCY); retry after {RETRY_AFTER_BUSY} s.",
                    headers={"Retry-After": str(RETRY_AFTER_BUSY)},
                ),
                close=False,
            )
            return
        self.in_flight += 1
        gauge = self._active(scope) if self._active is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            await self._run(scope, body, receive, send)
        finally:
            self.in_flight -= 1
            if gauge is not None:
                gauge.dec()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        length = _content_length(scope)
        if length is not None and length > self._max_body:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self._client_timeout if self._client_timeout > 0 else None):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > self._max_body:
                        raise _TooLarge
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

    async def _run(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """The app with the body from memory, cancelled if the client goes away first."""
        gone = asyncio.Event()
        complete = False
        replayed = False

        async def app_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def app_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if not complete:
                        task.cancel()  # the client hung up: stop its work (and core call)
                    return

        listener = asyncio.ensure_future(listen())
        try:
            await task
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # the server itself is cancelling us
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if not task.done():
                task.cancel()

    async def _refuse(
        self, scope: Scope, send: Send, started: float, err: ScimError, *, close: bool = True
    ) -> None:
        """Answers a request the layer refuses itself, as a SCIM error (RFC 7644 §3.12)."""
        body = orjson.dumps(err.body())
        headers = [
            (b"content-type", SCIM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in err.headers.items()),
        ]
        if close:
            # The rest of the body is not read: the connection cannot be reused.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        if self._observe is not None:
            self._observe(scope, err.status, time.perf_counter() - started)
