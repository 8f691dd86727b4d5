"""docker-compose.yml, run without Docker: every service's command, environment,
dependency conditions and healthcheck, parsed from the YAML and run as local
processes against the real PostgreSQL. Container hostnames and bind addresses are
the only things rewritten (to loopback and free ports)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_client import IdentityClient

from ..support import ROOT, VENV_BIN, Proc, eventually, free_port, throwaway_pg_database

pytestmark = pytest.mark.e2e
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


class Stack:
    def __init__(self, compose: dict[str, Any], pg_url: str, tmp: Path) -> None:
        self.services: dict[str, Any] = compose["services"]
        self.tmp = tmp
        self.procs: dict[str, Proc] = {}
        self.pg_url = pg_url
        # Container hostname:port -> local address, one free port per published port.
        self.addr = {"identity:50051": f"127.0.0.1:{free_port()}"}
        self.binds: dict[str, str] = {}

    def local(self, value: str) -> str:
        value = interpolate(value, {})
        value = re.sub(r"postgresql://[^@]+@postgres:5432/\w+", self.pg_url, value)
        for container, local in self.addr.items():
            value = value.replace(container, local)
        if value.startswith("0.0.0.0:"):
            self.binds.setdefault(value, f"127.0.0.1:{free_port()}")
            value = self.binds[value]
        if value == "0.0.0.0:50051":
            value = self.addr["identity:50051"]
        return value.replace("/app/examples/", str(ROOT / "clients" / "examples") + "/")

    def env(self, name: str) -> dict[str, str]:
        raw = self.services[name].get("environment") or {}
        env = {**image_env(), **{k: self.local(str(v)) for k, v in raw.items()}}
        if env.get("IDENTITY_LISTEN", "").endswith(":50051") or name == "identity":
            env["IDENTITY_LISTEN"] = self.addr["identity:50051"]
        return env

    def argv(self, cmd: list[str]) -> list[str]:
        out = [self.local(str(c)) for c in cmd]
        if out[0] == "python":
            out[0] = sys.executable
        elif (VENV_BIN / out[0]).exists():
            out[0] = str(VENV_BIN / out[0])
        return out

    def healthy(self, name: str, env: dict[str, str]) -> bool:
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", "healthchecks are exec form, so they run the same here"
        r = subprocess.run(
            self.argv(test[1:]),
            env={**os.environ, **env},
            capture_output=True,
            timeout=30,
            check=False,
        )
        return r.returncode == 0

    def start(self, name: str, timeout: float = 60) -> dict[str, str]:
        svc = self.services[name]
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in self.procs or dep == "postgres", f"{name} starts before {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
        env = self.env(name)
        proc = Proc(self.argv(svc["command"]), env, self.tmp / f"{name}.log")
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
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

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()


def test_compose_stack_runs_as_written(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert list(services) == ["postgres", "migrate", "identity", "gateway", "subscriber"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    with throwaway_pg_database("identity_compose") as pg_url:
        stack = Stack(compose, pg_url, tmp_path)
        try:
            stack.start("migrate")
            ident_env = stack.start("identity")
            assert ident_env["IDENTITY_MIGRATE_ON_START"] == "false"  # migrate ran it
            gw_env = stack.start("gateway")
            gateway = gw_env["SCIM_LISTEN"]
            target = stack.addr["identity:50051"]
            ctl = [str(VENV_BIN / "identityctl"), "--target", target]
            subprocess.run([*ctl, "tenant", "create", "demo"], check=True, capture_output=True)
            secret = (
                subprocess.run(
                    [*ctl, "token", "issue", "demo"], check=True, capture_output=True, text=True
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            stack.start("subscriber")
            deadline = time.monotonic() + 20
            while "audit_log: watching demo" not in stack.procs["subscriber"].output():
                assert stack.procs["subscriber"].popen.poll() is None, stack.procs[
                    "subscriber"
                ].output()
                assert time.monotonic() < deadline, stack.procs["subscriber"].output()
                time.sleep(0.1)
            body = json.dumps(
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "compose@example.com",
                }
            ).encode()
            req = urllib.request.Request(
                f"http://{gateway}/scim/v2/demo/Users",
                data=body,
                method="POST",
                headers={
                    "Authorization": f"Bearer {secret}",
                    "Content-Type": "application/scim+json",
                },
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 201
                request_id = resp.headers["X-Request-Id"]
                user_id = json.loads(resp.read())["id"]
            assert request_id
            # The subscriber prints an audit line for the change.
            deadline = time.monotonic() + 20
            while "compose@example.com" not in stack.procs["subscriber"].output():
                assert time.monotonic() < deadline, stack.procs["subscriber"].output()
                time.sleep(0.2)
            metrics_bind = stack.binds["0.0.0.0:9464"]
            with urllib.request.urlopen(f"http://{metrics_bind}/metrics", timeout=5) as resp:
                assert b"identity_rpc_requests_total" in resp.read()
            for line in stack.procs["identity"].output().splitlines():
                if line.startswith("{"):
                    json.loads(line)  # IDENTITY_LOG_FORMAT=json: every line is an object
            # One request id, everywhere: response header, both services' logs, the
            # operations history and the change event.
            for name in ("gateway", "identity"):
                lines = [
                    json.loads(line)
                    for line in stack.procs[name].output().splitlines()
                    if line.startswith("{")
                ]
                assert any(entry.get("request_id") == request_id for entry in lines), name
            with IdentityClient(target) as client:
                tenant_id = client.get_tenant("demo").id
                # The gateway writes its history in the background, within a second.
                eventually(
                    lambda: any(
                        o.request_id == request_id and o.resource_id == user_id
                        for o in client.list_operations(tenant_id).operations
                    ),
                    what="the request's history record",
                )
                watch = client.watch(tenant_id, since=0)
                created = next(e for e in watch if e.resource_id == user_id)
                watch.close()
                assert created.request_id == request_id
            gateway_metrics = urllib.request.urlopen(f"http://{gateway}/metrics", timeout=5).read()
            assert (
                b'scim_requests_total{endpoint="Users",method="POST",status="201"}'
                in gateway_metrics
            )
            assert secret not in "".join(p.output() for p in stack.procs.values())
        finally:
            stack.stop()
        for name in ("identity", "gateway"):
            assert stack.procs[name].popen.returncode == 0, f"{name} did not stop cleanly"


def test_image_contains_what_the_services_run(tmp_path: Path) -> None:
    """The Dockerfile installs the built wheel: it must carry the generated contract,
    the migrations and the console scripts compose runs."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = [i for i, line in enumerate(dockerfile.splitlines()) if line.startswith("FROM ")]
    final = "\n".join(dockerfile.splitlines()[froms[-1] :])
    assert len(froms) == 2 and "USER app" in final and "pip wheel" not in final
    assert "apt-get" not in final and "gcc" not in final
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "identity/v1/users_pb2.py",
        "identity/v1/changes_pb2_grpc.py",
        "identity/v1/users_pb2.pyi",
        "identity_service/migrations/env.py",
        "identity_service/migrations/script.py.mako",
        "identity_service/migrations/versions/0001_initial_schema.py",
        "scim_gateway/resources/users.py",
        "identity_client/cli.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    compose = yaml.safe_load(COMPOSE.read_text())
    for svc in compose["services"].values():
        cmd = svc.get("command")
        if cmd and cmd[0] != "python":
            assert f"{cmd[0]} =" in scripts, cmd[0]
