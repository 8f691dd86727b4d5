"""SCIM gateway at 100,000 and 1,000,000 users, against same-run baselines, on SQLite and
PostgreSQL: throughput, latency growth with size, paging, memory, an IdP's initial sync.

    .venv/bin/python -m bench --only gateway [--quick] [--backend sqlite|postgresql|both]

First, on every backend, `bench.seed.check_equivalence`: a few users seeded both through
`identity_service.domain.users.create` and through the bulk seeder must give the same rows,
reads and events. Then, for each size in SIZES (full: 100,000 then 1,000,000 users):
every backend's database is seeded up to that size with the bulk seeder (`bench.seed`,
the rows `users.create` writes, events included; the second size adds the difference to
the first's database, so 1,000,000 users are seeded once per backend), in parallel
processes, before any service runs; PostgreSQL then gets a VACUUM ANALYZE (autovacuum is
off on the benchmark machine). Then, backend by backend: start the real
`identity-service` and the real `scim-gateway` (gunicorn, uvicorn workers, SCIM_WORKERS=2) on free
ports, and through the gateway:

* A  `GET /healthz`  - plain Falcon under the same gunicorn, no RPC;
* B  `GET /readyz`   - the same plus one gRPC call that does no storage work (the
  baseline of the targets; measured before and after the SCIM operations, mean used);
* `GET /Users?filter=userName eq "..."` and `filter=externalId eq "..."` (random seeded
  users), `POST /Users` (unique names), `PATCH /Users/{id}` (replace `title` or `active`
  of random seeded users), each driven by `bench.loadgen` (closed loop, keep-alive
  connections) for a fixed duration;
* paging through all users on one keep-alive connection, as an IdP's import does: by
  index (`startIndex`/`count`, count = the server's maximum page) and by cursor (RFC 9865
  `cursor`/`nextCursor`). Above INDEX_WALK_ALL users the index walk is bounded to the first
  and the last EDGE_PAGES pages (OFFSET paging costs O(position) per page); the cursor walk
  always goes through everything;
* at the largest size, the initial sync of `bench.sync` into a fresh tenant;
* memory: VmRSS of the identity-service process and of each gateway worker, sampled every
  100 ms (and the kernel's VmHWM) through every phase (`bench.groups.Sampler`);
* raw SQL: the userName lookup with SQLAlchemy Core on one connection, in this process,
  after the services stopped - what the database alone can answer.

Targets (issue): each SCIM operation reaches >= 70% of baseline B's throughput (the
userName filter GET at 1,000,000 users in particular); no operation's p99 grows more than
2x from the first size to the second; gateway worker RSS < 100 MB, identity service
< 300 MB; paging through all users keeps memory flat. Everything runs on this one
machine, generators included.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sync
from .loadgen import Outcome, Workload, external_id, run_load, user_name
from .seed import Tenant, UserIds, add_users, check_backend, check_seeded, create_tenant
from .seed import vacuum_analyze as _vacuum_analyze

if TYPE_CHECKING:
    from .groups import PhaseMemory

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Users at each measured size: the second is reached by adding to the first's database.
SIZES_FULL = (100_000, 1_000_000)
SIZES_QUICK = (2_000, 20_000)
SECONDS_FULL = 10.0
SECONDS_QUICK = 2.0
WARMUP_SECONDS = 1.0
GEN_PROCESSES = 2
GEN_CONNECTIONS = 4  # per generator process
GATEWAY_WORKERS = 2
#: PATCH targets: this many seeded users, drawn at random from all of them.
PATCH_SAMPLE = 20_000
TARGET = 0.70
#: The target's ratio is also measured in alternating windows (B, filter, B, ...), so
#: that drift in the machine's speed (it is shared) hits both sides alike.
ROUNDS_FULL, ROUNDS_QUICK = 5, 2
ROUND_SECONDS_FULL, ROUND_SECONDS_QUICK = 5.0, 1.0
P99_GROWTH = 2.0
GATEWAY_MB = 100
CORE_MB = 300
#: "Flat" paging: no process's peak during a walk exceeds its RSS before it by more.
FLAT_MB = 20
#: Users per page in the paging walks: the server's largest page (SCIM_MAX_PAGE_SIZE).
PAGE_SIZE = 1000
#: Up to this many users the index walk goes through everything; above, only the first
#: and the last EDGE_PAGES pages.
INDEX_WALK_ALL_FULL = 200_000
INDEX_WALK_ALL_QUICK = 10_000
EDGE_PAGES_FULL = 10
EDGE_PAGES_QUICK = 3
TENANT = "bench"
SYNC_TENANT = "sync"

OPS: tuple[tuple[str, str], ...] = (
    ("healthz", "A: `GET /healthz` (Falcon/gunicorn, no RPC)"),
    ("readyz", "B: `GET /readyz` (+ one gRPC call, no storage)"),
    ("filter", '`GET /Users?filter=userName eq "…"`'),
    ("filter_ext", '`GET /Users?filter=externalId eq "…"`'),
    ("post", "`POST /Users`"),
    ("patch", "`PATCH /Users/{id}`"),
)
SCIM_OPS = ("filter", "filter_ext", "post", "patch")


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
    #: Ids of seed_user(0), seed_user(1), ... in order.
    user_ids: Sequence[str]

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.tenant_id, self.tenant_pk, TENANT, self.token)


def seed(url: str, n: int) -> Seeded:
    """Migrates, creates the tenant and a token (with the core's code), and adds
    `n` users with the bulk seeder (the rows `users.create` writes, events included)."""
    tenant = create_tenant(url, TENANT)
    ids = add_users(url, tenant, 0, n, progress=log)
    _after_seeding(url, tenant, ids)
    return Seeded(tenant.id, tenant.pk, tenant.token, ids)


def grow(url: str, seeded: Seeded, n: int) -> Seeded:
    """Adds users len(seeded.user_ids) .. n - 1 to the seeded tenant."""
    ids = UserIds()
    if isinstance(seeded.user_ids, UserIds):
        ids.extend(seeded.user_ids)
    else:
        for uid in seeded.user_ids:
            ids.append(uid)
    first = len(ids)
    ids.extend(add_users(url, seeded.tenant, first, n - first, progress=log))
    _after_seeding(url, seeded.tenant, ids, first)
    return Seeded(seeded.tenant_id, seeded.tenant_pk, seeded.token, ids)


def _after_seeding(url: str, tenant: Tenant, ids: UserIds, first: int = 0) -> None:
    """VACUUM ANALYZE (PostgreSQL), then check users first .. len(ids) - 1 (those before
    were seeded earlier and may have been changed by the measurements since)."""
    _vacuum_analyze(url)
    n = len(ids)
    check_seeded(url, tenant, ids, sorted({first, (first + n) // 2, n - 1}))


def _seed_timed(url: str, n: int) -> tuple[Seeded, float]:
    t0 = time.perf_counter()
    seeded = seed(url, n)
    return seeded, time.perf_counter() - t0


def _grow_timed(url: str, seeded: Seeded, n: int) -> tuple[Seeded, float]:
    t0 = time.perf_counter()
    grown = grow(url, seeded, n)
    return grown, time.perf_counter() - t0


def _in_parallel(
    fn: Callable[..., tuple[Seeded, float]], args: dict[str, tuple[Any, ...]]
) -> dict[str, tuple[Seeded, float]]:
    """fn(*args[backend]) for every backend, in parallel processes when there are several
    (seeding is CPU-bound Python; the two backends do not share a lock)."""
    if len(args) == 1:
        ((backend, a),) = args.items()
        return {backend: fn(*a)}
    with ProcessPoolExecutor(len(args), mp_context=mp.get_context("spawn")) as pool:
        futures = {b: pool.submit(fn, *a) for b, a in args.items()}
        return {b: f.result() for b, f in futures.items()}


def seed_all(urls: dict[str, str], n: int) -> dict[str, tuple[Seeded, float]]:
    """Seeds every backend's database with `n` users."""
    for backend in urls:
        log(f"{backend}: seeding {n:,} users")
    return _in_parallel(_seed_timed, {b: (url, n) for b, url in urls.items()})


def grow_all(
    urls: dict[str, str], seeded: dict[str, Seeded], n: int
) -> dict[str, tuple[Seeded, float]]:
    for backend in urls:
        log(f"{backend}: adding {n - len(seeded[backend].user_ids):,} users")
    return _in_parallel(_grow_timed, {b: (url, seeded[b], n) for b, url in urls.items()})


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


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (all its threads)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (14 and 15)
    return out


#: Process group -> pid -> CPU seconds so far.
CpuSnapshot = dict[str, dict[int, float]]


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots. Per process, so a PostgreSQL
    backend that exits in between does not subtract its whole life's CPU (one that
    starts in between counts in full)."""
    return {
        group: sum(t - before.get(group, {}).get(pid, 0.0) for pid, t in pids.items())
        for group, pids in after.items()
    }


@dataclass(frozen=True)
class Running:
    port: int
    core_pid: int
    gateway_pid: int
    target: str

    def cpu(self) -> CpuSnapshot:
        """CPU seconds so far of the gateway (master and workers), the core, and every
        PostgreSQL server process on the machine, per process."""
        return {
            "gateway": _cpu_by_pid([self.gateway_pid, *_children(self.gateway_pid)]),
            "core": _cpu_by_pid([self.core_pid]),
            "postgres": _cpu_by_pid(_postgres_pids()),
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
        yield Running(port, core.popen.pid, gateway.popen.pid, target)
    finally:
        if gateway is not None:
            gateway.stop()
        core.stop()


# -- checks and measurements -------------------------------------------------------------------


def _call(port: int, method: str, path: str, token: str, body: object = None) -> tuple[int, dict]:
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
    n = len(seeded.user_ids)
    i = n // 2
    for attr, value in (("userName", user_name(i)), ("externalId", external_id(i))):
        q = urllib.parse.quote(f'{attr} eq "{value}"')
        status, body = _call(port, "GET", f"{prefix}/Users?filter={q}", seeded.token)
        ok = status == 200 and body.get("totalResults") == 1
        if not ok or body["Resources"][0]["id"] != seeded.user_ids[i]:
            raise RuntimeError(f"{attr} filter check failed: {status} {body}")
    status, body = _call(
        port, "POST", f"{prefix}/Users", seeded.token, {"userName": f"sanity-check-{n}"}
    )
    if status != 201:
        raise RuntimeError(f"POST check failed: {status} {body}")
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": f"Checked {n}"}],
    }
    status, body = _call(port, "PATCH", f"{prefix}/Users/{seeded.user_ids[i]}", seeded.token, patch)
    if status != 200 or body.get("title") != f"Checked {n}":
        raise RuntimeError(f"PATCH check failed: {status} {body}")


def raw_sql(url: str, seeded: Seeded, n: int, seconds: float) -> Outcome:
    """The userName lookup the filter compiles to, straight through SQLAlchemy Core on
    one connection: the floor the database sets for the filter GET."""
    from sqlalchemy import create_engine, text

    from identity_service.storage.db import normalise_url

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
            warm = time.perf_counter() + WARMUP_SECONDS
            while time.perf_counter() < warm:
                conn.execute(stmt, {"t": seeded.tenant_pk, "k": user_name(rng.randrange(n))})
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


# -- paging walks --------------------------------------------------------------------------------


@dataclass
class Walk:
    """One walk through the users, page by page on one keep-alive connection."""

    kind: str  # "index" or "cursor"
    total: int = 0  # totalResults of the first page
    users: int = 0  # users received
    pages: int = 0
    seconds: float = 0.0  # wall time, parsing the pages included
    bounded: bool = False  # index walk: only the first and the last edge pages
    latencies: list[float] = field(default_factory=list)  # per page, request to last byte
    sizes: list[int] = field(default_factory=list)  # users on each page
    edge: int = 0
    error: str = ""  # why the walk failed, if it did

    def _full(self) -> list[float]:
        """Latencies of the full pages (a short last page is no end-of-list figure)."""
        return [t for t, n in zip(self.latencies, self.sizes, strict=True) if n == PAGE_SIZE]

    @property
    def start(self) -> list[float]:
        """The first `edge` full pages."""
        return self._full()[: self.edge]

    @property
    def end(self) -> list[float]:
        """The last `edge` full pages."""
        return self._full()[-self.edge :]


def _get_page(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[dict, float]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/scim+json"}
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    took = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {raw[:300]!r}")
    return json.loads(raw), took


def walk_index(port: int, prefix: str, token: str, walk_all: int, edge: int) -> Walk:
    """startIndex/count paging: every page up to `walk_all` users, else the first and
    the last `edge` pages."""
    w = Walk("index")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    try:
        page = 0
        numbers: Sequence[int] = [0]
        while page < len(numbers):
            start = 1 + numbers[page] * PAGE_SIZE
            doc, took = _get_page(
                conn, f"{prefix}/Users?startIndex={start}&count={PAGE_SIZE}", token
            )
            if page == 0:
                w.total = int(doc["totalResults"])
                pages = -(-w.total // PAGE_SIZE)
                full = w.total // PAGE_SIZE
                w.bounded = w.total > walk_all and full > 2 * edge
                # Bounded: the first `edge` pages, the last `edge` full pages and the rest.
                numbers = [*range(edge), *range(full - edge, pages)] if w.bounded else range(pages)
                w.edge = min(edge, max(1, full // 2))
            got = len(doc.get("Resources", []))
            want = min(PAGE_SIZE, w.total - start + 1)
            if got != want or doc.get("startIndex") != start:
                raise RuntimeError(f"index page at {start}: {got} users, expected {want}")
            w.latencies.append(took)
            w.sizes.append(got)
            w.users += got
            w.pages += 1
            page += 1
    finally:
        conn.close()
    w.seconds = time.perf_counter() - t0
    return w


def walk_cursor(port: int, prefix: str, token: str, edge: int) -> Walk:
    """RFC 9865 cursor paging through every user; checks none is missed or repeated."""
    w = Walk("cursor")
    seen: set[str] = set()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    try:
        cursor = ""
        while True:
            q = urllib.parse.urlencode({"count": PAGE_SIZE, "cursor": cursor})
            doc, took = _get_page(conn, f"{prefix}/Users?{q}", token)
            if not w.pages:
                w.total = int(doc["totalResults"])
            resources = doc.get("Resources", [])
            seen.update(r["id"] for r in resources)
            w.latencies.append(took)
            w.sizes.append(len(resources))
            w.users += len(resources)
            w.pages += 1
            cursor = doc.get("nextCursor", "")
            if not cursor:
                break
    finally:
        conn.close()
    w.seconds = time.perf_counter() - t0
    w.edge = min(edge, max(1, w.total // PAGE_SIZE // 2))
    if w.users != w.total or len(seen) != w.total:
        raise RuntimeError(
            f"cursor walk: {w.users} users ({len(seen)} distinct), totalResults {w.total}"
        )
    return w


# -- one size on one backend ---------------------------------------------------------------------


@dataclass
class SizeResult:
    backend: str
    users: int
    #: Seconds to seed this size (the second size: to add the difference).
    seed_seconds: float
    added: int
    results: dict[str, Outcome]
    #: CPU seconds per process group during each measurement.
    cpu: dict[str, dict[str, float]]
    walks: dict[str, Walk]
    #: Process name ("core", "worker1", ...) -> RSS (MB) after start-up.
    idle: dict[str, float]
    #: Phase ("load", "index", "cursor", "sync") -> memory.
    memory: dict[str, PhaseMemory]
    hwm_ok: bool
    sync: sync.SyncResult | None = None
    sync_error: str = ""
    #: Per round of the interleaved measurement: (B before, filter, B after) req/s.
    rounds: list[tuple[float, float, float]] = field(default_factory=list)
    #: Seconds per window of the interleaved measurement.
    round_seconds: float = 0.0

    @property
    def interleaved_ratio(self) -> float:
        """The median of the rounds' filter / B (NaN when there were no rounds)."""
        ratios = _round_ratios(self.rounds)
        return statistics.median(ratios) if ratios else float("nan")

    @property
    def baseline_b(self) -> float:
        return (self.results["readyz"].rate + self.results["readyz_after"].rate) / 2


