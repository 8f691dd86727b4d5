"""Shared fixtures. Storage behaviour runs against both SQLite and the real
PostgreSQL on this machine (a throwaway database per run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from identity_service.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant

from .support import ServiceThread, throwaway_pg_database

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a PostgreSQL database created for this test run (per xdist worker)."""
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fresh_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'identity.db'}"
    else:
        with throwaway_pg_database("identity_fresh") as url:
            yield url


@pytest.fixture(params=BACKENDS)
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own on each backend: for services started
    with settings of their own, and for tests that count what is in it."""
    yield from _fresh_database(str(request.param), tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """fresh_database_url, shared by a module's tests."""
    yield from _fresh_database(str(request.param), tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'identity.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="session")
def identity_service(database_url: str) -> Iterator[ServiceThread]:
    """A real identity service (in-process, port 0) on `backend`. Its retention
    is off: tests date history records and events in the past, and a pass landing
    mid-test would delete them. Retention is tested on services of its own, with
    a controlled clock (tests/security/test_tokens_connector_history.py)."""
    service = ServiceThread(
        Settings(
            database_url=database_url,
            listen="127.0.0.1:0",
            event_retention_seconds=0,
            history_retention_seconds=0,
        )
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def identity_target(identity_service: ServiceThread) -> str:
    return f"127.0.0.1:{identity_service.port}"


@pytest.fixture
def identity_service_db(identity_service: ServiceThread) -> object:
    """The service's Database (to observe the SQL it issues)."""
    assert identity_service.service is not None
    return identity_service.service.db


@pytest.fixture(scope="session")
def client(identity_target: str) -> Iterator[IdentityClient]:
    with IdentityClient(identity_target) as c:
        c.wait_ready()
        yield c


@pytest.fixture
def tenant(client: IdentityClient, request: pytest.FixtureRequest) -> Tenant:
    """A fresh tenant per test: tenants are the unit of isolation."""
    import uuid

    return client.create_tenant(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def token(client: IdentityClient, tenant: Tenant) -> str:
    return client.issue_token(tenant.id, description="tests").secret


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
