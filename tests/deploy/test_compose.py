"""docker-compose.yml, run without Docker (tests/deploy/compose.py): the first start
of the stack as compose would run it, secure by default, against a PostgreSQL that is
not ready for the first 10 s, with the subscriber started before any tenant exists."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_client import IdentityClient, Unauthenticated

from ..support import ROOT, Proc, Visitor, eventually, scrape, throwaway_pg_database
from ..support import value as sample_sum
from .compose import COMPOSE, Stack, start_order

pytestmark = pytest.mark.e2e

#: Environment keys that name secrets: the compose file may only point at files.
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "CREDENTIAL", "KEY")


def wait_for(proc: Proc, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.output():
        assert proc.popen.poll() is None, proc.output()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{proc.output()}"
        time.sleep(0.1)


def reaches_grpc(address: str) -> bool:
    """Whether a gRPC health check at `address` gets any gRPC answer."""
    with grpc.insecure_channel(address) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as err:
            return err.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNKNOWN,
            )
        return True


def test_compose_file_holds_no_secret_and_publishes_only_the_gateway() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert key.endswith("_FILE"), f"{name}: {key} is a literal secret"
                assert str(value).startswith("/run/scim-identity/"), f"{name}: {key}"
        for value in (svc.get("environment") or {}).values():
            if str(value).startswith("postgresql://"):
                userinfo = str(value)[len("postgresql://") :].split("@")[0]
                assert ":" not in userinfo, f"{name}: a password in a database URL"
        if name not in ("gateway", "admin"):
            assert not svc.get("ports"), f"{name} is published"
    (published,) = services["gateway"]["ports"]
    assert published.startswith("${SCIM_PUBLISH_ADDRESS:-127.0.0.1}:"), published
    # The admin console (sign-in by one-time link) on the host's loopback only.
    (console,) = services["admin"]["ports"]
    assert console.startswith("${ADMIN_PUBLISH_ADDRESS:-127.0.0.1}:"), console
    # The gateway's metrics have a port of their own, not the published SCIM port.
    metrics_port = services["gateway"]["environment"]["SCIM_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert not published.endswith(f":{metrics_port}"), published
    # One build for every service, never pulled.
    app = [s for s in services.values() if s.get("image") == "scim-identity:latest"]
    assert app and all(s["build"] == "." and s["pull_policy"] == "build" for s in app)
    assert COMPOSE.read_text().count("build:") == 1
    # PostgreSQL probed over TCP, given time to initialise a fresh volume.
    pg = services["postgres"]
    assert pg["healthcheck"]["test"][:4] == ["CMD", "pg_isready", "-h", "127.0.0.1"]
    assert pg["healthcheck"]["start_period"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/scim-identity/")


def test_first_start_is_secured_and_needs_no_manual_step(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    order = start_order(services)
    assert order == [
        "credentials",
        "postgres",
        "migrate",
        "identity",
        "gateway",
        "streams",
        "subscriber",
        "admin",
    ]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    with throwaway_pg_database("identity_compose") as db_url:
        stack = Stack(compose, db_url.rsplit("/", 1)[1], tmp_path)
        # PostgreSQL answers nothing for its first 10 s (a fresh volume initialising).
        stack.pg.open_after(10.0, attempts=3)
        try:
            stack.start("credentials")
            stack.start("postgres")
            assert stack.pg.first_refused is not None and stack.pg.refused >= 3
            stack.start("migrate")
            ident_env = stack.start("identity")
            assert ident_env["IDENTITY_MIGRATE_ON_START"] == "false"  # migrate ran it
            gw_env = stack.start("gateway")
            assert stack.start("streams")["IDENTITY_ROLE"] == "streams"
            stack.start("subscriber")
            subscriber = stack.procs["subscriber"]
            wait_for(subscriber, "audit_log: tenant demo does not exist yet")
            stack.start("admin")

            target = stack.addr["identity:50051"]
            gateway = gw_env["SCIM_LISTEN"]
            # The core refuses a caller without a credential, for every admin call.
            with IdentityClient(target) as anonymous:
                with pytest.raises(Unauthenticated):
                    list(anonymous.list_tenants())
                with pytest.raises(Unauthenticated):
                    anonymous.create_tenant("intruder")
            # No published port reaches the core: only the gateway's is published,
            # and it is no gRPC server.
            for name, svc in services.items():
                for spec in svc.get("ports") or []:
                    container_port = spec.rsplit(":", 1)[1]
                    local = next(
                        v for k, v in stack.binds[name].items() if k.endswith(f":{container_port}")
                    )
                    assert not reaches_grpc(local), f"{name} publishes a gRPC server"
            assert reaches_grpc(target)  # the check itself can see a gRPC server

            # The admin CLI service, with the generated admin credential.
            made = stack.run("identityctl", "tenant", "create", "demo")
            assert made.returncode == 0, made.stderr
            issued = stack.run("identityctl", "token", "issue", "demo")
            assert issued.returncode == 0, issued.stderr
            secret = issued.stdout.strip().splitlines()[-1]
            # The stream replica the subscriber reads from refuses writes, even an admin's.
            streams = stack.addr["streams:50051"]
            refused = stack.run("identityctl", "--target", streams, "tenant", "create", "x")
            assert refused.returncode != 0 and "IDENTITY_ROLE=streams" in refused.stderr
            # The subscriber was waiting for its tenant and now watches it.
            wait_for(subscriber, "audit_log: watching demo")
            # The console, with the generated admin credential: a link from the CLI
            # service signs the tenant's admin in, and the Connector page shows the
            # tenant's SCIM base URL and the token just issued.
            linked = stack.run("identityctl", "admin-link", "demo")
            assert linked.returncode == 0, linked.stderr
            link = urllib.parse.urlsplit(linked.stdout.strip().splitlines()[-1])
            assert f"{link.scheme}://{link.netloc}" == "http://127.0.0.1:8081"
            console = Visitor(f"http://{stack.binds['admin']['0.0.0.0:8081']}")
            signed_in = console.follow_sign_in_link(linked.stdout.strip().splitlines()[-1])
            assert signed_in.status == 200 and console.cookie, signed_in.body
            # (Its cookie is Secure in a container, bound beyond loopback: the
            # settings test checks that; here the bind is rewritten to loopback.)
            connector = console.get("/tenants/demo/connector")
            assert connector.status == 200, connector.body
            assert "http://127.0.0.1:8080/scim/v2/demo" in connector.body
            assert "Rotate…" in connector.body and secret not in connector.body

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
            wait_for(subscriber, "compose@example.com", timeout=20)
            metrics_bind = stack.binds["identity"]["0.0.0.0:9464"]
            with urllib.request.urlopen(f"http://{metrics_bind}/metrics", timeout=5) as resp:
                assert b"grpc_server_handled_total" in resp.read()
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
            admin_token = (stack.volumes / "admin-credentials" / "token").read_text()
            with IdentityClient(target, token=admin_token) as client:
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
            # The gateway's metrics on their own port (compose network only), none on
            # the SCIM port.
            gateway_metrics = scrape(stack.binds["gateway"]["0.0.0.0:9465"])
            created = {
                "http_request_method": "POST",
                "http_route": "Users",
                "http_response_status_code": "201",
            }
            assert sample_sum(
                gateway_metrics["http_server_request_duration_seconds_count"], **created
            )
            with pytest.raises(urllib.error.HTTPError) as not_here:
                urllib.request.urlopen(f"http://{gateway}/metrics", timeout=5)
            assert not_here.value.code == 404
            # No generated secret, and no tenant token, in any service's output.
            generated = [
                p.read_text() for p in stack.volumes.glob("*/*") if p.name in ("token", "password")
            ]
            assert len(generated) == 4
            logs = "".join(p.output() for p in stack.procs.values())
            for value in (*generated, secret):
                assert value not in logs
                assert value not in COMPOSE.read_text()
        finally:
            stack.stop()
        for name in ("identity", "gateway", "admin"):
            assert stack.procs[name].popen.returncode == 0, f"{name} did not stop cleanly"


def test_credentials_survive_a_restart_and_a_removed_one_is_rotated(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    stack = Stack(compose, "unused", tmp_path)
    try:
        stack.start("credentials")
        tokens = {p.parent.name: p.read_text() for p in stack.volumes.glob("*/token")}
        assert set(tokens) == {"admin-credentials", "gateway-credentials", "subscriber-credentials"}
        assert len(set(tokens.values())) == 3
        creds = json.loads((stack.volumes / "core-credentials" / "credentials.json").read_text())
        assert {c["role"] for c in creds} == {"admin", "gateway", "subscriber"}
        assert next(c for c in creds if c["role"] == "subscriber")["tenants"] == ["demo"]
        assert all(t not in json.dumps(creds) for t in tokens.values())  # hashes only
        password = (stack.volumes / "database-secret" / "password").read_text()
        assert (stack.volumes / "gateway-credentials" / "token").stat().st_mode & 0o777 == 0o400
        del stack.procs["credentials"]
        stack.start("credentials")  # the next `docker compose up`
        again = {p.parent.name: p.read_text() for p in stack.volumes.glob("*/token")}
        assert again == tokens
        assert (stack.volumes / "database-secret" / "password").read_text() == password
        (stack.volumes / "gateway-credentials" / "token").unlink()
        del stack.procs["credentials"]
        stack.start("credentials")
        rotated = (stack.volumes / "gateway-credentials" / "token").read_text()
        assert rotated != tokens["gateway-credentials"]
        creds = json.loads((stack.volumes / "core-credentials" / "credentials.json").read_text())
        from identity_service.edge.auth import hash_secret

        gateway_hash = next(c for c in creds if c["role"] == "gateway")["secret_sha256"]
        assert gateway_hash == hash_secret(rotated)
    finally:
        stack.stop()


def test_migrate_waits_for_the_database_with_backoff(tmp_path: Path) -> None:
    """The migrate service's command and environment, started while PostgreSQL refuses
    connections: it retries, and finishes once the database answers."""
    compose = yaml.safe_load(COMPOSE.read_text())
    with throwaway_pg_database("identity_migrate_wait") as db_url:
        stack = Stack(compose, db_url.rsplit("/", 1)[1], tmp_path)
        try:
            stack.start("credentials")
            stack.binds["postgres"] = {}  # compose saw it healthy; it is not, for now
            proc = Proc(stack.command("migrate"), stack.env("migrate"), tmp_path / "m.log")
            stack.procs["migrate"] = proc
            # Opened only after migrate has been refused twice.
            stack.pg.open_after(0.0, attempts=2)
            assert proc.popen.wait(60) == 0, proc.output()
            assert stack.pg.refused >= 2
            assert "waiting for the database" in proc.output()
            assert "database at revision" in proc.output()
        finally:
            stack.stop()


def test_migrate_gives_up_after_its_bound(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    stack = Stack(compose, "never", tmp_path)
    try:
        stack.start("credentials")
        env = {**stack.env("migrate"), "IDENTITY_MIGRATE_WAIT_SECONDS": "1"}
        proc = Proc(stack.command("migrate"), env, tmp_path / "m.log")
        stack.procs["migrate"] = proc
        assert proc.popen.wait(60) == 1
        assert "database unreachable after 1 s" in proc.output()
        assert "Traceback" not in proc.output()
    finally:
        stack.stop()


def test_healthcheck_imports_only_what_it_needs() -> None:
    """Run every few seconds by the container: no SQLAlchemy, Alembic or server code."""
    code = (
        "import sys\n"
        "from identity_service.__main__ import main\n"
        "rc = main(['healthcheck'])\n"
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'psycopg', 'identity_service.edge.server')"
        " if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"IDENTITY_LISTEN": "127.0.0.1:1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "1 []"


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
        "scim_identity_api/v1/users_pb2.py",
        "scim_identity_api/v1/changes_pb2_grpc.py",
        "scim_identity_api/v1/users_pb2.pyi",
        "identity_service/storage/migrations/env.py",
        "identity_service/storage/migrations/script.py.mako",
        "identity_service/storage/migrations/versions/0001_initial_schema.py",
        "scim_gateway/resources/users.py",
        "scim_identity_client/cli.py",
        "identity_log/jsonlog.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    compose = yaml.safe_load(COMPOSE.read_text())
    for svc in compose["services"].values():
        cmd = svc.get("entrypoint") or svc.get("command")
        if svc.get("image") == "scim-identity:latest" and cmd[0] != "python":
            assert f"{cmd[0]} =" in scripts, cmd[0]
    # Every volume the app's services mount exists in the image, owned by its user
    # (a new named volume copies that owner, so the non-root init can write it).
    for svc in compose["services"].values():
        if svc.get("image") == "scim-identity:latest":
            for spec in svc.get("volumes") or []:
                assert spec.split(":")[1] in final, spec
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "**/__pycache__"} <= set(ignored)
    # Only the ports something listens on.
    (expose,) = [line for line in final.splitlines() if line.startswith("EXPOSE ")]
    assert expose.split()[1:] == ["50051", "8080", "9464", "9465"]
