"""Change streams that resume by themselves.

    w = client.watch(tenant_id, since=cursor)
    for event in w:
        handle(event)
        cursor = w.cursor            # or pass checkpoint=FileCheckpoint(...)

The iterator keeps the revision of the last event it returned (`cursor`, also
advanced by heartbeats when filters match nothing). When the stream breaks
(the service restarts, a replica goes away, the subscriber fell too far behind)
it reconnects with exponential backoff and full jitter and asks for the events
after `cursor`, so the caller sees every change once, in revision order.
Events already seen (revision <= cursor) are dropped if a server repeats them.

The server sends events in batches (WatchResponse.events, up to
`max_batch_events` per message): one message per write for each subscriber is
what made subscribers slow the writers down. The iterator still returns one
event at a time and moves `cursor` (and saves the checkpoint) per event handed
out, never to the end of a batch the caller has not finished, so a consumer that
stops in the middle of a batch resumes right after its last handled event. The
next message is read only once the batch is handed out, so a heartbeat never
moves the cursor past buffered events.

Errors a retry cannot fix surface as typed exceptions: `OutOfRange` when the
events after `cursor` were compacted (its `.detail.oldest_revision` names the
oldest kept; list the state and watch from the list's revision), `NotFound`
for an unknown tenant, `InvalidArgument` for a bad request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from scim_identity_api.v1 import changes_pb2

from .checkpoint import Checkpoint
from .errors import Unavailable, from_rpc_error

log = logging.getLogger("scim_identity_client.watch")

#: Statuses after which the stream is opened again from the cursor.
RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # connection lost, service restarting or shutting down
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # this subscriber fell too far behind
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,  # by the server or a proxy; ours ends the iterator
        grpc.StatusCode.INTERNAL,  # e.g. RST_STREAM from a dying connection
        grpc.StatusCode.UNKNOWN,
    }
)
_PREFIX = "EVENT_TYPE_"
#: Events per message the iterators ask for (the server caps it too).
BATCH_EVENTS = 1000


def event_name(event_type: int) -> str:
    """The `resource.action` name of an EventType: EVENT_TYPE_USER_CREATED is "user.created"."""
    # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
    name = changes_pb2.EventType.Name(event_type)  # type: ignore[arg-type]
    return name.removeprefix(_PREFIX).lower().replace("_", ".", 1)


def event_type(value: int | str) -> int:
    """The EventType number for a number, an enum name or a `resource.action` name."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.upper().startswith(_PREFIX):
        text = _PREFIX + text.replace(".", "_")
    try:
        return int(changes_pb2.EventType.Value(text.upper()))
    except ValueError:
        raise ValueError(f"unknown event type {value!r}") from None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt n: uniform in [0, min(maximum, initial * multiplier**n)]
    ("full jitter"), so subscribers of a restarted replica do not return in a herd."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        cap = min(self.maximum, self.initial * self.multiplier ** min(attempt, 32))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not security


