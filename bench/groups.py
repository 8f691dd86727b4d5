"""Large groups: membership PATCH latency, group GET, and memory, on SQLite and PostgreSQL.

    .venv/bin/python -m bench --only groups [--quick] [--backend sqlite|postgresql|both]

For each backend, in a fresh database and before any service starts (in-process, like
`bench.gateway`): seed N + PAIRS users with the bulk seeder (`bench.seed`: the rows
`identity_service.domain.users.create` writes), then create a SMALL-member group and an
N-member group with `identity_service.domain.groups.create` +
`groups.update_group(add_members=...)` in transactions of BUILD_CHUNK members (events
written). Then start the real `identity-service` and `scim-gateway` (gunicorn + uvicorn
workers, 2 workers) and, through the gateway over HTTP:

* membership PATCH exactly as Okta / Entra ID send it: add one member
  (`{"op":"add","path":"members","value":[{"value":id}]}`), then remove it
  (`{"op":"remove","path":"members[value eq \\"id\\"]"}`), sequentially on one keep-alive
  connection, with a fresh (non-member) user per pair, alternating small and big group
  so both see the same machine noise. Target (issue): big within 2x of small;
* `GET /Groups/{id}` with members and with `excludedAttributes=members`, for both
  groups (a new connection per request, so both gateway workers may serve some). The
  gateway answers a group of more than one page of members by streaming: GetGroup
  without members, then ListMembers pages, each encoded and sent as a chunk before the
  next is read (`scim_gateway/resources/groups.py`); a smaller group in one piece.
  Its workers cap glibc malloc at 2 arenas unless MALLOC_ARENA_MAX is set;
* memory: VmRSS of the identity-service process and of each gateway worker, sampled
  every 100 ms from /proc/<pid>/status, plus the kernel's exact peak (VmHWM, reset
  through /proc/<pid>/clear_refs before each phase), while walking the big group's
  members through the core's paged `ListMembers` (`IdentityClient.list_members`) and
  while doing the GETs above. Targets (issue): gateway worker < 100 MB, identity
  service < 300 MB, paging keeps memory flat.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .gateway import GATEWAY_WORKERS, TENANT, Seeded, _children, database, seed, services
from .seed import vacuum_analyze

ROOT = Path(__file__).resolve().parent.parent

USERS_FULL = 100_000
USERS_QUICK = 10_000
SMALL = 10
PAIRS_FULL = 200
PAIRS_QUICK = 60
WARMUP_PAIRS = 5
GET_REPS_FULL = 5
GET_REPS_QUICK = 3
PAGE_SIZE = 1000
BUILD_CHUNK = 10_000
SAMPLE_SECONDS = 0.1
RATIO_TARGET = 2.0
GATEWAY_MB = 100
CORE_MB = 300
#: "Flat" paging: the identity service's peak during the walk exceeds its RSS before
#: the walk by at most this much.
FLAT_MB = 20
SUB_RE = re.compile(r"<!-- groups:(\w+) -->.*?<!-- /groups:\1 -->", re.S)
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def log(msg: str) -> None:
    print(f"[bench.groups {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- preparation (in-process, before the services start) ----------------------------------------


@dataclass(frozen=True)
class Prepared:
    seeded: Seeded
    small_id: str
    big_id: str
    members: int
    fresh: tuple[str, ...]
    seed_seconds: float
    build_seconds: float


def prepare(url: str, n: int, pairs: int) -> Prepared:
    """Seeds n + pairs users, then builds the small and the big group with the core's
    domain code (the same functions CreateGroup and UpdateGroup run)."""
    from identity_service.context import SYSTEM
    from identity_service.domain import groups, tenants
    from identity_service.settings import Settings
    from identity_service.storage.db import Database
    from scim_identity_api.v1 import groups_pb2

    t0 = time.perf_counter()
    seeded = seed(url, n + pairs)
    seed_seconds = time.perf_counter() - t0
    members = seeded.user_ids[:n]
    fresh = seeded.user_ids[n:]
    t0 = time.perf_counter()
    db = Database(Settings(database_url=url))
    try:
        ids = []
        for name, size in (("small", SMALL), ("big", n)):
            with db.write() as s:
                tenant = tenants.by_id(s, seeded.tenant_id)
                gid = groups.create(
                    s, tenant, groups_pb2.Group(display_name=f"bench-{name}"), SYSTEM
                ).meta.id
            for first in range(0, size, BUILD_CHUNK):
                chunk = members[first : min(size, first + BUILD_CHUNK)]
                req = groups_pb2.UpdateGroupRequest(
                    tenant_id=seeded.tenant_id,
                    id=gid,
                    add_members=[groups_pb2.Member(value=m) for m in chunk],
                )
                with db.write() as s:
                    tenant = tenants.by_id(s, seeded.tenant_id)
                    got = groups.update_group(s, tenant, req, SYSTEM).member_count
            log(f"  group {name}: {got:,} members")
            if got != size:
                raise RuntimeError(f"group {name} has {got} members, expected {size}")
            ids.append(gid)
    finally:
        db.close()
    # As autovacuum would after such a load (it is off on this machine): without
    # statistics PostgreSQL plans each ListMembers page as if the group were tiny.
    vacuum_analyze(url, ("groups", "group_members", "events", "tenants"))
    build = time.perf_counter() - t0
    return Prepared(seeded, ids[0], ids[1], n, tuple(fresh), seed_seconds, build)


def prepare_all(urls: dict[str, str], n: int, pairs: int) -> dict[str, Prepared]:
    """Prepares every backend's database, in parallel processes when there are several."""
    for backend in urls:
        log(f"{backend}: seeding {n + pairs:,} users and building the groups")
    if len(urls) == 1:
        ((backend, url),) = urls.items()
        return {backend: prepare(url, n, pairs)}
    with ProcessPoolExecutor(len(urls), mp_context=mp.get_context("spawn")) as pool:
        futures = {b: pool.submit(prepare, url, n, pairs) for b, url in urls.items()}
        return {b: f.result() for b, f in futures.items()}


