"""The core's attribute catalogue as this worker uses it (PolicyService.GetSchemas)."""

from __future__ import annotations

import time
from collections.abc import Callable

from scim_identity_client import IdentityClient

from .errors import core_errors
from .http import Call
from .scim.schemas import SchemaSet, schema_set_of

_MEMO_KEY = "schema_set"


class Catalogue:
    """The core's attribute catalogue for this worker (one per app).

    The built-in catalogue changes only with the core's release: it is fetched on
    first use and kept `ttl` seconds, then fetched again (a worker holds no data,
    only this description of it). A tenant's own schemas are fetched for the
    requests that need them, at most once per request (a /Bulk request shares it
    between its operations), never cached across requests, so a policy change
    takes effect on the next request."""

    def __init__(
        self,
        client: IdentityClient,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: tuple[float, SchemaSet] | None = None

    def builtin(self) -> SchemaSet:
        cached, now = self._cached, self._clock()
        if cached is None or now - cached[0] >= self._ttl:
            with core_errors():
                found = schema_set_of(self._client.get_schemas())
            # One tuple assignment: a thread that reads meanwhile sees old or new.
            self._cached = cached = (now, found)
        return cached[1]

    def for_tenant(self, call: Call) -> SchemaSet:
        """The built-in schemas plus the calling tenant's own."""
        cached = call.memo.get(_MEMO_KEY)
        if isinstance(cached, SchemaSet):
            return cached
        with core_errors():
            found = schema_set_of(self._client.get_schemas(call.tenant_id, ctx=call.ctx))
        call.memo[_MEMO_KEY] = found
        return found
