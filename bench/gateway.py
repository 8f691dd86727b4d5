"""SCIM gateway throughput against same-run baselines, on SQLite and PostgreSQL.

    .venv/bin/python -m bench --only gateway [--quick] [--backend sqlite|postgresql|both]

For each backend: seed N users through the core's own domain code (in-process, in
transactions of SEED_BATCH, events written) into a fresh database; start the real
`identity-service` and the real `scim-gateway` (gunicorn gthread, SCIM_WORKERS=2) on
free ports; then drive each operation with `bench.loadgen` (closed loop, keep-alive
connections) for a fixed duration:

* A  `GET /healthz`  - plain Falcon under the same gunicorn, no RPC;
* B  `GET /readyz`   - the same plus one gRPC call that does no storage work (the target's
  baseline; measured before and after the SCIM operations, the mean is used);
* `GET /Users?filter=userName eq "..."` (random seeded users), `POST /Users` (unique
  names), `PATCH /Users/{id}` (replace `title` or `active` of random seeded users);
* raw SQL: the same userName lookup with SQLAlchemy Core on one connection, in this
  process, while the servers are idle - what the database alone can answer.

The target (issue): each SCIM operation reaches >= 70% of baseline B's throughput at
100k users. Everything runs on this one machine, generators included.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .loadgen import Outcome, Workload, run_load, user_name

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

USERS_FULL = 100_000
USERS_QUICK = 2_000
SECONDS_FULL = 10.0
SECONDS_QUICK = 2.0
WARMUP_SECONDS = 1.0
GEN_PROCESSES = 2
GEN_CONNECTIONS = 4  # per generator process
GATEWAY_WORKERS = 2
SEED_BATCH = 1_000
TARGET = 0.70
TENANT = "bench"

OPS: tuple[tuple[str, str], ...] = (
    ("healthz", "A: `GET /healthz` (Falcon/gunicorn, no RPC)"),
    ("readyz", "B: `GET /readyz` (+ one gRPC call, no storage)"),
    ("filter", '`GET /Users?filter=userName eq "…"`'),
    ("post", "`POST /Users`"),
    ("patch", "`PATCH /Users/{id}`"),
)
SCIM_OPS = ("filter", "post", "patch")


def log(msg: str) -> None:
    print(f"[bench.gateway {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- database and seeding ----------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL for `backend`, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'identity.db'}"
        return
    from tests.support import throwaway_pg_database

    with throwaway_pg_database("identity_bench") as url:
        yield url


@dataclass(frozen=True)
class Seeded:
    tenant_id: str
    tenant_pk: int
    token: str
    user_ids: tuple[str, ...]


def _seed_user(i: int) -> object:
    from identity.v1 import users_pb2

    name = user_name(i)
    return users_pb2.User(
        user_name=name,
        display_name=f"User {i}",
        name=users_pb2.Name(given_name="User", family_name=str(i)),
        title="Engineer",
        active=True,
        emails=[users_pb2.MultiValue(value=f"{name}@example.com", type="work", primary=True)],
    )


def seed(url: str, n: int) -> Seeded:
    """Migrates, creates the tenant and a token, and creates `n` users with
    `identity_service.users.create` (the same code CreateUser runs), events included."""
    from identity.v1 import tenants_pb2
    from identity_service import migrate, tenants, users
    from identity_service.context import SYSTEM
    from identity_service.db import Database
    from identity_service.settings import Settings

    db = Database(Settings(database_url=url))
    try:
        migrate.upgrade(db)
        with db.write() as s:
            tenant_id = tenants.create(s, TENANT, "Benchmark", SYSTEM).id
            issued = tenants.issue_token(
                s, tenants_pb2.IssueTokenRequest(tenant=tenants_pb2.TenantRef(id=tenant_id)), SYSTEM
            )
        ids: list[str] = []
        started = time.perf_counter()
        last_report = started
        for first in range(0, n, SEED_BATCH):
            with db.write() as s:
                tenant = tenants.by_id(s, tenant_id)
                for i in range(first, min(n, first + SEED_BATCH)):
                    ids.append(users.create(s, tenant, _seed_user(i), SYSTEM).meta.id)  # type: ignore[arg-type]
            now = time.perf_counter()
            if now - last_report > 10 or len(ids) == n:
                last_report = now
                rate = len(ids) / (now - started)
                log(f"  seeded {len(ids)}/{n} users ({rate:.0f}/s)")
        with db.read() as s:
            tenant_pk = tenants.by_id(s, tenant_id).pk
    finally:
        db.close()
    return Seeded(tenant_id, tenant_pk, issued.secret, tuple(ids))


# -- processes ----------------------------------------------------------------------------------


def _http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _postgres_pids() -> list[int]:
    out = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                out.append(int(comm.parent.name))
        except OSError:
            continue
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Running:
    port: int
    core_pid: int
    gateway_pid: int

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the gateway (master and workers), the core, and every
        PostgreSQL server process on the machine."""
        return {
            "gateway": _cpu_seconds([self.gateway_pid, *_children(self.gateway_pid)]),
            "core": _cpu_seconds([self.core_pid]),
            "postgres": _cpu_seconds(_postgres_pids()),
        }


