"""The operations history of the SCIM requests a worker answers (one record per
SCIM operation), sent to the core in batches off the request path. The app owns one
Recorder; resources say what each request did (OpInfo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

import grpc

from scim_identity_api.v1 import history_pb2
from scim_identity_client import AsyncIdentityClient, CallContext, IdentityError

from .errors import ScimError, redact
from .http import Call

log = logging.getLogger("scim_gateway")

KIND_CREATE = history_pb2.OPERATION_KIND_CREATE
KIND_READ = history_pb2.OPERATION_KIND_READ
KIND_UPDATE = history_pb2.OPERATION_KIND_UPDATE
KIND_DELETE = history_pb2.OPERATION_KIND_DELETE
KIND_SEARCH = history_pb2.OPERATION_KIND_SEARCH
KIND_BULK = history_pb2.OPERATION_KIND_BULK


@dataclass(slots=True)
class OpInfo:
    """What the request did, for the operations history; set by resources."""

    kind: int
    resource_type: str
    resource_id: str = ""
    #: Recorded as the record's detail when the operation succeeded (Result.note).
    note: str = ""


_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


def _field(text: str, limit: int) -> str:
    return text[:limit].replace("\x00", "\ufffd")


class Recorder:
    """Keeps one history record per SCIM operation, off the request path.

    Records queue in the worker; a task on the worker's event loop sends them to
    the core in batches (one RecordOperations call, one transaction): a record is
    written at most `linger` seconds after its request ended (sooner when `batch`
    records are waiting), at most a few calls a second whatever the request rate.
    While the core is unreachable records wait (up to `capacity`; past that the
    oldest are dropped and logged) and are retried with backoff. `close()` runs
    at the worker's lifespan shutdown and flushes first, so a graceful stop loses
    none; a killed worker loses what was queued. Recording never fails or delays
    a request.
    """

    def __init__(
        self,
        client: AsyncIdentityClient | None = None,
        *,
        batch: int = 500,
        linger: float = 0.2,
        capacity: int = 50_000,
        max_backoff: float = 5.0,
    ) -> None:
        self._client = client
        self._linger = linger
        self._flushing = 0
        self._batch = batch
        self._capacity = capacity
        self._max_backoff = max_backoff
        self._queue: deque[history_pb2.Operation] = deque()
        #: Set when a first record or a full batch waits, or a flush begins.
        self._wake = asyncio.Event()
        #: Set after each attempt to send a batch (flush() waits on it).
        self._progress = asyncio.Event()
        self._sending = 0
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def bind(self, client: AsyncIdentityClient) -> None:
        """The client to send with (the worker's, once its lifespan started)."""
        self._client = client

    def record(
        self,
        call: Call,
        *,
        method: str,
        info: OpInfo,
        status: int,
        error: ScimError | None,
        duration_ms: float,
    ) -> None:
        """Queues a record; call on the event loop."""
        op = history_pb2.Operation(
            tenant_id=call.tenant_id,
            token_id=call.token_id,
            method=method,
            # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
            kind=info.kind,  # type: ignore[arg-type]
            resource_type=_field(info.resource_type, 32),
            # What the client sent (a path segment may hold anything, even NUL):
            # kept printable and within what the core stores, so that a record is
            # always valid and a batch stays small.
            resource_id=_field(redact(info.resource_id, call.secret), 64),
            status=status,
            scim_type=_field((error.scim_type or "") if error else "", 32),
            # The detail may quote the request (a filter, a value): never a secret.
            detail=_field(redact(error.detail, call.secret) if error else info.note, 2000),
            duration_ms=duration_ms,
            request_id=call.request_id,
        )
        op.time.GetCurrentTime()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="history")
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.dropped += 1
            log.warning("history queue full: dropped the oldest record (%d so far)", self.dropped)
        self._queue.append(op)
        if len(self._queue) == 1 or len(self._queue) >= self._batch:
            self._wake.set()  # the sender waits for a first record or a full batch

    async def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every queued record was sent; False on timeout."""
        self._flushing += 1
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while self._queue or self._sending:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1
        return True

    async def close(self, timeout: float = 10.0) -> None:
        """Flushes, then stops the sender (the worker is stopping)."""
        if not await self.flush(timeout):
            log.error("history: %d records could not be sent before exit", len(self._queue))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _gather(self) -> list[history_pb2.Operation]:
        """The next batch: waits for a first record, then up to `linger` for more."""
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        # Let a batch gather: one call (and one transaction) per `linger` at
        # most, whatever the request rate.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while len(self._queue) < self._batch and not self._flushing:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                break
        n = min(len(self._queue), self._batch)
        return [self._queue.popleft() for _ in range(n)]

    async def _run(self) -> None:
        failures = 0
        while True:
            batch = await self._gather()
            n = self._sending = len(batch)
            try:
                if self._client is None:
                    raise RuntimeError("the history recorder has no client")
                await self._client.record_operations(batch, ctx=CallContext(timeout=10.0))
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                raise
            except Exception as err:
                if not isinstance(err, IdentityError) or err.code not in _RETRYABLE:
                    # The core refuses the batch itself, or the client cannot send at
                    # all (its channel was closed): sending it again cannot help.
                    log.error("history: the core refused %d records: %s", n, err)
                    self._sent()
                    continue
                failures += 1
                log.warning(
                    "could not record %d history records (attempt %d: %s); will retry",
                    n,
                    failures,
                    err,
                )
                self._queue.extendleft(reversed(batch))
                self._sent()
                await asyncio.sleep(min(self._max_backoff, 0.1 * 2 ** min(failures, 10)))
                continue
            failures = 0
            self._sent()

    def _sent(self) -> None:
        self._sending = 0
        self._progress.set()
