"""The core's attribute catalogue as this worker uses it (PolicyService.GetSchemas)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .core import Core
from .errors import ScimError, core_errors
from .http import Call
from .scim.schemas import SchemaSet, schema_set_of

_MEMO_KEY = "schema_set"


class Catalogue:
    """The core's attribute catalogue for this worker (one per app).

    The built-in catalogue changes only with the core's release: it is fetched
    when a SCIM request finds it missing or older than `ttl` seconds (`refresh`,
    awaited by the middleware before the request is handled, so that `builtin`
    answers at once), and kept (a worker holds no data, only this description of
    it). A tenant's own schemas are fetched for the requests that need them, at
    most once per request (a /Bulk request shares it between its operations),
    never cached across requests, so a policy change takes effect on the next
    request."""

    def __init__(
        self,
        core: Core,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: tuple[float, SchemaSet] | None = None

    async def refresh(self) -> None:
        """Fetches the built-in catalogue unless the one held is fresh."""
        cached, now = self._cached, self._clock()
        if cached is None or now - cached[0] >= self._ttl:
            with core_errors():
                found = schema_set_of(await self._core.client.get_schemas())
            self._cached = (now, found)

    def builtin(self) -> SchemaSet:
        if self._cached is None:  # only a request the middleware did not refresh for
            raise ScimError(503, "The attribute catalogue is not loaded yet; retry shortly.")
        return self._cached[1]

    async def for_tenant(self, call: Call) -> SchemaSet:
        """The built-in schemas plus the calling tenant's own."""
        cached = call.memo.get(_MEMO_KEY)
        if isinstance(cached, SchemaSet):
            return cached
        with core_errors():
            found = schema_set_of(await self._core.client.get_schemas(call.tenant_id, ctx=call.ctx))
        call.memo[_MEMO_KEY] = found
        return found
