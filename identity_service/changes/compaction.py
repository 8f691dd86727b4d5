"""Event retention: events older than `event_retention_seconds` are deleted.

Compaction walks each tenant's log from its oldest kept revision in batches,
deletes the contiguous run of events older than the cut-off, and raises
`tenants.compacted_through` in the same transaction, so a reader that finds a
revision missing also finds why (streams.py answers OUT_OF_RANGE naming the
oldest revision kept). Each batch is its own short transaction: writers wait
at most for one batch's tenant-row update, never for a whole tenant.

Several replicas may compact at once; deleting already-deleted rows is a no-op
and `compacted_through` only ever grows.

The same task applies the operations history's retention
(`history_retention_seconds`): records older than it are deleted in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from ..settings import Settings
from ..storage.db import Database
from ..storage.models import EventRow, OperationRow, TenantRow, utcnow

log = logging.getLogger("identity_service.compaction")

#: Events deleted per transaction.
BATCH = 1000


def _compact_batch(db: Database, tenant_pk: int, older_than: datetime, batch: int) -> int:
    """Deletes up to `batch` of the tenant's oldest events older than `older_than`.
    Returns how many; 0 when the oldest kept event is recent enough."""
    with db.write() as s:
        start = s.execute(
            select(TenantRow.compacted_through).where(TenantRow.pk == tenant_pk)
        ).scalar_one_or_none()
        if start is None:
            return 0
        rows = s.execute(
            select(EventRow.revision, EventRow.time)
            .where(EventRow.tenant_pk == tenant_pk, EventRow.revision > start)
            .order_by(EventRow.revision)
            .limit(batch)
        ).all()
        through = start
        for revision, when in rows:
            # Only a contiguous prefix: the log stays "everything after compacted_through".
            if revision != through + 1 or when >= older_than:
                break
            through = revision
        if through == start:
            return 0
        s.execute(
            delete(EventRow).where(
                EventRow.tenant_pk == tenant_pk,
                EventRow.revision > start,
                EventRow.revision <= through,
            )
        )
        s.execute(
            update(TenantRow)
            .where(TenantRow.pk == tenant_pk, TenantRow.compacted_through < through)
            .values(compacted_through=through)
        )
        return through - start


def compact(
    db: Database,
    *,
    older_than: datetime,
    tenant_ids: list[str] | None = None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Deletes events written before `older_than` (all tenants, or those given) and
    returns {tenant_id: events deleted} for tenants that lost any. Blocking; tests
    call it directly, the server through `Compactor`."""
    with db.read() as s:
        stmt = select(TenantRow.pk, TenantRow.id)
        if tenant_ids is not None:
            stmt = stmt.where(TenantRow.id.in_(tenant_ids))
        tenants = [(int(pk), str(tid)) for pk, tid in s.execute(stmt).all()]
    out: dict[str, int] = {}
    for pk, tid in tenants:
        total = 0
        while True:
            n = _compact_batch(db, pk, older_than, batch)
            total += n
            if n < batch:
                break
        if total:
            out[tid] = total
    return out


def run_retention(
    db: Database, retention_seconds: int, now: datetime | None = None
) -> dict[str, int]:
    """One retention pass: compacts events older than `retention_seconds` (0: none)."""
    if retention_seconds <= 0:
        return {}
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    return compact(db, older_than=cutoff)


def run_history_retention(
    db: Database, retention_seconds: int, now: datetime | None = None, batch: int = BATCH
) -> int:
    """Deletes operations-history records older than `retention_seconds` (0: none),
    `batch` rows per transaction. Returns how many."""
    if retention_seconds <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    with db.read() as s:
        tenant_pks = [int(pk) for pk in s.execute(select(TenantRow.pk)).scalars()]
    total = 0
    for tenant_pk in tenant_pks:  # per tenant, so each query uses (tenant_pk, time)
        while True:
            with db.write() as s:
                pks = list(
                    s.execute(
                        select(OperationRow.pk)
                        .where(OperationRow.tenant_pk == tenant_pk, OperationRow.time < cutoff)
                        .limit(batch)
                    ).scalars()
                )
                if pks:
                    s.execute(delete(OperationRow).where(OperationRow.pk.in_(pks)))
            total += len(pks)
            if len(pks) < batch:
                break
    return total


class Compactor:
    """Runs `run_retention` and `run_history_retention` every
    `compaction_interval_seconds` on the server's loop."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.retention = settings.event_retention_seconds
        self.history_retention = settings.history_retention_seconds
        self.interval = max(settings.compaction_interval_seconds, 1)
        #: The time retention is measured from; tests set it to control which
        #: records are "old" instead of waiting (or dating records in the past).
        self.clock: Callable[[], datetime] = utcnow
        #: Passes completed (failed ones included): what a test waits for.
        self.passes = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if (self.retention > 0 or self.history_retention > 0) and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="compaction")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                now = self.clock()
                removed = await self.db.run(run_retention, self.db, self.retention, now)
                if removed:
                    log.info(
                        "compacted %d events of %d tenants", sum(removed.values()), len(removed)
                    )
                ops = await self.db.run(run_history_retention, self.db, self.history_retention, now)
                if ops:
                    log.info("deleted %d operations-history records past retention", ops)
            except Exception as exc:  # retried at the next interval
                log.warning("compaction failed: %s", type(exc).__name__)
            self.passes += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stopping.wait()