# -- memory ----------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_hwm(pid: int) -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class PhaseMemory:
    before: dict[str, float] = field(default_factory=dict)  # MB
    peak: dict[str, float] = field(default_factory=dict)  # MB, max of the 100 ms samples
    hwm: dict[str, float] = field(default_factory=dict)  # MB, kernel peak (VmHWM)
    after: dict[str, float] = field(default_factory=dict)  # MB
    samples: int = 0


class Sampler:
    """Samples VmRSS of named processes every SAMPLE_SECONDS in a background thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._current: PhaseMemory | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.hwm_ok = all(_reset_hwm(p) for p in pids.values())

    def rss(self) -> dict[str, float]:
        return {k: _status_kb(p, "VmRSS") / 1024 for k, p in self.pids.items()}

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            now = self.rss()
            with self._lock:
                cur = self._current
                if cur is not None:
                    cur.samples += 1
                    for k, v in now.items():
                        cur.peak[k] = max(cur.peak.get(k, 0.0), v)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    @contextlib.contextmanager
    def phase(self) -> Iterator[PhaseMemory]:
        for p in self.pids.values():
            _reset_hwm(p)
        mem = PhaseMemory(before=self.rss())
        mem.peak = dict(mem.before)
        with self._lock:
            self._current = mem
        try:
            yield mem
        finally:
            with self._lock:
                self._current = None
            now = self.rss()
            for k, v in now.items():
                mem.peak[k] = max(mem.peak[k], v)
            mem.after = now
            mem.hwm = {k: _status_kb(p, "VmHWM") / 1024 for k, p in self.pids.items()}


# -- HTTP --------------------------------------------------------------------------------------


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, body: object = None
) -> tuple[int, bytes, float]:
    status, raw, took, _ = _exchange(conn, method, path, token, body)
    return status, raw, took


def _exchange(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, body: object = None
) -> tuple[int, bytes, float, bool]:
    """status, body, seconds, and whether the body came chunked (streamed)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    data = json.dumps(body).encode() if body is not None else None
    t0 = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    chunked = (resp.getheader("Transfer-Encoding") or "").lower() == "chunked"
    return resp.status, raw, time.perf_counter() - t0, chunked


def _add(uid: str) -> dict[str, object]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
    }


def _remove(uid: str) -> dict[str, object]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
    }


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] * 1000


@dataclass
class Latencies:
    add: list[float] = field(default_factory=list)
    remove: list[float] = field(default_factory=list)

    @property
    def pair(self) -> list[float]:
        return [a + r for a, r in zip(self.add, self.remove, strict=True)]


