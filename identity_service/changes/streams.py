"""Change streams: `Watch` replays a tenant's event log after a revision, then tails it.

One `StreamHub` per process. For every tenant with live subscribers it runs one
`_Feed`: a single task that reads new events from the log and hands them to
each subscriber's bounded queue, so the database sees one query per tenant per
wake-up however many subscribers there are. A feed wakes

* in-process, from `Database.commit_listeners`, right after a local commit;
* across replicas, from PostgreSQL `LISTEN identity_events` (emit() runs
  pg_notify inside the writing transaction, so it arrives only on commit);
* every `watch_poll_interval_ms` regardless, as the safety net for a lost
  notification or a LISTEN connection that is reconnecting.

Ordering: a writer holds the tenant row lock from its revision bump to its
commit, so commit order is revision order and a snapshot that shows revision N
shows every revision below it (docs/architecture.md, "Event log"). Readers
still check that what they read is contiguous and re-read rather than skip.

A subscriber goes through two phases. It first replays from the log on its own
(pages by revision, never the whole log), until it has caught up with its
tenant's feed; then it attaches to the feed, which delivers every later event.
A subscriber whose queue overflows (it reads slower than the tenant writes) is
detached and ends with RESOURCE_EXHAUSTED naming the revision to resume from;
the feed never waits for it, so writers and other subscribers are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import bindparam, select
from sqlalchemy.engine import make_url

from scim_identity_api.v1 import changes_pb2, common_pb2

from ..domain import tenants
from ..errors import Compacted, DomainError, InvalidValue, NotFound, Unavailable
from ..settings import Settings
from ..storage.db import Database
from ..storage.events import EVENT_NAMES, NOTIFY_CHANNEL
from ..storage.models import EventRow, TenantRow
from ..storage.prepared import Prepared

log = logging.getLogger("identity_service.streams")

T = TypeVar("T")

#: The resource types events carry (ChangeEvent.resource_type), by lower-case name.
RESOURCE_TYPES = {name.lower(): name for name in ("User", "Group", "Role", "Tenant", "Token")}
#: Longest heartbeat interval a request may ask for.
MAX_HEARTBEAT_SECONDS = 3600
#: Pause before re-reading after a gap in the log, which the locking rules say
#: cannot happen; if it does, the reader waits for the writer rather than skip.
GAP_RETRY_SECONDS = 0.05
#: What sending one message costs a process, at least (grpc.aio, measured: 50-100 us).
MESSAGE_COST_SECONDS = 80e-6
#: Most the loop share may delay a tenant's events (IDENTITY_WATCH_MAX_DELAY_MS).
MAX_DELAY_MS = 1000
#: Longest a delivery round is waited for before the feed paces anyway (a round ends
#: when every woken subscriber took its message; see _Feed._pace).
ROUND_TIMEOUT_SECONDS = 1.0
#: Heartbeats are due at most this late.
HEARTBEAT_TICK_SECONDS = 0.25


class TooFarBehind(DomainError):
    """The subscriber reads slower than its tenant changes; it should watch again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = common_pb2.ERROR_REASON_TOO_MANY


# -- reading the log --------------------------------------------------------------------


#: WatchResponse field tags (length-delimited): `event` (1) and `events` (3).
_TAG_EVENT = b"\x0a"
_TAG_EVENTS = b"\x1a"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Item:
    """One event of the log, encoded once per process for every subscriber of its
    tenant: `piece` is the stored ChangeEvent bytes framed as one element of
    WatchResponse.events, so a batch is the concatenation of its pieces (protobuf
    concatenates repeated fields) and no subscriber parses or serializes an event."""

    __slots__ = ("_single", "piece", "resource_type", "revision", "type")

    def __init__(self, revision: int, type_: int, resource_type: str, payload: bytes) -> None:
        self.revision = revision
        self.type = type_
        self.resource_type = resource_type
        self.piece = _TAG_EVENTS + _varint(len(payload)) + payload
        self._single: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.piece)

    def single(self) -> bytes:
        """WatchResponse{event}: for subscribers that did not ask for batches (the
        same framing with field 1's tag; made at most once per event)."""
        if self._single is None:
            self._single = _TAG_EVENT + self.piece[1:]
        return self._single


