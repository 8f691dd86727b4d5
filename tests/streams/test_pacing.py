"""A busy tenant's feed paces its reads of the log (`_Feed._pace`): after a delivery
round it waits long enough that delivering takes at most the loop share, and never
longer than the delay ceiling, so many subscribers get a larger share of the loop
rather than every one of them a longer delay. The round's cost is set through the
CPU clock the feed reads, and the wait is what the feed asks asyncio.sleep for: no
time passes in these tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from identity_service.changes import streams
from identity_service.settings import Settings


def _paced_wait(
    monkeypatch: pytest.MonkeyPatch, round_cpu: float, woken: int, **settings: Any
) -> float:
    """The wait a feed asks for after a round of `woken` deliveries that cost
    `round_cpu` seconds of the process's CPU."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    async def scenario() -> None:
        hub = streams.StreamHub(db=None, settings=Settings(**settings))  # type: ignore[arg-type]  # no reads here
        tenant = streams._Tenant(pk=1, id="t", revision=0, compacted_through=0)
        feed = streams._Feed(hub, tenant, head=0)
        for _ in range(woken):
            feed.awaiting.add(
                streams._Watcher("t", streams._Filter(frozenset(), frozenset()), 1, 1, 1.0, 0)
            )
        feed.round_done.set()  # every woken subscriber took its message
        now = 1000.0
        monkeypatch.setattr(time, "process_time", lambda: now + round_cpu)
        feed.delivered_cpu = now
        monkeypatch.setattr(asyncio, "sleep", sleep)
        # The round started just now on the loop's clock: the whole wait is still ahead.
        await feed._pace(asyncio.get_running_loop().time())

    asyncio.run(scenario())
    assert len(asked) == 1, asked
    return asked[0]


def test_a_cheap_round_is_paced_to_the_loop_share(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 subscribers, 10 ms of CPU: at a 10 % share the feed waits 9 x 10 ms.
    wait = _paced_wait(monkeypatch, 0.010, 100, watch_loop_share_percent=10)
    assert wait == pytest.approx(0.090, abs=0.005)


def test_a_costly_round_waits_no_longer_than_the_delay_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,000 subscribers, 100 ms of CPU: the share alone would wait 900 ms.
    wait = _paced_wait(monkeypatch, 0.100, 1000, watch_loop_share_percent=10)
    assert wait == pytest.approx(Settings().watch_max_delay_ms / 1000, abs=0.005)
    wait = _paced_wait(
        monkeypatch, 0.100, 1000, watch_loop_share_percent=10, watch_max_delay_ms=300
    )
    assert wait == pytest.approx(0.300, abs=0.005)


def test_the_batch_window_is_the_least_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    wait = _paced_wait(
        monkeypatch,
        0.0,
        1,
        watch_loop_share_percent=100,
        watch_batch_window_ms=20,
        watch_max_delay_ms=5,
    )
    assert wait == pytest.approx(0.020, abs=0.002)
    wait = _paced_wait(monkeypatch, 0.100, 10, watch_batch_window_ms=20, watch_max_delay_ms=5)
    assert wait == pytest.approx(0.020, abs=0.002)
