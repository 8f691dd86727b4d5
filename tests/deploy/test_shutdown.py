"""SIGTERM: the identity service drains in-flight calls, ends streams with a status
that tells subscribers to reconnect, and exits within a bounded time; after a
restart no accepted write is missing and the subscriber resumes by itself."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scim_identity_client import IdentityClient, IdentityError
from scim_identity_client.types import User

from ..support import VENV_BIN, Proc, free_port, wait_serving

pytestmark = pytest.mark.e2e


def start(db_url: str, target: str, tmp: Path, n: int) -> Proc:
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {
            "IDENTITY_DATABASE_URL": db_url,
            "IDENTITY_LISTEN": target,
            "IDENTITY_SHUTDOWN_GRACE_SECONDS": "5",
        },
        tmp / f"identity-{n}.log",
    )
    wait_serving(target)
    return proc


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_sigterm_drains_and_a_restart_loses_nothing(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{free_port()}"
    proc = start(database_url, target, tmp_path, 1)
    accepted: list[str] = []
    refused = 0
    stop = threading.Event()
    with IdentityClient(target, timeout=5) as client:
        tenant = client.create_tenant(f"shutdown-{free_port()}")
        watch = client.watch(tenant.id, since=tenant.revision, resource_types=["User"])
        seen: list[str] = []
        done = threading.Event()

        def subscribe() -> None:
            for ev in watch:
                seen.append(ev.user.user_name)
                if done.is_set() and set(accepted) <= set(seen):
                    return

        def write() -> None:
            nonlocal refused
            i = 0
            while not stop.is_set():
                name = f"user-{i}"
                i += 1
                try:
                    client.create_user(tenant.id, User(user_name=name))
                    accepted.append(name)
                except IdentityError:
                    refused += 1  # refused while down: the client knows it was not accepted
                    time.sleep(0.05)

        sub = threading.Thread(target=subscribe, daemon=True)
        writer = threading.Thread(target=write, daemon=True)
        sub.start()
        writer.start()
        deadline = time.monotonic() + 20
        while len(accepted) < 20:
            assert time.monotonic() < deadline, "no writes got through"
            time.sleep(0.05)

        proc.popen.terminate()
        t0 = time.monotonic()
        assert proc.stop(timeout=20) == 0, proc.output()  # clean exit after draining
        assert time.monotonic() - t0 < 15, "shutdown took too long"
        before_restart = len(accepted)

        proc = start(database_url, target, tmp_path, 2)
        try:
            deadline = time.monotonic() + 20
            while len(accepted) < before_restart + 20:
                assert time.monotonic() < deadline, "writes did not resume after restart"
                time.sleep(0.05)
            stop.set()
            writer.join(10)
            done.set()
            # Every accepted write is stored...
            stored = {u.user_name for u in client.list_users(tenant.id, count=1000).users}
            assert set(accepted) <= stored
            # ...and the subscriber, reconnecting by itself, saw each exactly once, in order.
            deadline = time.monotonic() + 20
            while not set(accepted) <= set(seen):
                assert time.monotonic() < deadline, "subscriber did not catch up"
                time.sleep(0.1)
            assert len(seen) == len(set(seen))
            # In order: the one writer wrote user-0, user-1, ... one after another,
            # so their events come in that order (writes refused while the service
            # was down may still have been committed: they count, in their place).
            numbers = [int(name.rsplit("-", 1)[1]) for name in seen]
            assert numbers == sorted(numbers), seen
            assert [name for name in seen if name in set(accepted)] == accepted
            assert watch.reconnects >= 1
            watch.close()
        finally:
            stop.set()
            proc.stop()