class _Resume:
    """What the sync and async iterators share: the cursor, the request that resumes
    from it, checkpointing, and which failures are worth a reconnect."""

    def __init__(
        self,
        tenant_id: str,
        *,
        since: int | None,
        checkpoint: Checkpoint | None,
        resource_types: Iterable[str],
        event_types: Iterable[int | str],
        heartbeat_seconds: int,
        backoff: Backoff | None,
        give_up_after: float | None,
        max_batch_events: int = BATCH_EVENTS,
    ) -> None:
        if since is None and checkpoint is not None:
            since = checkpoint.load()
        self.tenant_id = tenant_id
        self.cursor = since or 0
        self.checkpoint = checkpoint
        self.resource_types = list(resource_types)
        self.event_types = [event_type(t) for t in event_types]
        self.heartbeat_seconds = heartbeat_seconds
        self.backoff = backoff or Backoff()
        self.give_up_after = give_up_after
        self.max_batch_events = max(max_batch_events, 0)
        #: Events received and not yet handed out (the rest of a batch), in order.
        self.buffer: deque[changes_pb2.ChangeEvent] = deque()
        #: A stream that says nothing (not even a heartbeat) this long is presumed dead.
        self.idle_timeout = 3.0 * max(heartbeat_seconds or 5, 1) + 5.0
        self.attempt = 0
        self.down_since: float | None = None
        self.reconnects = 0
        self._unsaved: int | None = None

    def request(self) -> changes_pb2.WatchRequest:
        return changes_pb2.WatchRequest(
            tenant_id=self.tenant_id,
            from_revision=self.cursor,
            resource_types=self.resource_types,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            event_types=self.event_types,  # type: ignore[arg-type]
            heartbeat_seconds=self.heartbeat_seconds,
            max_batch_events=self.max_batch_events,
        )

    def handled(self) -> None:
        """The caller asked for the next event: the last one is done with."""
        if self._unsaved is not None and self.checkpoint is not None:
            self.checkpoint.save(self._unsaved)
        self._unsaved = None

    def received(self, resp: changes_pb2.WatchResponse) -> None:
        """Takes in a message: its new events go to `buffer` (repeats are dropped); a
        heartbeat moves the cursor. Only called with an empty buffer."""
        self.attempt = 0
        self.down_since = None
        which = resp.WhichOneof("item")
        if which == "heartbeat":
            if resp.heartbeat.revision > self.cursor:
                # Nothing for us up to this revision: safe to resume from it.
                self.cursor = resp.heartbeat.revision
                if self.checkpoint is not None:
                    self.checkpoint.save(self.cursor)
            return
        last = self.cursor
        for ev in (resp.event,) if which == "event" else resp.events:
            if ev.revision > last:
                self.buffer.append(ev)
                last = ev.revision

    def take(self) -> changes_pb2.ChangeEvent | None:
        """The next event to hand out, or None when the buffer is empty. The cursor
        (and, once the caller asks for the next one, the checkpoint) moves to it."""
        if not self.buffer:
            return None
        ev = self.buffer.popleft()
        self.cursor = ev.revision
        self._unsaved = ev.revision
        return ev

    def retry_delay(self, err: grpc.RpcError) -> float:
        """Seconds to wait before reconnecting; raises the typed error when a retry
        cannot help or `give_up_after` has passed."""
        code = err.code()
        if code not in RESUMABLE:
            raise from_rpc_error(err) from None
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        elif self.give_up_after is not None and now - self.down_since > self.give_up_after:
            raise Unavailable(
                f"change stream of tenant {self.tenant_id} down for more than "
                f"{self.give_up_after:g}s; last revision {self.cursor}",
                code=code,
            ) from None
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        self.reconnects += 1
        log.info(
            "change stream of tenant %s: %s (%s); resuming after revision %d in %.2fs",
            self.tenant_id,
            code.name,
            err.details() if hasattr(err, "details") else "",
            self.cursor,
            delay,
        )
        return delay


def _watchdog(ref: weakref.ReferenceType[WatchIterator], closed: threading.Event) -> None:
    # Holds only a weak reference: an abandoned iterator is collected and this ends.
    while True:
        it = ref()
        if it is None:
            return
        period = min(1.0, it._core.idle_timeout / 4)
        del it
        if closed.wait(period):
            return
        it = ref()
        if it is None:
            return
        it._check_idle()
        del it