def interleaved(
    load: Callable[[str, float], Outcome], quick: bool
) -> list[tuple[float, float, float]]:
    """(B, filter, B) req/s per round, the rounds back to back: B, filter, B, filter, ...
    (each B measurement ends one round and starts the next)."""
    n = ROUNDS_QUICK if quick else ROUNDS_FULL
    secs = ROUND_SECONDS_QUICK if quick else ROUND_SECONDS_FULL
    b = load("readyz", secs).rate
    rounds = []
    for _ in range(n):
        f = load("filter", secs).rate
        b_next = load("readyz", secs).rate
        rounds.append((b, f, b_next))
        b = b_next
    return rounds


def _round_ratios(rounds: list[tuple[float, float, float]]) -> list[float]:
    """filter / mean(B before, B after), per round."""
    return [f / ((b0 + b1) / 2) for b0, f, b1 in rounds if b0 + b1 > 0]


def _ratios(rounds: list[tuple[float, float, float]]) -> str:
    ratios = _round_ratios(rounds)
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    return f"median {statistics.median(ratios):.2f} ({shown})" if ratios else "none"


def set_bench_policy(target: str, tenant_id: str) -> None:
    """A policy as vendor setups have one (an extension schema of two attributes,
    DELETE deactivates), without role rules (those would re-evaluate every user)."""
    from scim_identity_api.v1 import policy_pb2
    from scim_identity_client import IdentityClient

    attrs = [
        policy_pb2.SchemaAttribute(name="costCenter", type="string"),
        policy_pb2.SchemaAttribute(name="level", type="integer"),
    ]
    policy = policy_pb2.TenantPolicy(
        on_scim_delete=policy_pb2.DELETE_ACTION_DEACTIVATE,
        extension_schemas=[
            policy_pb2.ExtensionSchema(
                schema="urn:ietf:params:scim:schemas:extension:bench:2.0:User",
                name="Bench",
                resource_type="User",
                attributes=attrs,
            )
        ],
    )
    with IdentityClient(target) as client:
        client.set_policy(tenant_id, policy)


