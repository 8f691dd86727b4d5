"""`*_FILE` variants of every secret setting, read through one helper
(`scim_identity_api.env.secret`) by the core, the gateway and the client."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from identity_service.settings import Settings as CoreSettings
from scim_gateway.settings import Settings as GatewaySettings
from scim_gateway.settings import SettingsError
from scim_identity_api.env import SecretSettingError, secret
from scim_identity_client import IdentityClient

from ..support import VENV_BIN


def test_secret_reads_the_variable_or_the_file(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_text("from-a-file\n")  # `echo secret > file` leaves a line break
    assert secret({"X": " inline "}, "X") == "inline"
    assert secret({"X_FILE": str(f)}, "X") == "from-a-file"
    assert secret({}, "X") == ""
    with pytest.raises(SecretSettingError, match="not both"):
        secret({"X": "a", "X_FILE": str(f)}, "X")
    with pytest.raises(SecretSettingError, match="FileNotFoundError"):
        secret({"X_FILE": str(tmp_path / "missing")}, "X")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretSettingError, match="empty"):
        secret({"X_FILE": str(tmp_path / "empty")}, "X")


def test_core_database_password_from_a_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("p@ss/word:1\n")
    s = CoreSettings.from_env(
        {
            "IDENTITY_DATABASE_URL": "postgresql://identity@db:5432/identity",
            "IDENTITY_DATABASE_PASSWORD_FILE": str(pw),
        }
    )
    assert s.database_url == "postgresql://identity:p%40ss%2Fword%3A1@db:5432/identity"
    assert "p%40ss" not in repr(s) and "p@ss" not in repr(s)
    url = tmp_path / "url"
    url.write_text("postgresql://a:b@db/x\n")
    assert CoreSettings.from_env({"IDENTITY_DATABASE_URL_FILE": str(url)}).database_url == (
        "postgresql://a:b@db/x"
    )
    for bad in ("sqlite:///x.db", "postgresql://a:b@db/x", "postgresql://db/x"):
        with pytest.raises(SystemExit):
            CoreSettings.from_env(
                {"IDENTITY_DATABASE_URL": bad, "IDENTITY_DATABASE_PASSWORD": "pw"}
            )
    with pytest.raises(SystemExit, match="not both"):
        CoreSettings.from_env({"IDENTITY_DATABASE_URL": "x", "IDENTITY_DATABASE_URL_FILE": "y"})


def test_gateway_token_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("gateway-secret\n")
    s = GatewaySettings.from_env({"SCIM_IDENTITY_TOKEN_FILE": str(f)})
    assert s.identity_token == "gateway-secret"
    assert "gateway-secret" not in repr(s)
    with pytest.raises(SettingsError, match="FileNotFoundError"):
        GatewaySettings.from_env({"SCIM_IDENTITY_TOKEN_FILE": str(tmp_path / "nope")})


def test_client_token_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("client-secret\n")
    with IdentityClient.from_env(
        {"IDENTITY_TARGET": "127.0.0.1:1", "IDENTITY_TOKEN_FILE": str(f)}
    ) as client:
        assert client.target == "127.0.0.1:1"
        assert client._token == "client-secret"
    # identityctl: a bad file is one line on stderr, not a traceback.
    r = subprocess.run(
        [str(VENV_BIN / "identityctl"), "tenant", "list"],
        env={"IDENTITY_TOKEN_FILE": str(tmp_path / "nope"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("identityctl: IDENTITY_TOKEN_FILE") and "Traceback" not in r.stderr
