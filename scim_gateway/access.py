"""How often a tenant may call: rate limits. (What a token may do, its scope, is the
core's to decide: identity_service/edge/auth.py.)

Rate limits are a token bucket per tenant in each gunicorn worker (not shared
between workers or gateway replicas): a gateway with W workers admits up to W
times the configured rate. An empty bucket answers 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .errors import ScimError


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