@dataclass(frozen=True, slots=True)
class _Page:
    #: Contiguous events after the requested revision, in revision order.
    rows: Sequence[_Item]
    #: The tenant's revision in the same snapshot.
    tenant_revision: int
    #: The log had a hole after the rows returned (defensive; see GAP_RETRY_SECONDS).
    gap: bool


@dataclass(frozen=True, slots=True)
class _Tenant:
    pk: int
    id: str
    revision: int
    compacted_through: int


def _compacted(after: int, compacted_through: int) -> Compacted:
    return Compacted(
        f"events after revision {after} were compacted; the oldest revision kept is "
        f"{compacted_through + 1}: list the current state, then watch from the revision "
        "the list reports",
        field="from_revision",
        oldest_revision=compacted_through + 1,
    )


def _load_tenant(db: Database, tenant_id: str) -> _Tenant:
    with db.read() as s:
        row = tenants.by_id(s, tenant_id)
        return _Tenant(row.pk, row.id, row.revision, row.compacted_through)


# Every wake-up of a feed runs these (once per write with a subscriber): prepared.
_COUNTERS = Prepared(
    select(TenantRow.revision, TenantRow.compacted_through).where(TenantRow.pk == bindparam("t"))
)
_EVENTS = Prepared(
    select(EventRow.revision, EventRow.type, EventRow.resource_type, EventRow.payload)
    .where(EventRow.tenant_pk == bindparam("t"), EventRow.revision > bindparam("after"))
    .order_by(EventRow.revision)
    .limit(bindparam("n"))
)


def _read_page(db: Database, tenant_pk: int, after: int, limit: int) -> _Page:
    """Events with revision > `after`, at most `limit`, read in one snapshot with the
    tenant's counters (REPEATABLE READ on PostgreSQL, a read transaction on SQLite)."""
    with db.read() as s:
        t = _COUNTERS.first(s, {"t": tenant_pk})
        if t is None:
            raise NotFound("the tenant no longer exists", field="tenant_id")
        revision, compacted_through = int(t[0]), int(t[1])
        if after < compacted_through:
            raise _compacted(after, compacted_through)
        result = _EVENTS.run(s, {"t": tenant_pk, "after": after, "n": limit})
    rows: list[_Item] = []
    expected = after + 1
    for r in result:
        if r[0] != expected:
            break
        rows.append(_Item(int(r[0]), int(r[1]), str(r[2]), bytes(r[3])))
        expected += 1
    last = rows[-1].revision if rows else after
    # Short of a full page, the snapshot's counter says where the log ends.
    gap = len(rows) < len(result) or (len(rows) < limit and last < revision)
    return _Page(rows, revision, gap)


def _heartbeat(revision: int) -> bytes:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    resp = changes_pb2.WatchResponse(heartbeat=changes_pb2.Heartbeat(revision=revision, time=now))
    return resp.SerializeToString()


def _batch(items: deque[_Item], max_events: int, max_bytes: int) -> tuple[bytes, int, int]:
    """Takes the next message off `items`: (WatchResponse bytes, its last revision, the
    bytes taken). max_events 0: one event in the `event` field (a batch-unaware
    subscriber); else up to max_events events and max_bytes bytes, at least one."""
    first = items.popleft()
    if max_events <= 0:
        return first.single(), first.revision, first.size
    parts = [first.piece]
    size = first.size
    last = first.revision
    while items and len(parts) < max_events:
        nxt = items[0]
        if size + nxt.size > max_bytes:
            break
        items.popleft()
        parts.append(nxt.piece)
        size += nxt.size
        last = nxt.revision
    return b"".join(parts), last, size


# -- subscribers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Filter:
    resource_types: frozenset[str]
    event_types: frozenset[int]

    def matches(self, row: _Item) -> bool:
        # The log stores type and resource_type beside the payload: no decoding here.
        return (not self.resource_types or row.resource_type in self.resource_types) and (
            not self.event_types or row.type in self.event_types
        )