@contextlib.contextmanager
def services(url: str, workdir: Path) -> Iterator[Running]:
    """Starts identity-service and scim-gateway; yields where they run."""
    from tests.support import Proc, free_port, start_identity_process

    core, target = start_identity_process(url, workdir)
    gateway: Proc | None = None
    try:
        port = free_port()
        gateway = Proc(
            [str(BIN / "scim-gateway")],
            {
                "SCIM_IDENTITY_TARGET": target,
                "SCIM_LISTEN": f"127.0.0.1:{port}",
                "SCIM_WORKERS": str(GATEWAY_WORKERS),
            },
            workdir / f"gateway-{port}.log",
        )
        deadline = time.monotonic() + 60
        while _http_status(port, "/readyz") != 200:
            if gateway.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scim-gateway did not become ready:\n{gateway.output()}")
            time.sleep(0.2)
        # Both workers must be up before measuring: ask until two distinct pids answered
        # is not observable over HTTP, so give the second worker a moment instead.
        time.sleep(1.0)
        yield Running(port, core.popen.pid, gateway.popen.pid)
    finally:
        if gateway is not None:
            gateway.stop()
        core.stop()


# -- checks and measurements -------------------------------------------------------------------


def _call(port: int, method: str, path: str, token: str, body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


def sanity_check(port: int, prefix: str, seeded: Seeded) -> None:
    """One request of each kind, checked, so the figures measure working operations."""
    i = len(seeded.user_ids) // 2
    status, body = _call(
        port, "GET", f"{prefix}/Users?filter=userName%20eq%20%22{user_name(i)}%22", seeded.token
    )
    ok = status == 200 and body.get("totalResults") == 1
    if not ok or body["Resources"][0]["id"] != seeded.user_ids[i]:
        raise RuntimeError(f"filter check failed: {status} {body}")
    status, body = _call(
        port, "POST", f"{prefix}/Users", seeded.token, {"userName": "sanity-check-user"}
    )
    if status != 201:
        raise RuntimeError(f"POST check failed: {status} {body}")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Checked"}],
    }
    status, body = _call(port, "PATCH", f"{prefix}/Users/{seeded.user_ids[i]}", seeded.token, patch)
    if status != 200 or body.get("title") != "Checked":
        raise RuntimeError(f"PATCH check failed: {status} {body}")


