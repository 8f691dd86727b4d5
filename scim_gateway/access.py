"""What a token may do (its scope) and how often a tenant may call (rate limits).

Scopes (identity.v1.TokenScope): `read-only` may only read (GET) and search
(POST .search); `users-only` may not touch Groups, by any route (/Groups, a
/Bulk operation on /Groups, or the root /.search that would list groups; the core
answers its user reads without `groups` and refuses its filters on them).
Refusals are 403 with a SCIM error naming the scope.

Rate limits are a token bucket per tenant in each gunicorn worker (not shared
between workers or gateway replicas): a gateway with W workers admits up to W
times the configured rate. An empty bucket answers 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from scim_identity_api.v1 import tenants_pb2

from .errors import ScimError
from .http import Call, Result
from .resources.common import Page, ResourceService, SearchQuery
from .scim.projection import Projection
from .scim.schemas import ResourceType

READ_ONLY = tenants_pb2.TOKEN_SCOPE_READ_ONLY
USERS_ONLY = tenants_pb2.TOKEN_SCOPE_USERS_ONLY


def read_only_refusal() -> ScimError:
    return ScimError(
        403,
        "This token's scope is read-only: it may only read (GET) and search "
        "(POST .search). Use a token with full scope to make changes.",
    )


def users_only_refusal() -> ScimError:
    return ScimError(
        403,
        "This token's scope is users-only: it may not read or change Groups. "
        "Use a token with full scope for groups.",
    )


def check_request(scope: int, method: str, path: str) -> None:
    """Refuses a request its token's scope does not allow; `path` is relative to
    the SCIM base URL, e.g. "/Groups/123" or "/Users/.search"."""
    if (
        scope == READ_ONLY
        and method not in ("GET", "HEAD")
        and not (method == "POST" and path.rstrip("/").endswith("/.search"))
    ):
        raise read_only_refusal()
    if scope == USERS_ONLY:
        first = path.strip("/").split("/", 1)[0]
        if first == "Groups":
            raise users_only_refusal()


class ScopedService:
    """A resource service that checks the calling token's scope on every
    operation, whichever route (an endpoint, /Bulk, /.search) reaches it, when
    the request already knows it. Otherwise the core refuses the operation's
    first call with the same answer (it checks the scope of the bearer the
    call carries)."""

    def __init__(self, inner: ResourceService) -> None:
        self._inner = inner

    @property
    def rtype(self) -> ResourceType:
        return self._inner.rtype

    def _check(self, call: Call, write: bool) -> None:
        scope = call.scope
        if scope == USERS_ONLY and self.rtype.name != "User":
            raise users_only_refusal()
        if write and scope == READ_ONLY:
            raise read_only_refusal()

    async def create(self, call: Call, body: dict[str, Any], projection: Projection) -> Result:
        self._check(call, True)
        return await self._inner.create(call, body, projection)

    async def get(
        self, call: Call, rid: str, projection: Projection, if_none_match: set[str] | None
    ) -> Result:
        self._check(call, False)
        return await self._inner.get(call, rid, projection, if_none_match)

    async def replace(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        self._check(call, True)
        result = await self._inner.replace(call, rid, body, projection, if_match)
        self._check(call, True)  # the scope may be known only now (see below)
        return result

    async def patch(
        self,
        call: Call,
        rid: str,
        body: dict[str, Any],
        projection: Projection,
        if_match: set[str] | None,
    ) -> Result:
        self._check(call, True)
        result = await self._inner.patch(call, rid, body, projection, if_match)
        # A PATCH that changes nothing makes only reads, which a read-only token may:
        # refuse it now that the core said what the token is (it changed nothing).
        self._check(call, True)
        return result

    async def delete(self, call: Call, rid: str, if_match: set[str] | None) -> Result:
        self._check(call, True)
        result = await self._inner.delete(call, rid, if_match)
        self._check(call, True)
        return result

    async def query(self, call: Call, q: SearchQuery) -> Page:
        self._check(call, False)
        return await self._inner.query(call, q)


class RateLimiter:
    """A token bucket per key (tenant id): `rate` requests a second on average,
    bursts of up to `burst`. Used from one worker's event loop."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        """Takes one request from `key`'s bucket: 0.0 when allowed, else the
        seconds until one will be."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def too_many_requests(wait_seconds: float) -> ScimError:
    retry = max(1, math.ceil(wait_seconds))
    return ScimError(
        429,
        f"Too many requests for this tenant; retry after {retry} s.",
        headers={"Retry-After": str(retry)},
    )