def measure_size(
    backend: str,
    url: str,
    seeded: Seeded,
    *,
    seed_seconds: float,
    added: int,
    quick: bool,
    workdir: Path,
    sync_tenant: Tenant | None,
) -> SizeResult:
    from .groups import Sampler  # bench.groups imports this module

    n = len(seeded.user_ids)
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    edge = EDGE_PAGES_QUICK if quick else EDGE_PAGES_FULL
    walk_all = INDEX_WALK_ALL_QUICK if quick else INDEX_WALK_ALL_FULL
    rng = random.Random(n)
    targets = tuple(seeded.user_ids[k] for k in rng.sample(range(n), min(n, PATCH_SAMPLE)))
    results: dict[str, Outcome] = {}
    cpu: dict[str, dict[str, float]] = {}
    walks: dict[str, Walk] = {}
    memory: dict[str, PhaseMemory] = {}
    synced: sync.SyncResult | None = None
    sync_error = ""
    log(f"{backend} {n:,}: starting identity-service and scim-gateway")
    with services(url, workdir) as running:
        prefix = f"/scim/v2/{TENANT}"
        sanity_check(running.port, prefix, seeded)
        workers = sorted(_children(running.gateway_pid))
        if len(workers) != GATEWAY_WORKERS:
            log(f"{backend}: warning: {len(workers)} gateway workers found")
        pids = {"core": running.core_pid}
        pids.update({f"worker{i + 1}": p for i, p in enumerate(workers)})

        def load(op: str, secs: float) -> Outcome:
            w = Workload(
                op=op,
                host="127.0.0.1",
                port=running.port,
                prefix=prefix,
                token=seeded.token,
                user_count=n,
                user_ids=targets if op == "patch" else (),
                seconds=secs,
            )
            return run_load(w, GEN_PROCESSES, GEN_CONNECTIONS)

        with Sampler(pids) as sampler:
            idle = sampler.rss()
            log(f"{backend} {n:,}: idle RSS {_fmt_mb(idle)}")
            with sampler.phase() as memory["load"]:
                # Warm both gunicorn workers, their channels and the core's caches.
                for op, _ in OPS:
                    load(op, WARMUP_SECONDS)
                for key, op in [*((o, o) for o, _ in OPS), ("readyz_after", "readyz")]:
                    log(f"{backend} {n:,}: {key} for {seconds:.0f}s")
                    before = running.cpu()
                    results[key] = load(op, seconds)
                    after = running.cpu()
                    cpu[key] = cpu_used(before, after)
                    cpu[key]["loadgen"] = results[key].cpu_seconds
                    log(f"{backend} {n:,}:   {_summary(results[key])}")
                rounds = interleaved(load, quick)
                log(f"{backend} {n:,}: interleaved filter / B: {_ratios(rounds)}")
            for kind in ("index", "cursor"):
                log(f"{backend} {n:,}: {kind} walk")
                with sampler.phase() as memory[kind]:
                    try:
                        if kind == "index":
                            w = walk_index(running.port, prefix, seeded.token, walk_all, edge)
                        else:
                            w = walk_cursor(running.port, prefix, seeded.token, edge)
                    except Exception as exc:  # keep the run's other figures
                        w = Walk(kind, error=_error(exc))
                    walks[kind] = w
                    time.sleep(0.3)
                log(f"{backend} {n:,}:   {_walk_summary(walks[kind])}")
                log(f"{backend} {n:,}:   peak RSS {_fmt_mb(memory[kind].peak)}")
            if sync_tenant is not None:
                size = sync.USERS_QUICK if quick else sync.USERS_FULL
                log(f"{backend} {n:,}: initial sync of {size:,} users into a fresh tenant")
                with sampler.phase() as memory["sync"]:
                    try:
                        synced = sync.run_sync(
                            running.port,
                            f"/scim/v2/{sync_tenant.name}",
                            sync_tenant.token,
                            size,
                            url=url,
                            tenant_pk=sync_tenant.pk,
                        )
                    except Exception as exc:  # keep the run's other figures
                        sync_error = _error(exc)
                if synced is not None:
                    log(f"{backend} {n:,}:   {sync.summary(synced)}")
                    if sync.check(synced):
                        log(f"{backend} {n:,}:   sync check FAILED: {sync.check(synced)}")
                else:
                    log(f"{backend} {n:,}:   sync FAILED: {sync_error}")
            hwm_ok = sampler.hwm_ok
        if sync_tenant is not None:
            # Last: the tenant keeps its policy (extension schemas cannot be removed).
            log(f"{backend} {n:,}: filter_policy for {seconds:.0f}s")
            try:
                set_bench_policy(running.target, seeded.tenant_id)
                load("filter", WARMUP_SECONDS)
                before = running.cpu()
                results["filter_policy"] = load("filter", seconds)
                after = running.cpu()
            except Exception as exc:  # keep the run's other figures
                log(f"{backend} {n:,}:   filter_policy FAILED: {_error(exc)}")
            else:
                cpu["filter_policy"] = cpu_used(before, after)
                cpu["filter_policy"]["loadgen"] = results["filter_policy"].cpu_seconds
                log(f"{backend} {n:,}:   {_summary(results['filter_policy'])}")
    log(f"{backend} {n:,}: raw SQL lookup for {seconds:.0f}s")
    results["sql"] = raw_sql(url, seeded, n, seconds)
    log(f"{backend} {n:,}:   {_summary(results['sql'])}")
    return SizeResult(
        backend,
        n,
        seed_seconds,
        added,
        results,
        cpu,
        walks,
        idle,
        memory,
        hwm_ok,
        synced,
        sync_error,
        rounds,
        ROUND_SECONDS_QUICK if quick else ROUND_SECONDS_FULL,
    )


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text[:300]


