"""The client as its own distribution (clients/pyproject.toml): installed alone in a
fresh virtual environment it brings grpcio and protobuf and no server dependency, and
runs the README's client example against a running, secured core."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from identity_service.settings import Settings
from scim_identity_client import IdentityClient

from ..security.helpers import ADMIN_SECRET, SUBSCRIBER_SECRET, write_credentials
from ..support import ROOT, ServiceThread
from .test_readme_client import run_readme_example

pytestmark = pytest.mark.e2e


def test_the_client_alone_runs_the_readme_example(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(ROOT / "clients")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    installed = {
        line.split("==")[0].split(" @ ")[0].strip().lower().replace("_", "-")
        for line in freeze.splitlines()
        if line.strip()
    }
    # gRPC's packages and protobuf; nothing of the server's.
    assert installed == {
        "grpcio",
        "grpcio-status",  # the rich error status the core sends its ErrorDetail in
        "googleapis-common-protos",  # grpcio-status's google.rpc messages
        "protobuf",
        "typing-extensions",  # grpcio's
        "scim-identity-client",
    }, installed
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('sqlalchemy', 'falcon', 'alembic', 'psycopg', 'gunicorn', "
            "'identity_service', 'scim_gateway') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,  # not the repository, whose packages `-c` would find
    )
    assert probe.stdout.strip() == "[]"
    version = subprocess.run(
        [str(env_dir / "bin" / "identityctl"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert version.stdout.strip() == "identityctl 0.1.0"

    creds = write_credentials(tmp_path / "credentials.json", ["demo"])
    core = ServiceThread(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'identity.db'}",
            listen="127.0.0.1:0",
            credentials_file=str(creds),
        )
    )
    target = core.start()
    try:
        with IdentityClient(target, token=ADMIN_SECRET) as admin:
            admin.create_tenant("demo")
        token = tmp_path / "token"
        token.write_text(ADMIN_SECRET + "\n")
        out = run_readme_example(python, target, token, cwd=tmp_path).splitlines()
        assert out[0].endswith(" ada@example.com")
        assert out[1].startswith("1 tenant.created ")
        # A subscriber credential may read but not write: the example's create fails.
        token.write_text(SUBSCRIBER_SECRET)
        denied = subprocess.run(
            [
                python,
                "-c",
                "from scim_identity_client import IdentityClient as C\n"
                "C.from_env().create_user('demo', __import__('scim_identity_client.types', "
                "fromlist=['User']).User(user_name='x@example.com'))",
            ],
            env={"IDENTITY_TARGET": target, "IDENTITY_TOKEN_FILE": str(token)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert denied.returncode == 1 and "PermissionDenied" in denied.stderr
    finally:
        core.stop()
    assert sys.executable != python