def raw_sql(url: str, seeded: Seeded, n: int, seconds: float) -> Outcome:
    """The userName lookup the filter compiles to, straight through SQLAlchemy Core on
    one connection: the floor the database sets for the filter GET."""
    from sqlalchemy import create_engine, text

    from identity_service.db import normalise_url

    stmt = text(
        "SELECT pk, id, version, created, last_modified, active, body FROM users "
        "WHERE tenant_pk = :t AND user_name_key = :k"
    )
    engine = create_engine(normalise_url(url))
    rng = random.Random(1)
    out = Outcome()
    try:
        with engine.connect() as conn:
            conn.execute(stmt, {"t": seeded.tenant_pk, "k": user_name(0)}).one()
            start = time.perf_counter()
            end = start + seconds
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                row = conn.execute(
                    stmt, {"t": seeded.tenant_pk, "k": user_name(rng.randrange(n))}
                ).first()
                out.latencies.append(time.perf_counter() - t0)
                if row is None:
                    out.errors += 1
            out.elapsed = time.perf_counter() - start
            conn.rollback()
    finally:
        engine.dispose()
    out.requests = len(out.latencies)
    return out


@dataclass
class BackendResult:
    backend: str
    users: int
    seed_seconds: float
    results: dict[str, Outcome]
    #: CPU seconds per process group during each measurement.
    cpu: dict[str, dict[str, float]]

    @property
    def baseline_b(self) -> float:
        return (self.results["readyz"].rate + self.results["readyz_after"].rate) / 2


def measure_backend(
    backend: str, url: str, seeded: Seeded, *, seed_seconds: float, quick: bool, workdir: Path
) -> BackendResult:
    n = len(seeded.user_ids)
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    results: dict[str, Outcome] = {}
    cpu: dict[str, dict[str, float]] = {}
    log(f"{backend}: starting identity-service and scim-gateway")
    with services(url, workdir) as running:
        prefix = f"/scim/v2/{TENANT}"
        sanity_check(running.port, prefix, seeded)

        def load(op: str, secs: float) -> Outcome:
            w = Workload(
                op=op,
                host="127.0.0.1",
                port=running.port,
                prefix=prefix,
                token=seeded.token,
                user_count=n,
                user_ids=seeded.user_ids if op == "patch" else (),
                seconds=secs,
            )
            return run_load(w, GEN_PROCESSES, GEN_CONNECTIONS)

        # Warm both gunicorn workers, their channels and the core's caches.
        for op, _ in OPS:
            load(op, WARMUP_SECONDS)
        for key, op in [*((o, o) for o, _ in OPS), ("readyz_after", "readyz")]:
            log(f"{backend}: {key} for {seconds:.0f}s")
            before = running.cpu()
            results[key] = load(op, seconds)
            after = running.cpu()
            cpu[key] = {k: after[k] - before[k] for k in before}
            cpu[key]["loadgen"] = results[key].cpu_seconds
            log(f"{backend}:   {_summary(results[key])}")
    log(f"{backend}: raw SQL lookup for {seconds:.0f}s")
    results["sql"] = raw_sql(url, seeded, n, seconds)
    log(f"{backend}:   {_summary(results['sql'])}")
    return BackendResult(backend, n, seed_seconds, results, cpu)


def _seed_timed(url: str, n: int) -> tuple[Seeded, float]:
    t0 = time.perf_counter()
    seeded = seed(url, n)
    return seeded, time.perf_counter() - t0


def seed_all(urls: dict[str, str], n: int) -> dict[str, tuple[Seeded, float]]:
    """Seeds every backend's database, in parallel processes when there are several
    (seeding is CPU-bound Python; the two backends do not share a lock)."""
    for backend in urls:
        log(f"{backend}: seeding {n:,} users")
    if len(urls) == 1:
        ((backend, url),) = urls.items()
        return {backend: _seed_timed(url, n)}
    with ProcessPoolExecutor(len(urls), mp_context=mp.get_context("spawn")) as pool:
        futures = {b: pool.submit(_seed_timed, url, n) for b, url in urls.items()}
        return {b: f.result() for b, f in futures.items()}


def _summary(o: Outcome) -> str:
    return (
        f"{o.rate:.0f} req/s, p50 {o.percentile(50):.2f} ms, p99 {o.percentile(99):.2f} ms, "
        f"{o.errors} errors" + (f" (first: {o.error_sample})" if o.error_sample else "")
    )


