"""Test support: throwaway PostgreSQL databases, an in-process identity service on
a background event loop, and real service processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.client
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from identity_admin.app import COOKIE as CONSOLE_COOKIE
from identity_service.edge.server import IdentityService, create_server
from identity_service.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.urls import admin_sign_in_url

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
VENV_BIN = Path(sys.executable).parent


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


@contextlib.contextmanager
def throwaway_pg_database(prefix: str = "identity_test") -> Iterator[str]:
    """A new PostgreSQL database for this run, dropped afterwards. Yields its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is required for the storage tests ({PG_ADMIN_URL}): {exc}"
        ) from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def eventually(predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """The first truthy value of `predicate()`, asked every 50 ms; AssertionError after
    `timeout` seconds. For what is written in the background (the gateway's history)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceThread:
    """A real IdentityService on its own event loop in a background thread."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock  # the compactor's clock (None: the real one)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service: IdentityService | None = None
        self.port = 0

    def start(self) -> str:
        self.thread.start()

        async def boot() -> int:
            self.service = create_server(self.settings)
            if self.clock is not None:
                self.service.compactor.clock = self.clock
            return await self.service.start()

        self.port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(60)
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.service is not None:
            asyncio.run_coroutine_threadsafe(self.service.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_serving(
    target: str, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Polls grpc.health.v1 until the service says SERVING (over TLS with `credentials`)."""
    deadline = time.monotonic() + timeout
    last: object = None
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = resp.status
            except grpc.RpcError as err:
                last = err.code()
            time.sleep(0.1)
    raise TimeoutError(f"{target} not SERVING after {timeout}s (last: {last})")


class Proc:
    """A started service process; stops it (SIGTERM, then SIGKILL) on close."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(5)
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def start_identity_process(database_url: str, tmp: Path, **env: str) -> tuple[Proc, str]:
    """Runs the real `identity-service` console script; waits until SERVING."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = Proc(
        [str(VENV_BIN / "identity-service")],
        {"IDENTITY_DATABASE_URL": database_url, "IDENTITY_LISTEN": target, **env},
        tmp / f"identity-{port}.log",
    )
    try:
        wait_serving(target)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"identity-service did not start:\n{proc.output()}") from None
    return proc, target


PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())[-1]
        if Path("/usr/lib/postgresql").is_dir()
        else "15"
    )
    / "bin"
)


class PgCluster:
    """A PostgreSQL cluster owned by one test (initdb in a temporary directory), so
    the test can stop and start the real server without disturbing anything else."""

    def __init__(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="identity-pg-", dir="/tmp"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> PgCluster:
        self._run(
            "initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpRelay:
    """A TCP port that forwards each connection to `upstream`: a stand-in for a server
    (PostgreSQL) that a test controls. Subclasses choose whether to `admit` a new
    connection (else it is closed at once, as by a server that is not ready) and
    see the bytes each way (`seen`, with the connection's own state)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self.sock.getsockname()[1])
        self._closing = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def admit(self) -> bool:
        return True

    def seen(self, side: str, state: dict[str, str], data: bytes) -> None:
        """`data` from `side` ("client" or "server"); `state`: the connection's own."""

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self.admit():
                conn.close()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            for s in (conn, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns += [conn, up]
            state: dict[str, str] = {}
            for a, b, side in ((conn, up, "client"), (up, conn, "server")):
                threading.Thread(target=self._pump, args=(a, b, side, state), daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, side: str, state: dict[str, str]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.seen(side, state, data)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing = True
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, lower-cased headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Content-Type": "application/scim+json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


Samples = list[tuple[dict[str, str], float]]


def scrape(port: int | str) -> dict[str, Samples]:
    """A Prometheus scrape of http://127.0.0.1:{port}/metrics (or of host:port):
    each sample name's (labels, value) pairs."""
    from prometheus_client.parser import text_string_to_metric_families

    address = port if isinstance(port, str) else f"127.0.0.1:{port}"
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: Samples, **labels: str) -> float:
    """The sum of the samples whose labels include `labels`."""
    return sum(v for lab, v in samples if all(lab.get(k) == x for k, x in labels.items()))


def start_gateway_process(target: str, tmp: Path, **env: str) -> tuple[Proc, int]:
    """Runs the real `scim-gateway` (gunicorn) against `target`; waits until /healthz
    answers. `env`: more SCIM_* settings (SCIM_WORKERS defaults to 2)."""
    port = free_port()
    proc = Proc(
        [str(VENV_BIN / "scim-gateway")],
        {
            "SCIM_IDENTITY_TARGET": target,
            "SCIM_LISTEN": f"127.0.0.1:{port}",
            "SCIM_WORKERS": "2",
            **env,
        },
        tmp / f"gateway-{port}.log",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if http_request(port, "GET", "/healthz", timeout=5)[0] == 200:
                return proc, port
        except OSError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"scim-gateway did not start:\n{proc.output()}")
        time.sleep(0.1)


@contextlib.contextmanager
def writes_held(database_url: str, pg_lock: str, params: tuple[object, ...] = ()) -> Iterator[None]:
    """Writes blocked by another connection until the block ends: on SQLite it holds
    BEGIN IMMEDIATE (the one write lock); on PostgreSQL it runs `pg_lock` (a row or
    table lock) in an open transaction."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        blocker = sqlite3.connect(url.database or "", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        return
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as pg:
        pg.execute(pg_lock, params)
        yield
        pg.rollback()


# -- the admin console over HTTP (tests/admin, tests/deploy) ---------------------------------


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', self.body)
        assert m, self.body
        return m.group(1)


@dataclass
class Visitor:
    """A browser without a browser: keeps the console's cookie, follows nothing."""

    base: str
    cookie: str = ""
    history: list[Page] = field(default_factory=list)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Page:
        parts = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"Cookie": f"{CONSOLE_COOKIE}={self.cookie}"} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        page = Page(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode())
        conn.close()
        m = re.match(rf"{CONSOLE_COOKIE}=([^;]*)", page.headers.get("set-cookie", ""))
        if m:
            self.cookie = m.group(1)
        self.history.append(page)
        return page

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Page:
        return self.request("POST", path, form)

    def sign_in(self, client: IdentityClient, tenant: str | None, **kw: object) -> Page:
        link = client.create_admin_link(tenant, **kw)  # type: ignore[arg-type]  # kw: its options
        page = self.follow_sign_in_link(admin_sign_in_url(self.base, link.secret))
        assert page.status == 200 and self.cookie, page.body
        return page

    def follow_sign_in_link(self, link: str) -> Page:
        """What a person does with a sign-in link: open it (a page with one button,
        which uses nothing up), then press Continue (the POST that redeems it)."""
        url = urllib.parse.urlsplit(link)
        form = self.get(f"{url.path}?{url.query}")
        m = re.search(r'name="token" value="([^"]+)"', form.body)
        if form.status != 200 or m is None:
            return form
        return self.post(url.path, {"token": html.unescape(m.group(1))})
