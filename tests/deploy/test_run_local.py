"""`make run`'s script: the services up on SQLite, a demo tenant, and a base URL,
token and admin console sign-in link that work as printed; SIGTERM stops everything
cleanly."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ..support import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_run_prints_a_working_base_url_and_token(tmp_path: Path) -> None:
    env = {
        "IDENTITY_DATABASE_URL": f"sqlite:///{tmp_path}/identity.db",
        "IDENTITY_LISTEN": f"127.0.0.1:{free_port()}",
        "SCIM_LISTEN": f"127.0.0.1:{free_port()}",
        "ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "run_local.py")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "sign in to the admin console" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            text = log.read_text()
            base = re.search(r"SCIM base URL\s+(\S+)", text).group(1)
            token = re.search(r"bearer token\s+(\S+)", text).group(1)
            assert base.endswith("/scim/v2/demo")
            req = urllib.request.Request(
                f"{base}/Users",
                data=json.dumps({"userName": "try@example.com"}).encode(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/scim+json",
                },
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 201
            # The sign-in link, on the last line, signs in to the console once.
            link = text.rstrip().splitlines()[-1].strip()
            assert link.startswith(f"http://{env['ADMIN_LISTEN']}/signin?token=adm_"), text
            with urllib.request.urlopen(link, timeout=10) as resp:  # opening it uses nothing
                assert resp.status == 200 and "Set-Cookie" not in resp.headers
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
            press = urllib.request.Request(
                f"http://{env['ADMIN_LISTEN']}/signin",
                data=urllib.parse.urlencode({"token": token}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(press, timeout=10) as resp:  # Continue: signed in
                assert resp.status == 200
                assert "identity_admin_session=ses_" in resp.headers["Set-Cookie"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
    assert_closed(env)
    # A second run reuses the tenant and still prints a working token: it reads
    # what the first run wrote.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "run_local.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if "bearer token" in line:
                break
        text = "".join(printed)
        again = re.search(r"SCIM base URL\s+(\S+)", text).group(1)
        token = re.search(r"bearer token\s+(\S+)", text).group(1)
        assert again == base
        req = urllib.request.Request(
            f"{again}/Users?" + urllib.parse.urlencode({"filter": 'userName eq "try@example.com"'}),
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            found = json.loads(resp.read())
        assert found["totalResults"] == 1, found
        assert found["Resources"][0]["userName"] == "try@example.com"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert_closed(env)


def assert_closed(env: dict[str, str]) -> None:
    """The services are gone once the script exits (no orphaned children)."""
    for key in ("IDENTITY_LISTEN", "SCIM_LISTEN", "ADMIN_LISTEN"):
        host, port = env[key].rsplit(":", 1)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, f"{key} still answers after make run stopped"
            time.sleep(0.2)