@dataclass(eq=False, slots=True)
class _Watcher:
    tenant_id: str
    filter: _Filter
    #: Most events, and bytes of events, that may wait in `pending`.
    limit: int
    byte_limit: int
    #: Seconds of silence after which the stream gets a heartbeat.
    heartbeat: float
    #: Last revision handed to gRPC (the client's resume point as far as we know).
    cursor: int
    #: Events per message (0: one per message in `event`, a batch-unaware client).
    batch: int = 0
    #: Most bytes of events per batch (a larger event goes alone).
    batch_bytes: int = 1 << 20
    #: The call's context, to end it while a send is parked on flow control.
    context: Any = None
    #: time.monotonic() of the last message sent.
    last_sent: float = field(default_factory=time.monotonic)
    #: Last revision examined: queued, or skipped by the filter or as already sent.
    position: int = 0
    pending: deque[_Item] = field(default_factory=deque)
    pending_bytes: int = 0
    #: The generator is parked in a yield (gRPC has not taken the message yet).
    sending: bool = False
    #: The feed waiting for this watcher's next send (see _Feed._pace).
    feed: _Feed | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: DomainError | None = None

    def fail(self, error: DomainError) -> None:
        if self.error is None:
            self.error = error
        self.pending.clear()
        self.pending_bytes = 0
        self.wake.set()

    def next_message(self) -> tuple[bytes, int]:
        data, last, size = _batch(self.pending, self.batch, self.batch_bytes)
        self.pending_bytes -= size
        return data, last


