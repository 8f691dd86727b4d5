"""Concurrent PATCHes of one resource through the real processes (gunicorn gateway,
identity-service) on both databases: the core applies each PATCH under the
resource's row lock, so none is refused (no 409) and none is lost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scim_identity_client import IdentityClient

from ..support import VENV_BIN, Proc, free_port, start_identity_process, throwaway_pg_database
from .test_e2e import PATCH_OP, request, wait_http_ready

pytestmark = pytest.mark.e2e

WRITERS = 16
ROUNDS = 20


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'patch.db'}"
    else:
        with throwaway_pg_database("identity_patch") as url:
            yield url


def _patch(port: int, path: str, token: str, *ops: dict[str, object]) -> int:
    status, _, body = request(
        port, "PATCH", path, token, {"schemas": [PATCH_OP], "Operations": list(ops)}
    )
    assert status == 200, (status, body)  # never 409: no request is refused for racing
    return status


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_patches_of_one_user_and_one_group_are_all_applied(
    backend: str, tmp_path: Path
) -> None:
    with _database(backend, tmp_path) as url:
        core, target = start_identity_process(url, tmp_path)
        port = free_port()
        gateway = Proc(
            [str(VENV_BIN / "scim-gateway")],
            {
                "SCIM_IDENTITY_TARGET": target,
                "SCIM_LISTEN": f"127.0.0.1:{port}",
                "SCIM_WORKERS": "2",
            },
            tmp_path / "gateway.log",
        )
        try:
            with IdentityClient(target) as admin:
                tenant = admin.create_tenant("race")
                token = admin.issue_token(tenant.id).secret
            base = "/scim/v2/race"
            wait_http_ready(port, gateway)
            status, _, user = request(port, "POST", f"{base}/Users", token, {"userName": "ada"})
            assert status == 201, user
            members = []
            for i in range(WRITERS):
                status, _, m = request(port, "POST", f"{base}/Users", token, {"userName": f"m{i}"})
                assert status == 201, m
                members.append(m["id"])
            status, _, group = request(
                port, "POST", f"{base}/Groups", token, {"displayName": "crowd"}
            )
            assert status == 201, group
            upath, gpath = f"{base}/Users/{user['id']}", f"{base}/Groups/{group['id']}"

            with ThreadPoolExecutor(WRITERS) as pool:
                for rnd in range(ROUNDS):
                    # Each writer adds its own entitlement to the user...
                    list(
                        pool.map(
                            lambda i, r=rnd: _patch(
                                port,
                                upath,
                                token,
                                {
                                    "op": "add",
                                    "path": "entitlements",
                                    "value": [{"value": f"e{r}-{i}"}],
                                },
                            ),
                            range(WRITERS),
                        )
                    )
                    # ...and adds (even rounds) or removes (odd) its member of the group.
                    op = (
                        (
                            lambda i: {
                                "op": "add",
                                "path": "members",
                                "value": [{"value": members[i]}],
                            }
                        )
                        if rnd % 2 == 0
                        else (
                            lambda i: {"op": "remove", "path": f'members[value eq "{members[i]}"]'}
                        )
                    )
                    list(
                        pool.map(lambda i, op=op: _patch(port, gpath, token, op(i)), range(WRITERS))
                    )
                    status, _, g = request(port, "GET", gpath, token)
                    assert status == 200
                    shown = {m["value"] for m in g.get("members", [])}
                    assert shown == (set(members) if rnd % 2 == 0 else set()), rnd

            status, _, final = request(port, "GET", upath, token)
            assert status == 200
            got = {e["value"] for e in final["entitlements"]}
            assert got == {f"e{r}-{i}" for r in range(ROUNDS) for i in range(WRITERS)}
            # Every PATCH was one change: version 1 + 320.
            assert final["meta"]["version"] == f'W/"{1 + ROUNDS * WRITERS}"'
            status, _, g = request(port, "GET", gpath, token)
            assert g["meta"]["version"] == f'W/"{1 + ROUNDS * WRITERS}"'
        finally:
            assert gateway.stop() == 0, gateway.output()
            core.stop()
