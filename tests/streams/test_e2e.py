"""End to end over real `identity-service` processes: kill -9 in the middle of a
stream of writes, and two replicas over one PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from scim_identity_client import AlreadyExists, IdentityClient, IdentityError
from scim_identity_client.types import User

from ..support import VENV_BIN, Proc, free_port, start_identity_process, wait_serving
from .conftest import FAST_RECONNECT, Collector, new_user, wait_until

pytestmark = pytest.mark.e2e


def _start_on(database_url: str, target: str, log: Path) -> Proc:
    """The real service on a fixed address, so a restart is the same target."""
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {"IDENTITY_DATABASE_URL": database_url, "IDENTITY_LISTEN": target},
        log,
    )
    try:
        wait_serving(target)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"identity-service did not start:\n{proc.output()}") from None
    return proc


def _database(db: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh SQLite file, or the session's PostgreSQL database."""
    if db == "sqlite":
        return f"sqlite:///{tmp_path / 'identity.db'}"
    return str(request.getfixturevalue("pg_database"))


class Writer:
    """Creates users one after another until stopped, retrying through outages.
    A create whose answer was lost is retried with the same name; ALREADY_EXISTS
    then means it had committed."""

    def __init__(self, client: IdentityClient, tenant_id: str, prefix: str) -> None:
        self.client = client
        self.tenant_id = tenant_id
        self.prefix = prefix
        self.acked: list[str] = []  # user names the service confirmed
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = f"{self.prefix}-{i}@example.com"
            try:
                self.client.create_user(self.tenant_id, User(user_name=name))
            except AlreadyExists:
                pass
            except IdentityError:
                self.failures += 1
                self.stop.wait(0.02)
                continue
            self.acked.append(name)
            i += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _read_lines(stream: object, into: list[str]) -> threading.Thread:
    def run() -> None:
        for line in stream:
            into.append(line)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_kill_9_mid_stream_subscriber_resumes_exactly_once(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, target = _database(db, tmp_path, request), f"127.0.0.1:{free_port()}"
    proc = _start_on(url, target, tmp_path / "run1.log")
    cli: subprocess.Popen[str] | None = None
    try:
        with (
            IdentityClient(target, options=FAST_RECONNECT, timeout=5) as writer_client,
            IdentityClient(target, options=FAST_RECONNECT) as sub_client,
        ):
            tenant = writer_client.create_tenant(f"k-{uuid.uuid4().hex[:10]}")
            col = Collector(sub_client.watch(tenant.id, since=0, heartbeat_seconds=1))
            cli_args = ["--target", target, "watch", tenant.id, "--from", "0", "--json"]
            cli = subprocess.Popen(
                [str(VENV_BIN / "identityctl"), *cli_args],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            cli_lines: list[str] = []
            _read_lines(cli.stdout, cli_lines)
            writer = Writer(writer_client, tenant.id, "w")

            wait_until(lambda: len(col.events) >= 40, 20, "40 events before the kill")
            wait_until(lambda: len(cli_lines) >= 10, 20, "identityctl printing")
            proc.kill()  # SIGKILL: no shutdown, in-flight writes lost or committed
            killed_at = len(writer.acked)
            proc = _start_on(url, target, tmp_path / "run2.log")
            wait_until(lambda: len(writer.acked) >= killed_at + 40, 30, "writes after restart")
            writer.finish()

            final = writer_client.get_revision(tenant.id).revision
            col.wait_revision(final, timeout=30)
            col.close()
            assert col.error is None
            # Every event exactly once, in order: the iterator already drops repeats.
            assert col.revisions == list(range(1, final + 1))
            created = {e.user.user_name for e in col.events if e.WhichOneof("resource") == "user"}
            assert set(writer.acked) <= created
            assert col.iterator.reconnects >= 1

            wait_until(
                lambda: bool(cli_lines) and json.loads(cli_lines[-1])["revision"] >= final,
                30,
                "identityctl to reach the final revision",
            )
            printed = [json.loads(line) for line in cli_lines]
            assert [p["revision"] for p in printed] == list(range(1, final + 1))
            assert printed[0]["type"] == "tenant.created"
            assert printed[-1]["type"] == "user.created"
            assert printed[-1]["resource"]["userName"].startswith("w-")
    finally:
        if cli is not None:
            cli.terminate()
            assert cli.wait(10) in (0, -15)
        proc.stop()


def test_two_replicas_over_one_postgresql_serve_the_same_gapless_sequence(
    pg_database: str, tmp_path: Path
) -> None:
    # Polling every minute: the replicas learn of each other's commits through
    # LISTEN/NOTIFY alone.
    slow_poll = {"IDENTITY_WATCH_POLL_INTERVAL_MS": "60000"}
    proc_a, target_a = start_identity_process(pg_database, tmp_path, **slow_poll)
    proc_b, target_b = start_identity_process(pg_database, tmp_path, **slow_poll)
    try:
        with IdentityClient(target_a) as a, IdentityClient(target_b) as b:
            tenant = a.create_tenant(f"r-{uuid.uuid4().hex[:10]}")
            col_a = Collector(a.watch(tenant.id, since=0))
            col_b = Collector(b.watch(tenant.id, since=0))
            col_a.wait_revision(1)
            col_b.wait_revision(1)
            errors: list[BaseException] = []

            def write(c: IdentityClient, n: int) -> None:
                try:
                    for i in range(20):
                        u = c.create_user(tenant.id, new_user(f"{n}-{i}"))
                        if i % 4 == 0:
                            u.display_name = f"via {n}"
                            c.replace_user(tenant.id, u)
                except BaseException as exc:
                    errors.append(exc)

            threads = [
                threading.Thread(target=write, args=(a if n % 2 else b, n)) for n in range(6)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            final = a.get_revision(tenant.id).revision
            assert final == 1 + 6 * (20 + 5)
            started = time.monotonic()
            col_a.wait_revision(final, timeout=15)
            col_b.wait_revision(final, timeout=15)
            # Well under the 60 s poll: NOTIFY woke the other replica.
            assert time.monotonic() - started < 10
            col_a.close()
            col_b.close()
            seq_a = [(e.revision, e.type, e.resource_id) for e in col_a.events]
            seq_b = [(e.revision, e.type, e.resource_id) for e in col_b.events]
            assert [r for r, _, _ in seq_a] == list(range(1, final + 1))
            assert seq_a == seq_b
    finally:
        proc_a.stop()
        proc_b.stop()