def _summary(o: Outcome) -> str:
    return (
        f"{o.rate:.0f} req/s, p50 {o.percentile(50):.2f} ms, p99 {o.percentile(99):.2f} ms, "
        f"{o.errors} errors" + (f" (first: {o.error_sample})" if o.error_sample else "")
    )


def _walk_summary(w: Walk) -> str:
    if w.error:
        return f"FAILED: {w.error}"
    return (
        f"{w.users:,} users in {w.pages} pages, {w.seconds:.1f}s "
        f"({w.users / w.seconds:,.0f} users/s); page p50 {_pct(w.latencies, 50):.0f} ms, "
        f"first {w.edge} p50 {_pct(w.start, 50):.0f} ms, last {w.edge} p50 "
        f"{_pct(w.end, 50):.0f} ms"
    )


def _fmt_mb(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} MB" for k, v in values.items())


def _pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] * 1000


# -- report ---------------------------------------------------------------------------------


TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
CPU_GROUPS = ("gateway", "core", "postgres", "loadgen")


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _ops_table(r: SizeResult) -> list[str]:
    a = r.results["healthz"].rate
    b = r.baseline_b
    lines = [
        "| operation | req/s | p50 ms | p99 ms | errors | / B | / A | >= 0.70 B "
        "| CPU ms/req: gateway | core | postgres | loadgen |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    rows = [
        *OPS[:2],
        ("readyz_after", "B again, after the SCIM operations"),
        *OPS[2:],
        (
            "filter_policy",
            '`GET /Users?filter=userName eq "…"`, the tenant with a policy (see Setup)',
        ),
        ("sql", "raw SQL userName lookup (1 connection, no HTTP/gRPC)"),
    ]
    for key, label in rows:
        if key not in r.results:
            continue
        o = r.results[key]
        verdict = ""
        if key in SCIM_OPS or key == "filter_policy":
            verdict = _verdict(o.rate / b >= TARGET and not o.errors)
        if key in r.cpu and o.requests:
            cpu = " | ".join(f"{r.cpu[key][g] * 1000 / o.requests:.2f}" for g in CPU_GROUPS)
        else:
            cpu = " | ".join("" for _ in CPU_GROUPS)
        lines.append(
            f"| {label} | {o.rate:,.0f} | {o.percentile(50):.2f} | {o.percentile(99):.2f} | "
            f"{o.errors} | {o.rate / b:.2f} | {o.rate / a:.2f} | {verdict} | {cpu} |"
        )
    lines += ["", f"B (mean of before and after) = {b:,.0f} req/s.", ""]
    if r.rounds:
        lines += [
            f"Interleaved (B and the userName filter in alternating "
            f"{r.round_seconds:.0f} s windows, {len(r.rounds)} rounds): filter / B "
            f"{_ratios(r.rounds)}.",
            "",
        ]
    return lines


