"""End to end with security on: the real `identity-service` with mTLS and
service credentials, the real `scim-gateway` (gunicorn, 2 workers) calling it
with a gateway credential, and `identityctl` with an admin credential."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scim_identity_api.v1 import history_pb2

from ..gateway.test_e2e import request, wait_http_ready
from ..support import VENV_BIN, Proc, eventually, free_port
from .helpers import (
    ADMIN_SECRET,
    ALL_SERVICE_SECRETS,
    GATEWAY_SECRET,
    make_pki,
    secure_client,
    start_secure_identity,
    write_credentials,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("security-e2e")]
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def test_tokens_history_and_secrets_through_the_secured_processes(
    tmp_path: Path, fresh_database_url: str
) -> None:
    pki = make_pki(tmp_path)
    creds = write_credentials(tmp_path / "credentials.json", ["acme"])
    core, target = start_secure_identity(fresh_database_url, tmp_path, pki, creds)
    tls = {
        "IDENTITY_TLS_CA_FILE": str(pki.ca),
        "IDENTITY_TLS_CERT_FILE": str(pki.client_cert),
        "IDENTITY_TLS_KEY_FILE": str(pki.client_key),
    }
    ctl_env = {"IDENTITY_TARGET": target, "IDENTITY_TOKEN": ADMIN_SECRET, **tls}

    def ctl(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(VENV_BIN / "identityctl"), *args],
            check=False,
            env={"PATH": str(VENV_BIN), **ctl_env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
        return done

    port = free_port()
    gateway = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {
            "SCIM_IDENTITY_TARGET": target,
            "SCIM_IDENTITY_TOKEN": GATEWAY_SECRET,
            "SCIM_IDENTITY_TLS_CA_FILE": str(pki.ca),
            "SCIM_IDENTITY_TLS_CERT_FILE": str(pki.client_cert),
            "SCIM_IDENTITY_TLS_KEY_FILE": str(pki.client_key),
            "SCIM_LISTEN": f"127.0.0.1:{port}",
            "SCIM_WORKERS": "2",
        },
        tmp_path / "gateway.log",
    )
    secrets: list[str] = []
    try:
        tenant_id = ctl("tenant", "create", "acme").stdout.strip()
        first = ctl("token", "issue", "acme", "--description", "okta").stdout.split()[-1]
        secrets.append(first)
        first_id = ctl("token", "list", "acme").stdout.split()[0]
        wait_http_ready(port, gateway)
        base = "/scim/v2/acme"

        # A token works (on both workers: several requests)...
        for _ in range(6):
            status, _, body = request(port, "GET", f"{base}/Users", first)
            assert status == 200, (body, gateway.output()[-4000:], core.output()[-4000:])
        status, headers, body = request(
            port, "POST", f"{base}/Users", first, {"schemas": [USER], "userName": "ada@acme.io"}
        )
        assert status == 201, body
        rid = headers["x-request-id"]
        # ...until revoked: the very next request fails, in every worker.
        ctl("token", "revoke", "acme", first_id)
        for _ in range(6):
            status, headers, body = request(port, "GET", f"{base}/Users", first)
            assert status == 401, body
            assert headers["www-authenticate"].startswith("Bearer")

        # At most two live tokens; the third is refused.
        second = ctl("token", "issue", "acme").stdout.split()[-1]
        third = ctl("token", "issue", "acme").stdout.split()[-1]
        secrets += [second, third]
        refused = ctl("token", "issue", "acme", ok=False)
        assert "2 live tokens" in refused.stderr
        # Rotation at the limit is one transaction: the new secret works, the old fails.
        second_id = next(
            line.split()[0]
            for line in ctl("token", "list", "acme").stdout.splitlines()
            if second[:11] in line
        )
        rotated = ctl("token", "rotate", "acme", "--revoke", second_id)
        new = rotated.stdout.split()[-1]
        secrets.append(new)
        assert request(port, "GET", f"{base}/Users", second)[0] == 401
        assert request(port, "GET", f"{base}/Users", new)[0] == 200

        # The request id of the SCIM response is in the history, the events and the log.
        with secure_client(target, pki, ADMIN_SECRET) as admin:
            # (the gateway writes its history in the background, within a second)
            created = eventually(
                lambda: [
                    o
                    for o in admin.list_operations(tenant_id).operations
                    if o.kind == history_pb2.OPERATION_KIND_CREATE
                ]
            )
            assert [o.request_id for o in created] == [rid]
            assert created[0].status == 201 and created[0].resource_type == "User"
            events = []
            for ev in admin.watch(tenant_id, since=0):
                events.append(ev)
                if ev.revision >= admin.get_revision(tenant_id).revision:
                    break
            assert rid in {ev.request_id for ev in events}
            history_text = "".join(str(o) for o in admin.list_operations(tenant_id).operations)
            events_text = "".join(str(ev) for ev in events)
        assert rid in core.output()

        # An inactive connector refuses everything, with a clear SCIM error.
        ctl("tenant", "deactivate", "acme")
        status, _, body = request(port, "GET", f"{base}/Users", new)
        assert status == 403 and "inactive" in body["detail"]
    finally:
        gateway.stop()
        core.stop()

    # Secrets never appear in logs, history or events.
    logs = core.log_path.read_text() + gateway.log_path.read_text()
    # The logs are there to be searched: the gateway's access line names the request too.
    assert rid in gateway.log_path.read_text()
    for secret in (*secrets, *ALL_SERVICE_SECRETS):
        for where, text in (("logs", logs), ("history", history_text), ("events", events_text)):
            assert secret not in text, f"a secret leaked into the {where}"
