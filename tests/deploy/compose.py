"""docker-compose.yml, run without Docker: each service's command (or entrypoint),
environment, volumes, dependency conditions and healthcheck, parsed from the YAML and
run as local processes in compose's order against the real PostgreSQL. Only what a
container runtime provides is rewritten: container hostnames and bind addresses to
loopback and free ports, named volumes to directories, the PostgreSQL container to a
TCP proxy in front of the test's server (`PgProxy`), which the test opens when it
chooses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ..support import PG_ADMIN_URL, PG_BIN, ROOT, VENV_BIN, Proc, TcpRelay, free_port

COMPOSE = ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} / ${VAR:-default} substitution."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def image_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile's final stage: every container starts with them."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    env: dict[str, str] = {}
    for line in final:
        if line.startswith("ENV "):
            key, _, value = line[4:].strip().partition("=")
            env[key] = value
    return env


def start_order(services: dict[str, Any]) -> list[str]:
    """The services `docker compose up` starts (no profile), dependencies first."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle through {name}"
        if name in order:
            return
        for dep in services[name].get("depends_on") or {}:
            visit(dep, (*path, name))
        order.append(name)

    for name, svc in services.items():
        if not svc.get("profiles"):
            visit(name, ())
    return order


class PgProxy(TcpRelay):
    """The `postgres` container: a TCP port that, until opened, accepts connections
    and closes them at once (a server that is not ready), then forwards to the real
    PostgreSQL. `open_after(seconds, attempts)` opens it on the first connection made
    once at least `seconds` have passed since the first refused one and at least
    `attempts` were refused, so the delay is observed, not assumed."""

    def __init__(self) -> None:
        parts = urlsplit(PG_ADMIN_URL)
        self.opened = threading.Event()
        self.refused = 0
        self.first_refused: float | None = None
        self._policy: tuple[float, int] | None = None
        super().__init__((parts.hostname or "127.0.0.1", parts.port or 5432))

    def open(self) -> None:
        self.opened.set()

    def open_after(self, seconds: float, attempts: int) -> None:
        self._policy = (seconds, attempts)

    def admit(self) -> bool:
        if not self.opened.is_set() and self._policy is not None:
            seconds, attempts = self._policy
            if (
                self.first_refused is not None
                and time.monotonic() - self.first_refused >= seconds
                and self.refused >= attempts
            ):
                self.opened.set()
        if not self.opened.is_set():
            self.refused += 1
            if self.first_refused is None:
                self.first_refused = time.monotonic()
            return False
        return True


