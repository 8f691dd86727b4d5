"""`identity-service healthcheck` (the container healthcheck) against a real server
that speaks TLS and requires client certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..security.helpers import make_pki, start_secure_identity, write_credentials
from ..support import VENV_BIN


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "identity-service"), "healthcheck"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_healthcheck_speaks_tls_with_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    creds = write_credentials(tmp_path / "credentials.json", [])
    proc, target = start_secure_identity(
        f"sqlite:///{tmp_path / 'identity.db'}", tmp_path, pki, creds
    )
    server = {
        "IDENTITY_LISTEN": target,
        "IDENTITY_TLS_CERT_FILE": str(pki.server_cert),
        "IDENTITY_TLS_KEY_FILE": str(pki.server_key),
        "IDENTITY_TLS_CLIENT_CA_FILE": str(pki.ca),
    }
    try:
        ok = healthcheck(
            {
                **server,
                "IDENTITY_HEALTHCHECK_CA_FILE": str(pki.ca),
                "IDENTITY_HEALTHCHECK_CERT_FILE": str(pki.client_cert),
                "IDENTITY_HEALTHCHECK_KEY_FILE": str(pki.client_key),
            }
        )
        assert ok.returncode == 0, ok.stderr
        # Without a client certificate: said plainly, not a hang or a traceback.
        no_cert = healthcheck({**server, "IDENTITY_HEALTHCHECK_CA_FILE": str(pki.ca)})
        assert no_cert.returncode == 1
        assert "IDENTITY_HEALTHCHECK_CERT_FILE" in no_cert.stderr
        # A certificate the server does not trust: refused.
        rogue = healthcheck(
            {
                **server,
                "IDENTITY_HEALTHCHECK_CA_FILE": str(pki.ca),
                "IDENTITY_HEALTHCHECK_CERT_FILE": str(pki.rogue_cert),
                "IDENTITY_HEALTHCHECK_KEY_FILE": str(pki.rogue_key),
            }
        )
        assert rogue.returncode == 1 and "UNAVAILABLE" in rogue.stderr
        # Plaintext against the TLS server fails.
        plain = healthcheck({"IDENTITY_LISTEN": target})
        assert plain.returncode == 1
    finally:
        proc.stop()
