"""`make run`: the identity service, the SCIM gateway and the admin console on the
embedded SQLite file, a demo tenant with a fresh token, the SCIM base URL and a
one-time sign-in link to the console. Ctrl-C stops them all.

Environment: IDENTITY_DATABASE_URL (default sqlite:///identity.db),
IDENTITY_LISTEN (127.0.0.1:50051), SCIM_LISTEN (127.0.0.1:8080), ADMIN_LISTEN
(127.0.0.1:8081), DEMO_TENANT (demo).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scim_identity_client import CallContext, FailedPrecondition, IdentityClient, NotFound
from scim_identity_client.urls import admin_sign_in_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN = CallContext(actor_kind="admin", actor_id="make-run")


def wait_grpc(target: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("identity-service exited; see the output above")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"identity service at {target} did not become ready")


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 60, name: str = "scim-gateway"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited; see the output above")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} at {url} did not become ready")


def demo_token(client: IdentityClient, tenant: str) -> str:
    try:
        client.get_tenant(tenant)
    except NotFound:
        client.create_tenant(tenant, display_name="Demo tenant", ctx=ADMIN)
    try:
        return client.issue_token(tenant, description="make run", ctx=ADMIN).secret
    except FailedPrecondition:
        # Both token slots are used by earlier runs: retire the oldest.
        oldest = client.list_tokens(tenant)[0]
        client.revoke_token(tenant, oldest.id, ctx=ADMIN)
        return client.issue_token(tenant, description="make run", ctx=ADMIN).secret


def main() -> int:
    env = dict(os.environ)
    env.setdefault("IDENTITY_DATABASE_URL", "sqlite:///identity.db")
    env.setdefault("IDENTITY_LISTEN", "127.0.0.1:50051")
    env.setdefault("SCIM_LISTEN", "127.0.0.1:8080")
    env.setdefault("SCIM_IDENTITY_TARGET", env["IDENTITY_LISTEN"])
    env.setdefault("ADMIN_LISTEN", "127.0.0.1:8081")
    env.setdefault("ADMIN_IDENTITY_TARGET", env["IDENTITY_LISTEN"])
    env.setdefault("ADMIN_SCIM_BASE_URL", f"http://{env['SCIM_LISTEN']}")
    env.setdefault("ADMIN_PUBLIC_URL", f"http://{env['ADMIN_LISTEN']}")
    env.setdefault("IDENTITY_LOG_FORMAT", "text")  # a person is reading this terminal
    tenant = env.get("DEMO_TENANT", "demo")
    procs: list[subprocess.Popen[bytes]] = []
    # Handlers first: a signal at any point below still stops the children.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        core = subprocess.Popen([str(BIN / "identity-service")], env=env, cwd=ROOT)
        procs.append(core)
        wait_grpc(env["IDENTITY_LISTEN"], core)
        gateway = subprocess.Popen([str(BIN / "scim-gateway")], env=env, cwd=ROOT)
        procs.append(gateway)
        base = f"http://{env['SCIM_LISTEN']}/scim/v2"
        wait_http(f"http://{env['SCIM_LISTEN']}/readyz", gateway)
        console = subprocess.Popen([str(BIN / "identity-admin")], env=env, cwd=ROOT)
        procs.append(console)
        wait_http(f"http://{env['ADMIN_LISTEN']}/healthz", console, name="identity-admin")
        with IdentityClient(env["IDENTITY_LISTEN"]) as client:
            secret = demo_token(client, tenant)
            link = client.create_admin_link(tenant, subject="make run", ctx=ADMIN)
        print(
            "\n"
            f"  identity service  {env['IDENTITY_LISTEN']}  ({env['IDENTITY_DATABASE_URL']})\n"
            f"  SCIM base URL     {base}/{tenant}\n"
            f"  bearer token      {secret}\n"
            f"  admin console     {env['ADMIN_PUBLIC_URL']}\n"
            f"  admin API         {env['ADMIN_PUBLIC_URL']}/api/openapi.json "
            f"(bearer: identityctl admin-session {tenant})\n\n"
            f"  try: curl -H 'Authorization: Bearer {secret}' {base}/{tenant}/Users\n"
            "  Ctrl-C stops the three services.\n"
            "  sign in to the admin console (once, within 15 minutes; then:\n"
            f"  identityctl admin-link {tenant}):\n"
            f"  {admin_sign_in_url(env['ADMIN_PUBLIC_URL'], link.secret)}\n",
            flush=True,
        )
        # Supervise: stop on a signal, or as soon as either service dies.
        while not stop.wait(0.5):
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f"a service exited (status {dead[0].returncode}); stopping", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