class Stack:
    """The compose file's services as local processes."""

    def __init__(self, compose: dict[str, Any], db_name: str, tmp: Path) -> None:
        self.services: dict[str, Any] = compose["services"]
        self.tmp = tmp
        self.procs: dict[str, Proc] = {}
        self.pg = PgProxy()
        user = urlsplit(PG_ADMIN_URL).username or "postgres"
        # The test server trusts loopback, so whatever password the URL gets is accepted.
        self.pg_url = f"postgresql://{user}@127.0.0.1:{self.pg.port}/{db_name}"
        # Container hostname:port -> local address (the core and the stream replica).
        self.addr = {
            f"{n}:50051": f"127.0.0.1:{free_port()}"
            for n in ("identity", "streams")
            if n in self.services
        }
        self.binds: dict[str, dict[str, str]] = {}
        self.volumes = tmp / "volumes"

    # -- what a container runtime would provide ------------------------------------

    def mounts(self, name: str) -> list[tuple[str, Path]]:
        """(container path, local directory) of the service's named volumes."""
        out = []
        for spec in self.services[name].get("volumes") or []:
            volume, target = spec.split(":")[:2]
            assert not volume.startswith((".", "/")), f"{name}: bind mount {spec}"
            local = self.volumes / volume
            local.mkdir(parents=True, exist_ok=True)
            out.append((target, local))
        return sorted(out, key=lambda m: -len(m[0]))

    def rootfs(self, name: str) -> Path:
        root = self.tmp / "rootfs" / name
        for target, local_dir in self.mounts(name):
            link = root / target.lstrip("/")
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(local_dir, target_is_directory=True)
        return root

    def local(self, name: str, value: str) -> str:
        value = interpolate(value, {})
        value = re.sub(r"postgresql://[^@]+@postgres:5432/\w+", self.pg_url, value)
        for container, local in self.addr.items():
            value = value.replace(container, local)
        if value.startswith("0.0.0.0:"):
            binds = self.binds.setdefault(name, {})
            binds.setdefault(value, f"127.0.0.1:{free_port()}")
            value = binds[value]
        for target, local_dir in self.mounts(name):
            if value == target or value.startswith(target + "/"):
                return str(local_dir) + value[len(target) :]
        for target, _ in self.mounts(name):
            # A path above a mount (init-credentials writes below its argument): the
            # container's file system, with the volumes linked in where they mount.
            parent = os.path.dirname(target)
            if value == parent or value.startswith(parent + "/"):
                return str(self.rootfs(name)) + value
        return value.replace("/app/examples/", str(ROOT / "clients" / "examples") + "/")

    def env(self, name: str) -> dict[str, str]:
        raw = self.services[name].get("environment") or {}
        env = {**image_env(), **{k: self.local(name, str(v)) for k, v in raw.items()}}
        if f"{name}:50051" in self.addr:
            env["IDENTITY_LISTEN"] = self.addr[f"{name}:50051"]
        return env

    def argv(self, name: str, cmd: list[str]) -> list[str]:
        out = [self.local(name, str(c)) for c in cmd]
        if out[0] == "python":
            out[0] = sys.executable
        elif (VENV_BIN / out[0]).exists():
            out[0] = str(VENV_BIN / out[0])
        return out

    def command(self, name: str, extra: list[str] | None = None) -> list[str]:
        svc = self.services[name]
        cmd = list(svc.get("entrypoint") or []) + list(
            extra if extra is not None else svc.get("command") or []
        )
        return self.argv(name, cmd)

    def healthy(self, name: str, env: dict[str, str]) -> bool:
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", "healthchecks are exec form, so they run the same here"
        argv = self.argv(name, test[1:])
        if name == "postgres":
            # The container's own 127.0.0.1:5432 is the proxy here.
            argv[0] = str(PG_BIN / argv[0])
            env = {**env, "PGPORT": str(self.pg.port)}
        r = subprocess.run(
            argv, env={**os.environ, **env}, capture_output=True, timeout=30, check=False
        )
        return r.returncode == 0

    # -- compose's behaviour -----------------------------------------------------

    def start(self, name: str, timeout: float = 90) -> dict[str, str]:
        svc = self.services[name]
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in self.procs or (dep == "postgres" and "postgres" in self.binds), (
                f"{name} starts before {dep}"
            )
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
        env = self.env(name)
        deadline = time.monotonic() + timeout
        if name == "postgres":
            self.binds["postgres"] = {}  # the proxy stands for the container
            while not self.healthy(name, env):
                assert time.monotonic() < deadline, "postgres never healthy"
                time.sleep(0.5)
            return env
        proc = Proc(self.command(name), env, self.tmp / f"{name}.log")
        self.procs[name] = proc
        if svc.get("restart") == "no":
            try:
                rc = proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish:\n{proc.output()}")
            assert rc == 0, f"{name} exited {rc}:\n{proc.output()}"
            return env
        if "healthcheck" in svc:
            while not self.healthy(name, env):
                assert proc.popen.poll() is None, f"{name} exited:\n{proc.output()}"
                assert time.monotonic() < deadline, f"{name} never healthy:\n{proc.output()}"
                time.sleep(0.3)
        return env

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`docker compose run --rm NAME ARGS...` (a service with a profile)."""
        return subprocess.run(
            self.command(name, list(args)),
            env={**os.environ, **self.env(name)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.pg.close()
