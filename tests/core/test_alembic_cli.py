"""alembic.ini: `alembic current`, `history` and `downgrade` work from the repository
root against the database the service's settings name, on both databases."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..support import ROOT, VENV_BIN, throwaway_pg_database


def alembic(url: str, *args: str) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "alembic"), "-c", str(ROOT / "alembic.ini"), *args],
        env={"IDENTITY_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


# The newest migration, from the files themselves, so a new step needs no edit here.
HEAD = max(
    p.name[:4]
    for p in (Path(__file__).parents[2] / "identity_service/storage/migrations/versions").glob(
        "0[0-9][0-9][0-9]_*.py"
    )
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_alembic_current_history_downgrade(backend: str, tmp_path: Path) -> None:
    with throwaway_pg_database("identity_alembic") as pg:
        url = f"sqlite:///{tmp_path / 'a.db'}" if backend == "sqlite" else pg
        assert HEAD in alembic(url, "history")
        alembic(url, "upgrade", "head")
        assert alembic(url, "current").split()[:2] == [HEAD, "(head)"]
        alembic(url, "downgrade", "-1")
        assert alembic(url, "current").split()[0] == f"{int(HEAD) - 1:04d}"
        alembic(url, "upgrade", "head")
        assert alembic(url, "current").split()[0] == HEAD