def measure_patches(
    port: int, prefix: str, token: str, groups: dict[str, str], users: tuple[str, ...]
) -> dict[str, Latencies]:
    """Add then remove one fresh user, alternating which group goes first."""
    out = {k: Latencies() for k in groups}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        order = list(groups)
        warm = users[-WARMUP_PAIRS:]
        for i, uid in enumerate(list(warm) + list(users)):
            measured = i >= len(warm)
            for key in order if i % 2 == 0 else order[::-1]:
                path = f"{prefix}/Groups/{groups[key]}"
                for body, into in ((_add(uid), out[key].add), (_remove(uid), out[key].remove)):
                    status, raw, took = _request(conn, "PATCH", path, token, body)
                    if status != 200:
                        raise RuntimeError(f"PATCH {key} {status}: {raw[:300]!r}")
                    if measured:
                        into.append(took)
    finally:
        conn.close()
    return out


@dataclass
class GetResult:
    latencies: list[float]
    size: int  # bytes of the response body
    members: int
    chunked: bool  # sent with Transfer-Encoding: chunked (streamed), not Content-Length


def measure_get(port: int, path: str, token: str, reps: int) -> GetResult:
    latencies: list[float] = []
    size = members = 0
    chunked = False
    for _ in range(reps):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            status, raw, took, chunked = _exchange(conn, "GET", path, token)
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"GET {path} {status}: {raw[:300]!r}")
        latencies.append(took)
        size = len(raw)
        members = len(json.loads(raw).get("members", []))
    return GetResult(latencies, size, members, chunked)


# -- one backend -------------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    prep: Prepared
    patches: dict[str, Latencies]
    gets: dict[str, GetResult]
    idle: dict[str, float]
    paging: PhaseMemory
    paging_seconds: float
    paged: int
    getting: PhaseMemory
    hwm_ok: bool


def measure_backend(
    backend: str, url: str, prep: Prepared, quick: bool, workdir: Path
) -> BackendResult:
    from scim_identity_client import IdentityClient

    s = prep.seeded
    prefix = f"/scim/v2/{TENANT}"
    groups = {"small": prep.small_id, "big": prep.big_id}
    log(f"{backend}: starting identity-service and scim-gateway")
    with services(url, workdir) as running:
        workers = sorted(_children(running.gateway_pid))
        if len(workers) != GATEWAY_WORKERS:
            log(f"{backend}: warning: {len(workers)} gateway workers found")
        pids = {"core": running.core_pid}
        pids.update({f"worker{i + 1}": p for i, p in enumerate(workers)})
        target = _core_target(running.core_pid)
        with Sampler(pids) as sampler, IdentityClient(target, timeout=120) as client:
            log(f"{backend}: {len(prep.fresh)} add+remove pairs per group")
            patches = measure_patches(running.port, prefix, s.token, groups, prep.fresh)
            for key, lat in patches.items():
                log(
                    f"{backend}:   {key}: add p50 {_pct(lat.add, 50):.1f} ms, "
                    f"remove p50 {_pct(lat.remove, 50):.1f} ms"
                )
            for key, gid in groups.items():
                count = client.get_group(s.tenant_id, gid, include_members=False).member_count
                want = SMALL if key == "small" else prep.members
                if count != want:
                    raise RuntimeError(f"{key} group has {count} members after the PATCHes")
            time.sleep(1.0)
            idle = sampler.rss()
            log(f"{backend}: idle RSS {_fmt_mb(idle)}")

            log(f"{backend}: walking {prep.members:,} members with ListMembers")
            with sampler.phase() as paging:
                t0 = time.perf_counter()
                paged = sum(
                    1 for _ in client.list_members(s.tenant_id, prep.big_id, page_size=PAGE_SIZE)
                )
                paging_seconds = time.perf_counter() - t0
                time.sleep(0.3)
            if paged != prep.members:
                raise RuntimeError(f"ListMembers returned {paged} members, not {prep.members}")
            log(f"{backend}:   {paged:,} in {paging_seconds:.1f}s, peak {_fmt_mb(paging.peak)}")

            reps = GET_REPS_QUICK if quick else GET_REPS_FULL
            gets: dict[str, GetResult] = {}
            with sampler.phase() as getting:
                for key, gid in groups.items():
                    for label, query in (
                        ("members", ""),
                        ("excluded", "?excludedAttributes=members"),
                    ):
                        path = f"{prefix}/Groups/{gid}{query}"
                        gets[f"{key}/{label}"] = r = measure_get(running.port, path, s.token, reps)
                        log(
                            f"{backend}:   GET {key} {label}: p50 {_pct(r.latencies, 50):.0f} ms,"
                            f" {r.size:,} bytes, {r.members:,} members"
                        )
                time.sleep(0.3)
            log(f"{backend}:   GET phase peak {_fmt_mb(getting.peak)}")
            hwm_ok = sampler.hwm_ok
    return BackendResult(
        backend, prep, patches, gets, idle, paging, paging_seconds, paged, getting, hwm_ok
    )