def _walk_label(w: Walk) -> str:
    if w.kind == "cursor":
        return f"by cursor (`cursor`, `count={PAGE_SIZE}`), all users"
    what = f"first and last {w.edge} pages" if w.bounded else "all users"
    return f"by index (`startIndex`, `count={PAGE_SIZE}`), {what}"


def _paging_table(r: SizeResult) -> list[str]:
    b = r.baseline_b
    lines = [
        "| walk | users | pages | seconds | users/s | pages/s | pages/s / B | page p50 ms "
        "| p99 ms | first pages p50 ms | last pages p50 ms | last / first |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in r.walks.values():
        if w.error:
            lines.append(f"| {_walk_label(w)} | **FAILED**: {w.error} |" + " |" * 10)
            continue
        first, last = _pct(w.start, 50), _pct(w.end, 50)
        lines.append(
            f"| {_walk_label(w)} | {w.users:,} | {w.pages:,} | {w.seconds:.1f} | "
            f"{w.users / w.seconds:,.0f} | {w.pages / w.seconds:.1f} | "
            f"{w.pages / w.seconds / b:.4f} | {_pct(w.latencies, 50):.0f} | "
            f"{_pct(w.latencies, 99):.0f} | {first:.0f} | {last:.0f} | {last / first:.2f} |"
        )
    return lines


PHASES = (
    ("load", "operations"),
    ("index", "index walk"),
    ("cursor", "cursor walk"),
    ("sync", "initial sync"),
)


def _memory_table(r: SizeResult) -> list[str]:
    phases = [(k, label) for k, label in PHASES if k in r.memory]
    head = "| process | idle | " + " | ".join(f"{label}: before | peak" for _, label in phases)
    lines = [
        head + " | target | verdict |",
        "|---|---:|" + "---:|---:|" * len(phases) + "---|---|",
    ]

    for proc in r.idle:
        limit = CORE_MB if proc == "core" else GATEWAY_MB
        cells = []
        for k, _ in phases:
            m = r.memory[k]
            hwm = f" [{m.hwm[proc]:.0f}]" if r.hwm_ok else ""
            cells.append(f"{m.before[proc]:.0f} | {m.peak[proc]:.0f}{hwm}")
        worst = _peak(r, proc)
        verdict = f"peak {worst:.0f} < {limit}: {_verdict(worst < limit)}"
        growth = _walk_growth(r, proc)
        verdict += f"; walks +{growth:.0f} MB <= {FLAT_MB}: {_verdict(growth <= FLAT_MB)}"
        name = "identity-service" if proc == "core" else f"gateway {proc}"
        lines.append(
            f"| {name} | {r.idle[proc]:.0f} | {' | '.join(cells)} | < {limit} MB | {verdict} |"
        )
    return lines


def _size_section(r: SizeResult) -> list[str]:
    how = (
        f"seeded in {r.seed_seconds:.0f} s"
        if r.added == r.users
        else f"{r.added:,} added in {r.seed_seconds:.0f} s"
    )
    lines = [
        f"#### {TITLES[r.backend]}: {r.users:,} users ({how})",
        "",
        *_ops_table(r),
        "Paging through all users (one keep-alive connection, sequential; seconds include "
        "parsing each page here; latency = request to last byte):",
        "",
        *_paging_table(r),
        "",
        "Memory (RSS, MB; peak = max of 100 ms VmRSS samples"
        + (", kernel VmHWM peak in brackets" if r.hwm_ok else "")
        + "; `before` = at the phase's start):",
        "",
        *_memory_table(r),
        "",
    ]
    if r.sync_error:
        lines += [f"Initial sync into a fresh tenant: **FAILED**: {r.sync_error}", ""]
    if r.sync is not None:
        problem = sync.check(r.sync)
        lines += [
            f"Initial sync into a fresh tenant, beside {r.users:,} seeded users "
            f"({r.sync.users:,} users, {r.sync.groups:,} groups, {r.sync.memberships:,} "
            f"memberships; stored afterwards: {r.sync.stored[0]:,} users, "
            f"{r.sync.stored[1]:,} groups, {r.sync.stored[2]:,} memberships: "
            f"{'**FAIL**: ' + problem if problem else '**complete**'}):",
            "",
            *sync.table(r.sync, r.baseline_b),
            "",
        ]
    return lines


GrowthRow = tuple[str, Sequence[float], Sequence[float], bool]


def _growth_rows(small: SizeResult, big: SizeResult) -> list[GrowthRow]:
    """(label, latencies at the small size, at the big size, judged against the target)."""
    rows: list[GrowthRow] = []
    for key, label in (*OPS, ("sql", "raw SQL userName lookup")):
        rows.append(
            (label, small.results[key].latencies, big.results[key].latencies, key in SCIM_OPS)
        )
    s, b = small.walks["index"], big.walks["index"]
    if not s.error and not b.error:
        rows.append(("`startIndex` page, first pages", s.start, b.start, True))
        rows.append(("`startIndex` page, last pages", s.end, b.end, True))
    s, b = small.walks["cursor"], big.walks["cursor"]
    if not s.error and not b.error:
        rows.append(("`cursor` page, every page", s.latencies, b.latencies, True))
    return rows


def _growth_table(small: SizeResult, big: SizeResult) -> list[str]:
    lines = [
        f"#### {TITLES[small.backend]}: growth from {small.users:,} to {big.users:,} users",
        "",
        f"| operation | p50 ms @ {small.users:,} | p50 ms @ {big.users:,} | p99 ms @ "
        f"{small.users:,} | p99 ms @ {big.users:,} | p99 ratio | p99 <= {P99_GROWTH:.0f}x |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, a, b, judged in _growth_rows(small, big):
        ratio = _pct(b, 99) / _pct(a, 99)
        lines.append(
            f"| {label} | {_pct(a, 50):.2f} | {_pct(b, 50):.2f} | {_pct(a, 99):.2f} | "
            f"{_pct(b, 99):.2f} | {ratio:.2f} | "
            f"{_verdict(ratio <= P99_GROWTH) if judged else '(baseline)'} |"
        )
    lines.append("")
    return lines


def _peak(r: SizeResult, proc: str) -> float:
    return max(
        max(m.peak[proc], m.hwm.get(proc, 0.0) if r.hwm_ok else 0.0) for m in r.memory.values()
    )


def _walk_growth(r: SizeResult, proc: str) -> float:
    return max(
        max(m.peak[proc], m.hwm.get(proc, 0.0) if r.hwm_ok else 0.0) - m.before[proc]
        for k, m in r.memory.items()
        if k in ("index", "cursor")
    )


def _targets_table(small: SizeResult, big: SizeResult) -> list[str]:
    """The issue's targets for one backend, at a glance."""
    b = big.baseline_b
    lines = [
        f"#### {TITLES[big.backend]}: targets at a glance",
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
    ]
    f = big.results["filter"]
    ratio = big.interleaved_ratio if big.rounds else f.rate / b
    lines.append(
        f'| `GET /Users?filter=userName eq "…"` at {big.users:,} users >= {TARGET:.2f} B '
        f"| {ratio:.2f} B, the median of {len(big.rounds)} interleaved rounds "
        f"({f.rate:,.0f} req/s = {f.rate / b:.2f} B in the table's single window) | "
        f"{_verdict(ratio >= TARGET and not f.errors)} |"
    )
    worst = [
        (_pct(bb, 99) / _pct(a, 99), label)
        for label, a, bb, judged in _growth_rows(small, big)
        if judged
    ]
    failing = [label for ratio, label in worst if ratio > P99_GROWTH]
    ratio, label = max(worst)
    lines.append(
        f"| no operation's p99 grows > {P99_GROWTH:.0f}x from {small.users:,} to {big.users:,} "
        f"| worst {ratio:.2f}x ({label}); {len(failing)} of {len(worst)} over | "
        f"{_verdict(not failing)} |"
    )
    workers = [p for p in big.idle if p != "core"]
    wpeak = max(_peak(big, p) for p in workers)
    cpeak = _peak(big, "core")
    lines.append(
        f"| gateway worker < {GATEWAY_MB} MB during the {big.users:,}-user run "
        f"| peak {wpeak:.0f} MB | {_verdict(wpeak < GATEWAY_MB)} |"
    )
    lines.append(
        f"| identity service < {CORE_MB} MB during the {big.users:,}-user run "
        f"| peak {cpeak:.0f} MB | {_verdict(cpeak < CORE_MB)} |"
    )
    growth = max(_walk_growth(r, p) for r in (small, big) for p in r.idle)
    lines.append(
        f"| paging through all users keeps memory flat (<= +{FLAT_MB} MB, any process) "
        f"| worst +{growth:.0f} MB | {_verdict(growth <= FLAT_MB)} |"
    )
    lines.append("")
    return lines


def run(quick: bool, backends: list[str]) -> str:
    """Runs the benchmark on each backend at each size; returns a Markdown section."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    seconds = SECONDS_QUICK if quick else SECONDS_FULL
    sizes = SIZES_QUICK if quick else SIZES_FULL
    edge = EDGE_PAGES_QUICK if quick else EDGE_PAGES_FULL
    walk_all = INDEX_WALK_ALL_QUICK if quick else INDEX_WALK_ALL_FULL
    sync_users = sync.USERS_QUICK if quick else sync.USERS_FULL
    small, big = sizes
    out = [
        "## SCIM gateway at scale",
        "",
        f"Size: **{'quick' if quick else 'full'}** ({small:,} then {big:,} users). Targets "
        f"(issue): each SCIM operation reaches >= {TARGET:.0%} of baseline B's throughput "
        f"(the userName filter GET at 1,000,000 users in particular); no operation's p99 "
        f"grows more than {P99_GROWTH:.0f}x from 100,000 to 1,000,000 users; gateway worker "
        f"RSS < {GATEWAY_MB} MB, identity-service RSS < {CORE_MB} MB; paging through all "
        f"users keeps memory flat (here: no process's peak during a walk more than "
        f"{FLAT_MB} MB above its RSS at the walk's start).",
        "",
        f"Setup: users bulk-seeded (`bench/seed.py`: the rows `domain.users.create` "
        "writes, events included, checked against `users.create` on every backend first), "
        "each with an externalId and one email; the second size adds users to the first's "
        "database; PostgreSQL is VACUUM ANALYZEd after each seeding (autovacuum is off on "
        "this machine). Real `identity-service` and `scim-gateway` processes (gunicorn "
        f"+ uvicorn workers, asyncio, {GATEWAY_WORKERS} workers), restarted for each size; load "
        f"from {GEN_PROCESSES} generator processes x {GEN_CONNECTIONS} keep-alive connections "
        f"(closed loop, {seconds:.0f} s per operation after a {WARMUP_SECONDS:.0f} s "
        f"warm-up), all on the same {os.cpu_count()}-CPU machine. Filters look up random "
        "seeded users; PATCH replaces `title` (new value) on odd requests and `active` "
        f"(random) on even ones, of {PATCH_SAMPLE:,} random seeded users; POST creates unique "
        "users with one email. `/ B` and `/ A` are each row's throughput over the baselines "
        "of the same run and size. The target's ratio is measured again in alternating "
        f"windows (B, filter, B, filter, ..., {ROUND_SECONDS_FULL:.0f} s each, "
        f"{ROUNDS_FULL} rounds; each round's filter over the mean of the B windows on "
        "either side; the median round counts), so that the machine's drift (it is shared) "
        "hits both sides alike. CPU ms/req: CPU time each process group used during the "
        "measurement divided by the requests answered (postgres counts every server process "
        "on the machine; SQLite work is inside `core`). Paging: pages of "
        f"{PAGE_SIZE} (the server's maximum); the index walk covers every page up to "
        f"{walk_all:,} users, above that the first and the last {edge} pages; "
        f"first / last pages p50 compare the {edge} pages at each end. Initial sync (at "
        f"{big:,} users): {sync_users:,} users by `POST /Users`, then one group per "
        f"{sync.GROUP_SIZE} users by `POST /Groups`, then {sync.MEMBERSHIPS_PER_USER} "
        f"memberships per user by `PATCH /Groups/{{id}}` adding up to {sync.PATCH_BATCH} "
        f"members each (a group's PATCHes in order on one connection), over "
        f"{sync.PROCESSES} x {sync.CONNECTIONS} connections, into a fresh tenant. Last, at "
        f"{big:,} users: the userName filter again after the tenant got a policy as vendor "
        "setups have one (an extension schema of two attributes, DELETE deactivates).",
        "",
    ]
    by_backend: dict[str, list[SizeResult | str]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, contextlib.ExitStack() as dbs:
        workdir = Path(tmp)
        for backend in backends:
            log(f"{backend}: checking the bulk seeder against users.create")
            check_backend(backend)
        urls = {b: dbs.enter_context(database(b, workdir)) for b in backends}
        seeded: dict[str, Seeded] = {}
        for size in sizes:
            done = grow_all(urls, seeded, size) if seeded else seed_all(urls, size)
            for backend in backends:
                before = len(seeded[backend].user_ids) if backend in seeded else 0
                seeded[backend], took = done[backend]
                log(f"{backend}: {size:,} users ready ({took:.0f}s)")
                sync_tenant = None
                if size == big:
                    sync_tenant = create_tenant(urls[backend], SYNC_TENANT)
                try:
                    result: SizeResult | str = measure_size(
                        backend,
                        urls[backend],
                        seeded[backend],
                        seed_seconds=took,
                        added=size - before,
                        quick=quick,
                        workdir=workdir,
                        sync_tenant=sync_tenant,
                    )
                except Exception as exc:  # the other backend and size still run
                    traceback.print_exc()
                    result = f"#### {TITLES[backend]}: {size:,} users: **FAILED**: {_error(exc)}"
                    log(result)
                by_backend[backend].append(result)
    for backend in backends:
        out += [f"### {TITLES[backend]}", ""]
        done_sizes = []
        for r in by_backend[backend]:
            if isinstance(r, str):
                out += [r, ""]
            else:
                out += _size_section(r)
                done_sizes.append(r)
        if len(done_sizes) == 2:
            out += _growth_table(*done_sizes)
            out += _targets_table(*done_sizes)
    return "\n".join(out).rstrip() + "\n"