class WatchIterator(Iterator[changes_pb2.ChangeEvent]):
    """Blocking, resuming iterator over a tenant's events. Use from one thread;
    `close()` may be called from any thread and ends the iteration."""

    def __init__(
        self,
        stub: Any,
        core: _Resume,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._stub = stub
        self._core = core
        self._metadata = metadata
        self._call: Any = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._last_rx = time.monotonic()
        self._watchdog: threading.Thread | None = None

    @property
    def cursor(self) -> int:
        """Revision of the last event returned (or heartbeat seen): resume from it."""
        return self._core.cursor

    @property
    def tenant_id(self) -> str:
        return self._core.tenant_id

    @property
    def reconnects(self) -> int:
        return self._core.reconnects

    def __iter__(self) -> WatchIterator:
        return self

    def __enter__(self) -> WatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def _open(self) -> Any:
        call = self._stub.Watch(self._core.request(), metadata=self._metadata)
        with self._lock:
            self._call = call
            self._last_rx = time.monotonic()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=_watchdog,
                args=(weakref.ref(self), self._closed),
                name="identity-watch-watchdog",
                daemon=True,
            )
            self._watchdog.start()
        if self._closed.is_set():
            call.cancel()
        return call

    def _check_idle(self) -> None:
        with self._lock:
            call = self._call
            idle = time.monotonic() - self._last_rx
        if call is not None and idle > self._core.idle_timeout:
            log.warning(
                "change stream of tenant %s silent for %.0fs; reconnecting", self.tenant_id, idle
            )
            call.cancel()

    def __next__(self) -> changes_pb2.ChangeEvent:
        self._core.handled()
        ev = self._core.take()
        if ev is not None and not self._closed.is_set():
            return ev
        while not self._closed.is_set():
            call = self._call if self._call is not None else self._open()
            try:
                resp = next(call)
            except StopIteration:
                # The server ended the stream without a status: treat as a lost connection.
                with self._lock:
                    self._call = None
                if self._closed.wait(self._core.backoff.delay(self._core.attempt)):
                    break
                self._core.attempt += 1
                continue
            except grpc.RpcError as err:
                with self._lock:
                    self._call = None
                if self._closed.is_set():
                    break
                if self._closed.wait(self._core.retry_delay(err)):
                    break
                continue
            with self._lock:
                self._last_rx = time.monotonic()
            self._core.received(resp)
            ev = self._core.take()
            if ev is not None:
                return ev
        raise StopIteration


class AsyncWatchIterator(AsyncIterator[changes_pb2.ChangeEvent]):
    """The asyncio twin of WatchIterator (a grpc.aio stub). `aclose()` ends it."""

    def __init__(
        self,
        stub: Any,
        core: _Resume,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._stub = stub
        self._core = core
        self._metadata = metadata
        self._call: Any = None
        self._closed = asyncio.Event()

    @property
    def cursor(self) -> int:
        return self._core.cursor

    @property
    def tenant_id(self) -> str:
        return self._core.tenant_id

    @property
    def reconnects(self) -> int:
        return self._core.reconnects

    def __aiter__(self) -> AsyncWatchIterator:
        return self

    async def __aenter__(self) -> AsyncWatchIterator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed.set()
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def _pause(self, delay: float) -> bool:
        """Waits `delay` seconds; True if closed meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    async def __anext__(self) -> changes_pb2.ChangeEvent:
        self._core.handled()
        ev = self._core.take()
        if ev is not None and not self._closed.is_set():
            return ev
        while not self._closed.is_set():
            if self._call is None:
                self._call = self._stub.Watch(self._core.request(), metadata=self._metadata)
            call = self._call
            try:
                async with asyncio.timeout(self._core.idle_timeout):
                    resp = await call.read()
            except TimeoutError:
                log.warning("change stream of tenant %s silent; reconnecting", self.tenant_id)
                call.cancel()
                self._call = None
                continue
            except grpc.RpcError as err:
                self._call = None
                if self._closed.is_set():
                    break
                if await self._pause(self._core.retry_delay(err)):
                    break
                continue
            if resp is grpc.aio.EOF:
                self._call = None
                if await self._pause(self._core.backoff.delay(self._core.attempt)):
                    break
                self._core.attempt += 1
                continue
            self._core.received(resp)
            ev = self._core.take()
            if ev is not None:
                return ev
        raise StopAsyncIteration