# -- report ---------------------------------------------------------------------------------


TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
CPU_GROUPS = ("gateway", "core", "postgres", "loadgen")


def _table(r: BackendResult) -> list[str]:
    a = r.results["healthz"].rate
    b = r.baseline_b
    lines = [
        f"#### {TITLES[r.backend]}: {r.users:,} users (seeded in {r.seed_seconds:.0f} s)",
        "",
        "| operation | req/s | p50 ms | p99 ms | errors | / B | / A | >= 0.70 B "
        "| CPU ms/req: gateway | core | postgres | loadgen |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    rows = [
        *OPS[:2],
        ("readyz_after", "B again, after the SCIM operations"),
        *OPS[2:],
        ("sql", "raw SQL userName lookup (1 connection, no HTTP/gRPC)"),
    ]
    for key, label in rows:
        o = r.results[key]
        verdict = ""
        if key in SCIM_OPS:
            verdict = "**pass**" if o.rate / b >= TARGET and not o.errors else "**FAIL**"
        if key in r.cpu and o.requests:
            cpu = " | ".join(f"{r.cpu[key][g] * 1000 / o.requests:.2f}" for g in CPU_GROUPS)
        else:
            cpu = " | ".join("" for _ in CPU_GROUPS)
        lines.append(
            f"| {label} | {o.rate:,.0f} | {o.percentile(50):.2f} | {o.percentile(99):.2f} | "
            f"{o.errors} | {o.rate / b:.2f} | {o.rate / a:.2f} | {verdict} | {cpu} |"
        )
    lines += ["", f"B (mean of before and after) = {b:,.0f} req/s.", ""]
    return lines


def run(quick: bool, backends: list[str]) -> str:
    """Runs the benchmark on each backend; returns a Markdown section."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    n = USERS_QUICK if quick else USERS_FULL
    out = [
        "## SCIM gateway throughput",
        "",
        f"Size: **{'quick' if quick else 'full'}** ({n:,} users). Target (issue): each SCIM "
        f"operation reaches >= {TARGET:.0%} of baseline B's throughput at 100,000 users.",
        "",
        f"Setup: real `identity-service` and `scim-gateway` processes (gunicorn gthread, "
        f"{GATEWAY_WORKERS} workers x 4 threads, each worker opening its gRPC channel after "
        f"fork); load from {GEN_PROCESSES} generator processes x {GEN_CONNECTIONS} keep-alive "
        f"connections (closed loop, {seconds:.0f} s per operation after a "
        f"{WARMUP_SECONDS:.0f} s warm-up), all on the same {os.cpu_count()}-CPU machine. "
        "Users were created by `identity_service.users.create` (events written), each with "
        "one email. PATCH replaces `title` (new value) on odd requests and `active` (random) "
        "on even ones, of random seeded users; POST creates unique users with one email. "
        "gRPC calls the gateway makes per request: filter GET = AuthenticateToken + "
        "ListUsers + RecordOperation; POST = AuthenticateToken + CreateUser + "
        "RecordOperation; PATCH = AuthenticateToken + GetUser + ReplaceUser (skipped when "
        "nothing changes) + RecordOperation. `/ B` and `/ A` are each row's throughput over "
        "the baselines of the same run. CPU ms/req: CPU time each process group used during "
        "the measurement divided by the requests answered (postgres counts every server "
        "process on the machine; SQLite work is inside `core`).",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, contextlib.ExitStack() as dbs:
        workdir = Path(tmp)
        urls = {b: dbs.enter_context(database(b, workdir)) for b in backends}
        seeded = seed_all(urls, n)
        for backend in backends:
            s, took = seeded[backend]
            log(f"{backend}: seeded {n:,} users in {took:.0f}s")
            result = measure_backend(
                backend, urls[backend], s, seed_seconds=took, quick=quick, workdir=workdir
            )
            out += _table(result)
    return "\n".join(out).rstrip() + "\n"