class _Feed:
    """The one reader of a tenant's log for all its attached subscribers."""

    def __init__(self, hub: StreamHub, tenant: _Tenant, head: int) -> None:
        self.hub = hub
        self.tenant_pk = tenant.pk
        self.tenant_id = tenant.id
        #: Every event <= head was handed to the attached watchers.
        self.head = head
        self.watchers: set[_Watcher] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: Watchers woken by the last delivery that have not taken their first message.
        self.awaiting: set[_Watcher] = set()
        self.round_done = asyncio.Event()
        #: loop.time() of this wake-up's first delivery: the round's cost starts there,
        #: not at the read of the log (a database thread's time, not the loop's).
        self.delivered_at: float | None = None
        #: time.process_time() then.
        self.delivered_cpu = 0.0

    def attach(self, w: _Watcher) -> None:
        w.position = max(w.position, w.cursor)
        self.watchers.add(w)

    def detach(self, w: _Watcher) -> None:
        self.watchers.discard(w)
        self.sent(w)
        if not self.watchers:
            self.hub._drop_feed(self)

    def sent(self, w: _Watcher) -> None:
        """`w` has taken what the last delivery woke it for (or left)."""
        if w in self.awaiting:
            self.awaiting.discard(w)
            if not self.awaiting:
                self.round_done.set()

    async def _pace(self, started: float) -> None:
        """Waits before the next read of the log: at least the batch window, and long
        enough that delivering to every subscriber takes at most `hub.share` of the event
        loop's time. One message per subscriber costs ~50-100 us of gRPC work (on the loop
        the writers also use, and again in each subscriber), whatever the batch size, so
        the number of deliveries, not of events, is what to bound. The share's wait
        never exceeds `hub.max_delay` (counted from the round's start): with many
        subscribers a round costs more, and past that ceiling the streams take a larger
        share of the loop rather than every subscriber a longer delay. The batch window
        is always waited (a ceiling below it, or 0, leaves the window alone)."""
        loop = asyncio.get_running_loop()
        wait = self.hub.batch_window
        if self.hub.share < 1.0 and self.awaiting:
            woken = len(self.awaiting)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROUND_TIMEOUT_SECONDS):
                    await self.round_done.wait()
            # The loop thread's CPU over the round, not wall time: on a busy machine the
            # process waits for a core too, and that is no cost of the deliveries.
            # Each taken message is sent afterwards (gRPC's work, off this measurement):
            # count it at MESSAGE_COST_SECONDS at least.
            cost = max(time.process_time() - self.delivered_cpu, woken * MESSAGE_COST_SECONDS)
            wait = max(wait, min(cost * (1 / self.hub.share - 1), self.hub.max_delay))
        self.awaiting.clear()
        remaining = started + wait - loop.time() if wait > self.hub.batch_window else wait
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def run(self) -> None:
        poll = self.hub.poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self.wake.wait()
            self.wake.clear()
            self.delivered_at = None
            try:
                delivered = await self._drain()
            except DomainError as exc:
                if isinstance(exc, (Compacted, NotFound)):
                    # The tail itself is gone: every subscriber must start over.
                    for w in list(self.watchers):
                        self.hub._end(w, exc)
                    return
                log.warning("event feed for tenant %s: %s", self.tenant_id, exc.message)
                continue
            except Exception as exc:  # the database may come back; keep polling
                log.warning(
                    "event feed for tenant %s cannot read the log: %s",
                    self.tenant_id,
                    type(exc).__name__,
                )
                continue
            if delivered:
                # Let the next commits gather: every delivery costs each subscriber a
                # message, so a tenant written to continuously is read (and its
                # subscribers woken) at most once per window, with bigger batches.
                await self._pace(self.delivered_at or asyncio.get_running_loop().time())

    async def _drain(self) -> bool:
        limit = self.hub.page_size
        delivered = False
        while self.watchers:
            page = await self.hub._run(_read_page, self.hub.db, self.tenant_pk, self.head, limit)
            if page.rows:
                self._deliver(page.rows)
                delivered = True
            if page.gap:
                # Deliver the contiguous part only; the next wake-up or poll re-reads.
                log.warning(
                    "gap in the event log of tenant %s after revision %d; re-reading",
                    self.tenant_id,
                    self.head,
                )
                return delivered
            if len(page.rows) < limit:
                return delivered
        return delivered

    def _deliver(self, rows: Sequence[_Item]) -> None:
        # Runs on the event loop without awaiting: attach/detach cannot interleave.
        # Each distinct filter is applied once per page, not once per subscriber.
        first, last = rows[0].revision, rows[-1].revision
        self.round_done.clear()
        if self.delivered_at is None:
            self.delivered_at = asyncio.get_running_loop().time()
            self.delivered_cpu = time.process_time()
        matched: dict[_Filter, tuple[Sequence[_Item], list[int]]] = {}
        for w in list(self.watchers):
            m = matched.get(w.filter)
            if m is None:
                items = (
                    rows
                    if not w.filter.resource_types and not w.filter.event_types
                    else [r for r in rows if w.filter.matches(r)]
                )
                sizes = [0]
                for it in items:
                    sizes.append(sizes[-1] + it.size)
                m = matched[w.filter] = (items, sizes)
            items, sizes = m
            # Skip what this subscriber already has (it joined in the middle of a page).
            start = 0 if w.position < first else bisect_right(items, w.position, key=_revision)
            w.position = max(w.position, last)
            if start >= len(items):
                continue  # nothing for it: no wake-up
            w.pending.extend(itertools.islice(items, start, None))
            w.pending_bytes += sizes[-1] - sizes[start]
            if len(w.pending) > w.limit or w.pending_bytes > w.byte_limit:
                what = (
                    f"more than {w.limit} events"
                    if len(w.pending) > w.limit
                    else f"more than {w.byte_limit} bytes of events"
                )
                self.hub._end(
                    w,
                    TooFarBehind(
                        f"subscriber too far behind: {what} waiting; "
                        f"watch again with from_revision={w.cursor}",
                        field="from_revision",
                    ),
                )
            else:
                if not w.sending:  # one parked on flow control costs nothing now
                    self.awaiting.add(w)
                    w.feed = self
                w.wake.set()
        self.head = last
        if not self.awaiting:
            self.round_done.set()


def _revision(item: _Item) -> int:
    return item.revision


# -- the hub ----------------------------------------------------------------------------


