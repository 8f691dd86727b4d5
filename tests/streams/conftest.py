"""Fixtures and helpers of the change-stream tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from identity_service.edge.server import IdentityService
from identity_service.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import ChangeEvent, User

from ..support import ServiceThread

#: Client channel options so a restarted service is found within a second.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls `cond` until it holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Collector:
    """Drains an event iterator on a background thread."""

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator
        self.events: list[ChangeEvent] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.iterator:
                self.events.append(ev)
        except BaseException as exc:  # handed to the test
            self.error = exc

    @property
    def revisions(self) -> list[int]:
        return [e.revision for e in self.events]

    def wait_revision(self, revision: int, timeout: float = 10.0) -> None:
        def reached() -> bool:
            if self.error is not None:
                raise AssertionError(f"stream failed: {self.error!r}")
            return bool(self.events) and self.events[-1].revision >= revision

        wait_until(reached, timeout, f"revision {revision} (have {self.revisions[-3:]})")

    def close(self) -> None:
        self.iterator.close()
        self.thread.join(5)


def new_user(i: int | str = "") -> User:
    return User(user_name=f"u{i}-{uuid.uuid4().hex[:8]}@example.com", active=True)


#: Pool size of the extra services tests start: PostgreSQL's connections are shared by
#: every test worker (and, on a shared machine, by other suites), and the default pool
#: of an extra service is sized for production, not for a test.
SMALL_POOL = 2


def big_user(i: int | str, size: int) -> User:
    """A user whose stored document (and so its events) is about `size` bytes larger."""
    u = new_user(i)
    u.extensions.update({"urn:example:scim:blob": {"data": "z" * size}})
    return u


@pytest.fixture
def service_factory(database_url: str) -> Iterator[Callable[..., tuple[IdentityService, str]]]:
    """Starts extra in-process identity services on the test database with
    settings overrides: factory(**fields) -> (service, target)."""
    started: list[ServiceThread] = []

    def start(**overrides: Any) -> tuple[IdentityService, str]:
        # Retention off unless asked for: these services share the test database,
        # where other tests keep records dated in the past.
        base = Settings(
            database_url=database_url,
            listen="127.0.0.1:0",
            event_retention_seconds=0,
            history_retention_seconds=0,
        )
        settings = replace(base, **overrides)
        thread = ServiceThread(settings)
        started.append(thread)
        target = thread.start()
        assert thread.service is not None
        return thread.service, target

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def fast_client(identity_target: str) -> Iterator[IdentityClient]:
    with IdentityClient(identity_target, options=FAST_RECONNECT) as c:
        yield c
