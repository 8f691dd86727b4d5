"""Tokens' `last_used`, recorded off the request path.

Checking a bearer is a read; writing when the token was last used is not, and
must not make a read wait on the write lock (a SQLite writer in another process,
a locked row on PostgreSQL). So a call that finds a token's `last_used` stale
(older than tenants.LAST_USED_RESOLUTION) only notes the time here; a task on the
server's loop writes the noted times in one short transaction every `interval`
seconds (as the gateway batches the history). While writes are blocked the
notes wait and are written once they can be; a graceful stop writes what is
left. `last_used` is therefore up to `interval` seconds (plus any time writes are
blocked) behind, on top of its 60 s resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from ..domain import tenants
from ..storage.db import Database
from ..storage.models import utcnow

log = logging.getLogger("identity_service")


class TokenUses:
    def __init__(self, db: Database, *, interval: float = 1.0) -> None:
        self._db = db
        self._interval = interval
        #: token id -> when it was last seen used, not yet written.
        self._noted: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, token_id: str) -> None:
        """Called on the loop when a call found the token's last_used stale."""
        self._noted[token_id] = utcnow()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="token-uses")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> bool:
        """Writes what was noted; False (and the notes kept) when it cannot now."""
        if not self._noted:
            return True
        batch, self._noted = self._noted, {}
        try:
            await self._db.run(self._write, batch)
        except Exception as err:
            for token_id, when in batch.items():  # kept, the newer time winning
                if token_id not in self._noted or self._noted[token_id] < when:
                    self._noted[token_id] = when
            log.warning("could not record %d tokens' last use (will retry): %s", len(batch), err)
            return False
        return True

    def _write(self, batch: dict[str, datetime]) -> None:
        with self._db.write() as s:
            tenants.touch_tokens(s, batch)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