def _core_target(core_pid: int) -> str:
    """The identity service's gRPC address, from its command's environment."""
    env = Path(f"/proc/{core_pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"IDENTITY_LISTEN="):
            return item.split(b"=", 1)[1].decode()
    raise RuntimeError("identity-service listen address not found")


def _fmt_mb(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} MB" for k, v in values.items())


# -- report ------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _section(r: BackendResult, quick: bool, started: str) -> list[str]:
    p = r.prep
    n = p.members
    small, big = r.patches["small"], r.patches["big"]
    lines = [
        f"<!-- groups:{r.backend} -->",
        "",
        f"#### {TITLES[r.backend]}: {n:,}-member group, {len(p.seeded.user_ids):,} users "
        f"(seeded in {p.seed_seconds:.0f} s, groups built in {p.build_seconds:.0f} s)",
        "",
        f"Size **{'quick' if quick else 'full'}**, measured {started} UTC.",
        "",
        f"Membership PATCH through the gateway ({len(small.add)} add+remove pairs per group):",
        "",
        f"| PATCH | {SMALL}-member p50 ms | p99 ms | {n:,}-member p50 ms | p99 ms "
        f"| ratio p50 | ratio p99 | p50 <= {RATIO_TARGET:.0f}x |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, a, b in (
        ("add one member", small.add, big.add),
        ('remove one member (`members[value eq "…"]`)', small.remove, big.remove),
        ("add + remove", small.pair, big.pair),
    ):
        ratio = _pct(b, 50) / _pct(a, 50)
        lines.append(
            f"| {label} | {_pct(a, 50):.1f} | {_pct(a, 99):.1f} | {_pct(b, 50):.1f} | "
            f"{_pct(b, 99):.1f} | {ratio:.2f} | {_pct(b, 99) / _pct(a, 99):.2f} | "
            f"{_verdict(ratio <= RATIO_TARGET)} |"
        )
    lines += [
        "",
        "`GET /Groups/{id}` through the gateway (new connection per request):",
        "",
        "| group | query | requests | p50 ms | max ms | body bytes | members shown | sent |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, res in r.gets.items():
        group, label = key.split("/")
        query = "" if label == "members" else "`excludedAttributes=members`"
        size = f"{SMALL}-member" if group == "small" else f"{n:,}-member"
        lines.append(
            f"| {size} | {query or '(none)'} | {len(res.latencies)} | "
            f"{_pct(res.latencies, 50):.1f} | {max(res.latencies) * 1000:.1f} | {res.size:,} | "
            f"{res.members:,} | {'chunked' if res.chunked else 'Content-Length'} |"
        )
    lines += [
        "",
        "Memory (RSS, MB; peak = max of 100 ms VmRSS samples"
        + (", kernel VmHWM peak in brackets" if r.hwm_ok else "")
        + "). ListMembers walk: "
        f"{r.paged:,} members in pages of {PAGE_SIZE} in {r.paging_seconds:.1f} s. "
        f"GET phase: all the GETs above.",
        "",
        "| process | idle | walk: before | walk: peak | walk: after | GETs: before | GETs: peak "
        "| GETs: after | target | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def peak(m: PhaseMemory, k: str) -> str:
        return f"{m.peak[k]:.0f}" + (f" [{m.hwm[k]:.0f}]" if r.hwm_ok else "")

    def top(m: PhaseMemory, k: str) -> float:
        return max(m.peak[k], m.hwm[k] if r.hwm_ok else 0.0)

    for k in r.idle:
        limit = CORE_MB if k == "core" else GATEWAY_MB
        worst = max(top(r.paging, k), top(r.getting, k))
        verdict = f"peak < {limit} MB: {_verdict(worst < limit)}"
        if k == "core":
            growth = top(r.paging, k) - r.paging.before[k]
            verdict += f"; walk +{growth:.0f} MB <= {FLAT_MB}: {_verdict(growth <= FLAT_MB)}"
        name = "identity-service" if k == "core" else f"gateway {k}"
        lines.append(
            f"| {name} | {r.idle[k]:.0f} | {r.paging.before[k]:.0f} | {peak(r.paging, k)} | "
            f"{r.paging.after[k]:.0f} | {r.getting.before[k]:.0f} | {peak(r.getting, k)} | "
            f"{r.getting.after[k]:.0f} | < {limit} MB | {verdict} |"
        )
    lines += ["", f"<!-- /groups:{r.backend} -->", ""]
    return lines


def _kept(backends: list[str]) -> dict[str, str]:
    """Backend sub-sections of the previous BENCHMARKS.md not re-run this time, so
    `--backend sqlite` at full size leaves the PostgreSQL figures in place."""
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        return {}
    section = re.search(r"<!-- bench:groups -->(.*?)<!-- /bench:groups -->", path.read_text(), re.S)
    if section is None:
        return {}
    return {
        m.group(1): m.group(0)
        for m in SUB_RE.finditer(section.group(1))
        if m.group(1) not in backends
    }


def run(quick: bool, backends: list[str]) -> str:
    """Runs the benchmark on each backend; returns a Markdown section."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from scim_gateway.settings import MEMBER_PAGE_SIZE

    n = USERS_QUICK if quick else USERS_FULL
    pairs = PAIRS_QUICK if quick else PAIRS_FULL
    out = [
        "## Large groups: membership PATCH, GET and memory",
        "",
        "Sizes: full = a 100,000-member group, quick = 10,000 (given per backend; a backend "
        "not re-run keeps its previous figures). Targets (issue): "
        f"adding / removing one member of a 100,000-member group within {RATIO_TARGET:.0f}x "
        f"of the same on a {SMALL}-member group; gateway worker RSS < {GATEWAY_MB} MB and "
        f"identity-service RSS < {CORE_MB} MB; paging through a 100,000-member group keeps "
        f"memory flat (here: identity-service peak during the walk <= {FLAT_MB} MB above its "
        "RSS before it).",
        "",
        f"Setup: users bulk-seeded (`bench/seed.py`: the rows `domain.users.create` "
        "writes), groups built with "
        f"`groups.create` + `groups.update_group(add_members=...)` in transactions of "
        f"{BUILD_CHUNK:,} members, in-process before the services start (so idle RSS is a "
        f"fresh process's); PostgreSQL then gets a VACUUM ANALYZE of the group tables, as "
        f"autovacuum would (it is off on this machine). Real `identity-service` and "
        f"`scim-gateway` (gunicorn, uvicorn workers, "
        f"{GATEWAY_WORKERS} workers). PATCH bodies as Okta / Entra ID send them: "
        '`{"op":"add","path":"members","value":[{"value":id}]}`, then '
        '`{"op":"remove","path":"members[value eq \\"id\\"]"}`; each pair uses a user in '
        "neither group; sequential on one keep-alive connection, small and big group "
        f"alternating, after {WARMUP_PAIRS} warm-up pairs. Ratios are big over small from the "
        f"same run. The gateway streams a group of more than {MEMBER_PAGE_SIZE:,} members: "
        "GetGroup without members, then ListMembers pages of "
        f"{MEMBER_PAGE_SIZE:,}, each encoded and sent as one chunk (`Transfer-Encoding: "
        "chunked`) before the next is read; a smaller group is sent in one piece. Gateway "
        "workers cap glibc malloc at 2 arenas (MALLOC_ARENA_MAX, unless set). "
        f"All on the same {os.cpu_count()}-CPU machine.",
        "",
    ]
    kept = _kept(backends)
    sub: dict[str, list[str]] = {}
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as tmp, contextlib.ExitStack() as dbs:
        workdir = Path(tmp)
        urls = {b: dbs.enter_context(database(b, workdir)) for b in backends}
        prepared = prepare_all(urls, n, pairs)
        for backend in backends:
            p = prepared[backend]
            log(
                f"{backend}: seeded in {p.seed_seconds:.0f}s, "
                f"groups built in {p.build_seconds:.0f}s"
            )
            result = measure_backend(backend, urls[backend], p, quick, workdir)
            sub[backend] = _section(result, quick, started)
    for backend in TITLES:
        if backend in sub:
            out += sub[backend]
        elif backend in kept:
            log(f"{backend}: not run, previous figures kept")
            out += [kept[backend], ""]
    return "\n".join(out).rstrip() + "\n"