class StreamHub:
    """Serves Watch for one process. `start()` on the server's loop, `stop()` at shutdown."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        abort: Callable[[Any, DomainError, str], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        #: Ends a call with a domain error's status (the edge's one conversion, passed
        #: in: this layer knows no interceptors). Used to cut off a parked stream.
        self.abort = abort
        self.poll_interval = max(settings.watch_poll_interval_ms, 10) / 1000
        self.page_size = max(settings.watch_page_size, 1)
        self.queue_limit = max(settings.watch_queue_events, 1)
        self.queue_bytes = max(settings.watch_queue_bytes, 1)
        self.batch_events = max(settings.watch_batch_events, 1)
        self.batch_bytes = max(settings.watch_batch_bytes, 1)
        self.batch_window = max(settings.watch_batch_window_ms, 0) / 1000
        self.share = min(max(settings.watch_loop_share_percent, 1), 100) / 100
        self.max_delay = min(max(settings.watch_max_delay_ms, 0), MAX_DELAY_MS) / 1000
        self.default_heartbeat = min(
            max(settings.watch_heartbeat_seconds, 1), MAX_HEARTBEAT_SECONDS
        )
        self._feeds: dict[str, _Feed] = {}
        self._watchers: set[_Watcher] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._ticker_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: Aborts of streams cut off while parked in a send (kept until done).
        self._aborts: set[asyncio.Task[None]] = set()
        self.closed = False

    # lifecycle

    def active_streams(self, tenant_id: str = "") -> int:
        """Open Watch streams (of one tenant, when given)."""
        if not tenant_id:
            return len(self._watchers)
        return sum(1 for w in list(self._watchers) if w.tenant_id == tenant_id)

    def lag(self) -> int:
        """Largest number of revisions a live subscriber is behind its tenant's feed
        (subscribers still replaying are not counted: they are reading the log)."""
        worst = 0
        for feed in list(self._feeds.values()):
            for w in list(feed.watchers):
                worst = max(worst, feed.head - w.cursor)
        return worst

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Stream reads get their own threads so replays never queue ahead of writes.
        self._executor = ThreadPoolExecutor(
            max(self.settings.watch_db_threads, 1), thread_name_prefix="watch"
        )
        self.db.commit_listeners.append(self._on_commit)
        self._ticker_task = asyncio.create_task(self._tick(), name="watch-heartbeats")
        if self.db.dialect == "postgresql":
            self._listen_task = asyncio.create_task(self._listen(), name="watch-listen")

    async def stop(self) -> None:
        """Ends every stream with UNAVAILABLE naming its resume point, so subscribers
        move to another replica at once instead of waiting for the shutdown grace."""
        if self.closed:
            return
        self.closed = True
        self._stopping.set()
        with contextlib.suppress(ValueError):
            self.db.commit_listeners.remove(self._on_commit)
        for w in list(self._watchers):
            self._end(
                w,
                Unavailable(
                    "the identity service is shutting down; watch again with "
                    f"from_revision={w.cursor}"
                ),
            )
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        self._feeds.clear()
        tasks += [t for t in (self._listen_task, self._ticker_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._aborts:
            # Streams parked in a send get their status now, not at the server's grace.
            await asyncio.wait(set(self._aborts), timeout=1.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None and self._executor is not None, "StreamHub not started"
        return await self._loop.run_in_executor(self._executor, lambda: fn(*args))

    # wake-ups

    def _on_commit(self, written: dict[str, int]) -> None:
        # Called on a database thread after a local commit.
        loop = self._loop
        if loop is None or self.closed:
            return
        feeds = self._feeds
        if not any(tenant_id in feeds for tenant_id in written):
            # Nobody follows these tenants here: no wake-up of the loop (a write's
            # commit would otherwise cost one). A feed that starts after this check
            # reads the log once before it waits (`_join`), so it misses nothing.
            return
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(self._notify_many, written)

    def _notify_many(self, written: dict[str, int]) -> None:
        for tenant_id, revision in written.items():
            self._notify(tenant_id, revision)

    def _notify(self, tenant_id: str, revision: int) -> None:
        feed = self._feeds.get(tenant_id)
        if feed is not None and revision > feed.head:
            feed.wake.set()

    def _wake_all(self) -> None:
        for feed in self._feeds.values():
            feed.wake.set()

    async def _tick(self) -> None:
        """Wakes idle subscribers when their heartbeat is due. One timer for all
        streams: a per-wait timeout would cost a timer per event per subscriber."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_TICK_SECONDS):
                    await self._stopping.wait()
            now = time.monotonic()
            for w in self._watchers:
                if now - w.last_sent >= w.heartbeat:
                    w.wake.set()

    async def _listen(self) -> None:
        """LISTEN for commits on other replicas; reconnects with backoff while the
        polling safety net covers the gap."""
        import psycopg  # noqa: PLC0415 - only PostgreSQL deployments need it

        conninfo = (
            make_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        delay = 0.5
        while not self._stopping.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, keepalives=1, keepalives_idle=30
                )
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.5
                    # Notifications sent while we were not listening are lost: re-read.
                    self._wake_all()
                    while not self._stopping.is_set():
                        async for note in conn.notifies(timeout=30):
                            tenant_id, _, rev = note.payload.partition(":")
                            with contextlib.suppress(ValueError):
                                self._notify(tenant_id, int(rev))
                        # A quiet half-hour is fine; a dead connection is not.
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; polling covers the gap
                log.warning("LISTEN %s lost: %s; reconnecting", NOTIFY_CHANNEL, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, 10.0)

    # feeds

    def _drop_feed(self, feed: _Feed) -> None:
        if self._feeds.get(feed.tenant_id) is feed:
            del self._feeds[feed.tenant_id]
        if feed.task is not None:
            feed.task.cancel()

    def _join(self, w: _Watcher, tenant: _Tenant) -> bool:
        """Attaches `w` to its tenant's feed if the feed is not ahead of it (then the
        feed delivers everything after w.cursor). False: replay further first."""
        feed = self._feeds.get(tenant.id)
        if feed is None:
            feed = _Feed(self, tenant, w.cursor)
            self._feeds[tenant.id] = feed
            feed.attach(w)
            feed.task = asyncio.create_task(feed.run(), name=f"watch-feed-{tenant.id}")
            # Commits between our last read and now may have notified nobody.
            feed.wake.set()
            return True
        if feed.head > w.cursor:
            return False
        feed.attach(w)
        return True

    def _leave(self, w: _Watcher) -> None:
        self._watchers.discard(w)
        feed = self._feeds.get(w.tenant_id)
        if feed is not None and w in feed.watchers:
            feed.detach(w)

    def _end(self, w: _Watcher, error: DomainError) -> None:
        """Cuts a stream off with `error`: its queue is freed and it leaves the count of
        open streams at once. A stream whose send is parked (the client stopped reading,
        so HTTP/2 flow control holds gRPC's write) would only see the error after that
        send completes, which may be never: its call is aborted from here instead."""
        parked = w.sending and w.error is None and w.context is not None and self.abort is not None
        w.fail(error)
        self._leave(w)
        if parked:
            task = asyncio.create_task(self._abort(w, error), name="watch-cut")
            self._aborts.add(task)
            task.add_done_callback(self._aborts.discard)

    async def _abort(self, w: _Watcher, error: DomainError) -> None:
        assert self.abort is not None
        with contextlib.suppress(grpc.aio.AbortError, asyncio.CancelledError, Exception):
            await self.abort(w.context, error, WATCH_METHOD)

    # the RPC

    def _validate(
        self, request: changes_pb2.WatchRequest, tenant: _Tenant
    ) -> tuple[_Filter, float]:
        n = request.from_revision
        if n < 0:
            raise InvalidValue(f"from_revision must be 0 or more, got {n}", field="from_revision")
        if n > tenant.revision:
            raise InvalidValue(
                f"from_revision {n} is ahead of the tenant's current revision {tenant.revision}",
                field="from_revision",
            )
        if n < tenant.compacted_through:
            raise _compacted(n, tenant.compacted_through)
        kinds: set[str] = set()
        for name in request.resource_types:
            canonical = RESOURCE_TYPES.get(name.strip().lower())
            if canonical is None:
                raise InvalidValue(
                    f"unknown resource type {name[:40]!r}; expected one of "
                    + ", ".join(sorted(RESOURCE_TYPES.values())),
                    field="resource_types",
                )
            kinds.add(canonical)
        for t in request.event_types:
            if t not in EVENT_NAMES:
                raise InvalidValue(f"unknown event type {t}", field="event_types")
        if request.max_batch_events < 0:
            raise InvalidValue(
                f"max_batch_events must be 0 or more, got {request.max_batch_events}",
                field="max_batch_events",
            )
        hb = request.heartbeat_seconds
        if hb < 0 or hb > MAX_HEARTBEAT_SECONDS:
            raise InvalidValue(
                f"heartbeat_seconds must be between 1 and {MAX_HEARTBEAT_SECONDS} "
                f"(0: the server's default of {self.default_heartbeat}), got {hb}",
                field="heartbeat_seconds",
            )
        return _Filter(frozenset(kinds), frozenset(request.event_types)), float(
            hb or self.default_heartbeat
        )

    async def watch(
        self, request: changes_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """The Watch RPC. Yields serialized WatchResponse messages: the stream's method
        handler sends them as they are (see `watch_handler`), so an event is encoded
        once per process, whatever the number of subscribers."""
        if self.closed:
            raise Unavailable("the identity service is shutting down; watch another replica")
        tenant = await self._run(_load_tenant, self.db, request.tenant_id)
        filt, heartbeat = self._validate(request, tenant)
        w = _Watcher(
            tenant.id,
            filt,
            self.queue_limit,
            self.queue_bytes,
            heartbeat=heartbeat,
            cursor=request.from_revision,
            batch=min(request.max_batch_events, self.batch_events),
            batch_bytes=self.batch_bytes,
            context=context,
        )
        w.position = w.cursor
        self._watchers.add(w)
        # A client that goes away cancels this generator; the callback also covers a
        # stream that ends while we are parked between messages.
        # (types-grpcio declares the callback as a class, not a callable.)
        # (the ignore below) types-grpcio declares the callback as a class
        context.add_done_callback(lambda _ctx: w.wake.set())  # type: ignore[arg-type]
        gaps = 0
        try:
            # Phase 1: replay from the log until the tenant's feed is not ahead of us.
            while True:
                page = await self._run(_read_page, self.db, tenant.pk, w.cursor, self.page_size)
                matched = deque(r for r in page.rows if filt.matches(r))
                while matched:
                    if w.error is not None:
                        raise w.error
                    data, w.cursor, _size = _batch(matched, w.batch, w.batch_bytes)
                    yield data
                    w.last_sent = time.monotonic()
                if w.error is not None:
                    raise w.error
                if page.rows:
                    w.cursor = page.rows[-1].revision
                if time.monotonic() - w.last_sent >= heartbeat:
                    # A long replay that matches nothing still lets the client checkpoint.
                    yield _heartbeat(w.cursor)
                    w.last_sent = time.monotonic()
                if page.gap:
                    gaps += 1
                    await asyncio.sleep(min(GAP_RETRY_SECONDS * 2**gaps, self.poll_interval))
                    continue
                gaps = 0
                if len(page.rows) < self.page_size and self._join(w, tenant):
                    break
            # Phase 2: send what the feed delivers; heartbeats when idle (see _tick).
            while True:
                if w.error is not None:
                    raise w.error
                if context.done():
                    return
                if w.pending:
                    # Everything queued is after the cursor (the feed skips what is not).
                    data, w.cursor = w.next_message()
                    if w.feed is not None:
                        # Its turn on the loop came: the round is done for it (a send
                        # then parked on flow control must not hold the feed up).
                        w.feed.sent(w)
                        w.feed = None
                    w.sending = True
                    yield data
                    w.sending = False
                    w.last_sent = time.monotonic()
                    continue
                if time.monotonic() - w.last_sent >= heartbeat:
                    # Nothing waits in the queue: everything up to position was handled.
                    w.cursor = max(w.cursor, w.position)
                    yield _heartbeat(w.cursor)
                    w.last_sent = time.monotonic()
                    continue
                w.wake.clear()
                if w.pending or w.error is not None:
                    continue
                await w.wake.wait()
        finally:
            self._leave(w)


#: The full name of the Watch method (for logs and the status a cut-off stream gets).
WATCH_METHOD = "/identity.v1.ChangeService/Watch"


def watch_handler(
    watch: Callable[[changes_pb2.WatchRequest, Any], AsyncIterator[bytes]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The Watch method handler: responses are already-serialized bytes (no serializer)."""
    return grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=changes_pb2.WatchRequest.FromString,
        response_serializer=None,
    )
