"""Change-stream benchmark: what subscribers cost the writers, and what they receive.

    .venv/bin/python -m bench --only streams [--quick] [--backend sqlite|postgresql|both]

Against real processes: `identity-service` (the writer), `scim-gateway` in front of it,
and on PostgreSQL a stream replica (`IDENTITY_ROLE=streams`) the subscribers connect to.
Subscribers run in separate asyncio processes of up to STREAMS_PER_PROCESS streams each
(`AsyncIdentityClient.watch`, batched).

For each subscriber count N (0 is the baseline):

* Throughput: SCIM POST /Users through the gateway (bench.loadgen, closed loop) in
  alternating windows: without subscribers, with N attached, without, with N, without.
  Each "with" window is compared with the mean of the windows on either side of it
  (same minutes, same noise): writes/s and the writer process's CPU per write.
* Delivery: while the N subscribers are attached, after the throughput window and once
  every stream has caught up with it (a marker event reached them all), one client
  POSTs at a steady RATE; for each user the time from the POST's response (in
  this process) to the event's arrival at every subscriber (the subscriber process;
  both read CLOCK_MONOTONIC, system-wide on Linux). An event may arrive before this
  process has read the response; such a sample counts as 0 ms.
* Completeness: every subscriber counts the events it received after its start
  revision, checks they are gapless, and must reach the tenant's final revision.
* Memory: the peak RSS of the process serving the streams while they are attached.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SUBSCRIBERS = (10, 100, 1000)
SUBSCRIBERS_QUICK = (10, 100)
ROUNDS = 2
WINDOW_S, WINDOW_QUICK_S = 5.0, 2.0
RATE = 50  # SCIM POSTs per second in the delivery phase
PACED_S, PACED_QUICK_S = 4.0, 2.0
LOAD_PROCESSES, LOAD_CONNECTIONS = 1, 8
LATENCY_PREFIX = "lat-"
DONE_PREFIX = "done-"
READY_PREFIX = "ready-"
SYNC_PREFIX = "sync-"
#: Streams per subscriber process: 1,000 Python iterators decoding every event in one
#: process fell behind the writes on their own (issue #19's first run).
STREAMS_PER_PROCESS = 250
#: What the 1,000-subscriber rows measure, and what the profile showed.
NOTE_1000 = (
    "The subscribers run in processes of up to 250 streams each, and the delivery phase"
    " starts once every stream has caught up with the throughput window before it (in"
    " the first run, on 2026-12-03, one process decoded all 1,000 streams and the"
    " delivery latency measured its backlog). All of them, the writer, the gateway and"
    " the load generator still share the same 2 CPUs: at 1,000 subscribers every event"
    " is decoded 1,000 times on this machine. A cProfile of the core with 100"
    " subscribers puts the stream cost in grpc.aio's per-message work (cygrpc callbacks"
    " on the event loop, and gRPC's own threads), not in filtering or encoding (events"
    " are framed once per process; `_deliver` and `_batch` are a few per cent): hence"
    " batches and the feed's pacing."
)
#: Targets (issue #19).
TARGET_100_SQLITE = 0.8
TARGET_P99_MS = 250.0
TARGET_RSS_MB = 500.0
TARGET_REPLICA_CPU = 0.9


# -- the subscriber process ---------------------------------------------------------------


async def _subscribe(target: str, tenant_id: str, n: int, since: int, out: str) -> None:
    from scim_identity_client import AsyncIdentityClient

    arrivals: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    counts = [0] * n
    gaps = [0] * n
    last = [since] * n
    ready = [asyncio.Event() for _ in range(n)]
    reconnects = [0] * n
    synced: dict[str, int] = {}

    async with AsyncIdentityClient(target) as client:

        async def one(i: int) -> None:
            w = client.watch(tenant_id, since=since)
            async for ev in w:
                if ev.revision != last[i] + 1:
                    gaps[i] += 1
                last[i] = ev.revision
                counts[i] += 1
                if ev.WhichOneof("resource") != "user" or ev.type != 1:  # user.created
                    continue
                name = ev.user.user_name
                if name.startswith(LATENCY_PREFIX):
                    arrivals[i].append((name, time.monotonic()))
                elif name.startswith(READY_PREFIX):
                    ready[i].set()
                elif name.startswith(SYNC_PREFIX):
                    synced[name] = synced.get(name, 0) + 1
                    if synced[name] == n:  # every stream of this process has it
                        print(f"synced {name}", flush=True)
                elif name.startswith(DONE_PREFIX):
                    break
            reconnects[i] = w.reconnects
            await w.aclose()

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.gather(*(e.wait() for e in ready))
        print("ready", flush=True)
        await asyncio.gather(*tasks)
    Path(out).write_text(
        json.dumps(
            {
                "arrivals": arrivals,
                "counts": counts,
                "last": last,
                "gaps": gaps,
                "reconnects": reconnects,
            }
        )
    )


def subscriber_main(argv: list[str]) -> None:
    target, tenant_id, n, since, out = argv
    asyncio.run(_subscribe(target, tenant_id, int(n), int(since), out))


# -- processes ---------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_s(pid: int) -> float:
    from bench.gateway import _cpu_by_pid

    return _cpu_by_pid([pid]).get(pid, 0.0)


class _PeakRss:
    """Samples a process's RSS every 0.2 s while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(2)
        return max(self.peak, _rss_mb(self.pid))


@dataclass
class Stack:
    target: str  # the writer's gRPC address
    stream_target: str  # where subscribers connect
    writer_pid: int
    streams_pid: int  # the process serving the streams (the writer, or the replica)
    gateway_port: int
    prefix: str = ""
    token: str = ""
    tenant_id: str = ""


@contextmanager
def _stack(database_url: str, workdir: Path, *, replica: bool) -> Iterator[Stack]:
    from bench.gateway import services
    from scim_identity_client import IdentityClient
    from tests.support import start_identity_process

    with services(database_url, workdir) as running:
        rep = None
        try:
            stream_target, streams_pid = running.target, running.core_pid
            if replica:
                rep, stream_target = start_identity_process(
                    database_url, workdir, IDENTITY_ROLE="streams"
                )
                streams_pid = rep.popen.pid
            stack = Stack(
                running.target, stream_target, running.core_pid, streams_pid, running.port
            )
            with IdentityClient(running.target) as c:
                name = f"streams-{uuid.uuid4().hex[:8]}"
                tenant = c.create_tenant(name)
                stack.tenant_id = tenant.id
                stack.token = c.issue_token(tenant.id).secret
                stack.prefix = f"/scim/v2/{name}"
            yield stack
        finally:
            if rep is not None:
                rep.stop()


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Window:
    writes_per_s: float
    cpu_ms_per_write: float
    errors: int


def _window(stack: Stack, seconds: float) -> Window:
    from bench.loadgen import Workload, run_load

    w = Workload(
        op="post",
        host="127.0.0.1",
        port=stack.gateway_port,
        prefix=stack.prefix,
        token=stack.token,
        seconds=seconds,
    )
    cpu0 = _cpu_s(stack.writer_pid)
    out = run_load(w, LOAD_PROCESSES, LOAD_CONNECTIONS)
    cpu = _cpu_s(stack.writer_pid) - cpu0
    return Window(out.rate, cpu * 1000 / max(out.requests, 1), out.errors)


def _post(conn: http.client.HTTPConnection, stack: Stack, name: str) -> None:
    body = json.dumps(
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}
    ).encode()
    conn.request(
        "POST",
        f"{stack.prefix}/Users",
        body=body,
        headers={
            "Authorization": f"Bearer {stack.token}",
            "Content-Type": "application/scim+json",
        },
    )
    resp = conn.getresponse()
    resp.read()
    if resp.status != 201:
        raise RuntimeError(f"POST {name}: {resp.status}")


def _paced(stack: Stack, seconds: float) -> dict[str, float]:
    """POSTs RATE users per second; returns {userName: response time}."""
    responses: dict[str, float] = {}
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_port, timeout=30)
    try:
        start = time.monotonic()
        for i in range(int(seconds * RATE)):
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = f"{LATENCY_PREFIX}{i}-{uuid.uuid4().hex[:6]}"
            _post(conn, stack, name)
            responses[name] = time.monotonic()
    finally:
        conn.close()
    return responses


@dataclass
class Row:
    subscribers: int
    with_: list[Window] = field(default_factory=list)
    without: list[Window] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    delivered: int = 0
    expected: int = 0
    gaps: int = 0
    reconnects: int = 0
    streams_rss_mb: float = 0.0
    #: The last round's arrivals: per subscriber, (userName, time.monotonic()).
    arrivals: list[list[tuple[str, float]]] = field(default_factory=list)

    def ratios(self, attr: str) -> list[float]:
        """Each "with" window against the mean of the "without" windows beside it."""
        out = []
        for i, w in enumerate(self.with_):
            base = (getattr(self.without[i], attr) + getattr(self.without[i + 1], attr)) / 2
            out.append(getattr(w, attr) / base if base else float("nan"))
        return out


@dataclass
class _Subscribers:
    """The subscriber processes of one round, each with its streams and its stdout lines."""

    procs: list[subprocess.Popen[str]]
    outs: list[Path]
    lines: list[queue.Queue[str]]
    since: int

    def expect(self, line: str, timeout: float, poke: Callable[[], None] | None = None) -> None:
        """Waits until every process printed `line` (calling `poke` between waits)."""
        deadline = time.monotonic() + timeout
        for proc, lines in zip(self.procs, self.lines, strict=True):
            while True:
                try:
                    if lines.get(timeout=0.5) == line:
                        break
                except queue.Empty:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"a subscriber process did not print {line!r}")
                if poke is not None:
                    poke()

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()


def _attached(stack: Stack, n: int, workdir: Path) -> _Subscribers:
    """Starts the subscriber processes (STREAMS_PER_PROCESS streams each at most) with n
    streams in all; returns once every stream saw a marker."""
    from scim_identity_client import IdentityClient
    from scim_identity_client.types import User

    with IdentityClient(stack.target) as c:
        since = c.get_revision(stack.tenant_id).revision
        sizes = [STREAMS_PER_PROCESS] * (n // STREAMS_PER_PROCESS)
        if n % STREAMS_PER_PROCESS:
            sizes.append(n % STREAMS_PER_PROCESS)
        code = "import sys, bench.streams as b; b.subscriber_main(sys.argv[1:])"
        subs = _Subscribers([], [], [], since)
        for size in sizes:
            out = workdir / f"subs-{n}-{uuid.uuid4().hex[:6]}.json"
            argv = [stack.stream_target, stack.tenant_id, str(size), str(since), str(out)]
            proc = subprocess.Popen(
                [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT
            )
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(
                target=lambda p=proc, q=lines: [q.put(line.strip()) for line in p.stdout or ()],
                daemon=True,
            ).start()
            subs.procs.append(proc)
            subs.outs.append(out)
            subs.lines.append(lines)

        def poke() -> None:
            c.create_user(stack.tenant_id, User(user_name=f"{READY_PREFIX}{uuid.uuid4().hex[:8]}"))

        subs.expect("ready", 300, poke)
    return subs


def _caught_up(stack: Stack, subs: _Subscribers) -> None:
    """Returns once every stream has every event written so far (a marker written now
    reached all): the delivery phase then measures delivery, not the backlog of the
    throughput window before it."""
    from scim_identity_client import IdentityClient
    from scim_identity_client.types import User

    name = f"{SYNC_PREFIX}{uuid.uuid4().hex[:8]}"
    with IdentityClient(stack.target) as c:
        c.create_user(stack.tenant_id, User(user_name=name))
    subs.expect(f"synced {name}", 600)


def _detach(stack: Stack, subs: _Subscribers, row: Row) -> None:
    """Ends the subscribers with a marker event and takes in what they received."""
    from scim_identity_client import IdentityClient
    from scim_identity_client.types import User

    with IdentityClient(stack.target) as c:
        c.create_user(stack.tenant_id, User(user_name=f"{DONE_PREFIX}{uuid.uuid4().hex[:8]}"))
        final = c.get_revision(stack.tenant_id).revision
    row.arrivals = []
    for proc, out in zip(subs.procs, subs.outs, strict=True):
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            subs.kill()
            raise RuntimeError("subscribers did not receive every event within 300 s") from None
        data = json.loads(out.read_text())
        row.delivered += sum(data["counts"])
        row.expected += (final - subs.since) * len(data["counts"])
        row.gaps += sum(data["gaps"])
        row.reconnects += sum(data["reconnects"])
        if any(last != final for last in data["last"]):
            raise RuntimeError(f"a subscriber stopped short of revision {final}")
        row.arrivals += data["arrivals"]


def _measure(stack: Stack, n: int, window_s: float, paced_s: float, workdir: Path) -> Row:
    row = Row(n)
    row.without.append(_window(stack, window_s))
    for _ in range(ROUNDS):
        subs = _attached(stack, n, workdir)
        rss = _PeakRss(stack.streams_pid)
        try:
            row.with_.append(_window(stack, window_s))
            _caught_up(stack, subs)
            responses = _paced(stack, paced_s)
        finally:
            row.streams_rss_mb = max(row.streams_rss_mb, rss.stop())
        _detach(stack, subs, row)
        row.latencies_ms += [
            max(0.0, arrived - responses[name]) * 1000
            for per_sub in row.arrivals
            for name, arrived in per_sub
            if name in responses
        ]
        row.without.append(_window(stack, window_s))
    return row


# -- the report --------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def _ratios(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _section(title: str, note: str, rows: list[Row], window_s: float, paced_s: float) -> str:
    lines = [
        f"### {title}",
        "",
        note,
        "",
        f"Throughput: SCIM POST /Users through the gateway, {LOAD_PROCESSES}x"
        f"{LOAD_CONNECTIONS} closed-loop connections, windows of {window_s:g} s alternating "
        f"without / with subscribers ({ROUNDS} rounds); each ratio is a 'with' window over "
        "the mean of the two 'without' windows beside it. CPU/write is the writer "
        "process's user+system CPU per request (robust to other load on the machine). "
        f"Delivery: {RATE} POSTs/s for {paced_s:g} s per round, POST response → event at "
        "each subscriber.",
        "",
        "| subscribers | writes/s without → with | throughput ratio (per round) "
        "| writer CPU ms/write without → with | CPU/write ratio (none ÷ with) "
        "| p50 ms | p99 ms | max ms | delivered / expected | gaps | reconnects "
        "| stream server RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        wo = statistics.mean(w.writes_per_s for w in r.without)
        wi = statistics.mean(w.writes_per_s for w in r.with_)
        co = statistics.mean(w.cpu_ms_per_write for w in r.without)
        ci = statistics.mean(w.cpu_ms_per_write for w in r.with_)
        cpu_ratios = [1 / v if v else float("nan") for v in r.ratios("cpu_ms_per_write")]
        lines.append(
            f"| {r.subscribers} | {wo:.0f} → {wi:.0f} | {_ratios(r.ratios('writes_per_s'))} "
            f"| {co:.2f} → {ci:.2f} | {_ratios(cpu_ratios)} "
            f"| {_pct(r.latencies_ms, 50):.1f} | {_pct(r.latencies_ms, 99):.1f} "
            f"| {max(r.latencies_ms, default=float('nan')):.1f} "
            f"| {r.delivered} / {r.expected} | {r.gaps} | {r.reconnects} "
            f"| {r.streams_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def _targets(sqlite: list[Row] | None, replica: list[Row] | None) -> list[str]:
    out = ["", "Targets (issue #19):", ""]

    def row(rows: list[Row] | None, n: int) -> Row | None:
        return next((r for r in rows or () if r.subscribers == n), None)

    r100 = row(sqlite, 100)
    if r100 is not None:
        v = statistics.median(r100.ratios("writes_per_s"))
        ok = "met" if v >= TARGET_100_SQLITE else "NOT met"
        out.append(
            f"- 100 subscribers on one SQLite core, writes ≥ {TARGET_100_SQLITE}x of none: "
            f"{v:.2f}x (median of rounds) — {ok}"
        )
    for label, rows in (("SQLite", sqlite), ("PostgreSQL + stream replica", replica)):
        r1k = row(rows, 1000)
        if r1k is None:
            continue
        p99 = _pct(r1k.latencies_ms, 99)
        ok = (
            r1k.delivered == r1k.expected
            and p99 < TARGET_P99_MS
            and r1k.streams_rss_mb < TARGET_RSS_MB
        )
        out.append(
            f"- {label}, 1,000 subscribers: {r1k.delivered} of {r1k.expected} events "
            f"delivered, p99 {p99:.0f} ms (< {TARGET_P99_MS:.0f}), RSS of the process "
            f"serving them {r1k.streams_rss_mb:.0f} MB (< {TARGET_RSS_MB:.0f}) — "
            f"{'met' if ok else 'NOT met'}"
        )
    r1k = row(replica, 1000)
    if r1k is not None:
        v = statistics.median(1 / x for x in r1k.ratios("cpu_ms_per_write"))
        ok = "met" if v >= TARGET_REPLICA_CPU else "NOT met"
        out.append(
            f"- PostgreSQL with a stream replica, 1,000 subscribers: the writer's writes per "
            f"CPU-second {v:.2f}x of none (≥ {TARGET_REPLICA_CPU}) — {ok}"
        )
    return out


def _pg_available() -> bool:
    try:
        import psycopg

        from tests.support import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def _log(msg: str) -> None:
    print(f"[bench streams] {msg}", file=sys.stderr, flush=True)


def _backend(
    database_url: str, workdir: Path, counts: tuple[int, ...], quick: bool, *, replica: bool
) -> list[Row]:
    window_s = WINDOW_QUICK_S if quick else WINDOW_S
    paced_s = PACED_QUICK_S if quick else PACED_S
    rows = []
    with _stack(database_url, workdir, replica=replica) as stack:
        # Warm-up: the first writes of a process are slower (imports, caches, pools).
        _window(stack, 1.0)
        for n in counts:
            _log(f"{n} subscribers ({'replica' if replica else 'one core'})")
            rows.append(_measure(stack, n, window_s, paced_s, workdir))
    return rows


def run(quick: bool, backends: list[str] | None = None) -> str:
    """Runs the benchmark and returns a Markdown section."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    backends = backends or ["sqlite", "postgresql"]
    counts = SUBSCRIBERS_QUICK if quick else SUBSCRIBERS
    window_s = WINDOW_QUICK_S if quick else WINDOW_S
    paced_s = PACED_QUICK_S if quick else PACED_S
    sections = [
        "## Change streams",
        "",
        f"{os.cpu_count()} CPUs shared by the writer, the gateway, the load generator, the "
        "subscriber processes (and PostgreSQL), and by whatever else the machine runs: "
        "absolute figures are noisy, the same-run ratios and the CPU-per-write figures are "
        "what to read.",
        "",
        NOTE_1000,
        "",
    ]
    sqlite_rows: list[Row] | None = None
    replica_rows: list[Row] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        workdir = Path(tmp)
        if "sqlite" in backends:
            sqlite_rows = _backend(
                f"sqlite:///{workdir / 'identity.db'}", workdir, counts, quick, replica=False
            )
            sections.append(
                _section(
                    "SQLite, one core serving writes and streams",
                    "One identity-service process serves the SCIM writes and the streams.",
                    sqlite_rows,
                    window_s,
                    paced_s,
                )
            )
        if "postgresql" in backends and _pg_available():
            from tests.support import throwaway_pg_database

            with throwaway_pg_database("identity_bench") as url:
                replica_rows = _backend(url, workdir, counts, quick, replica=True)
            sections += [
                "",
                _section(
                    "PostgreSQL, streams served by a stream replica",
                    "Writes go to one identity-service; subscribers watch through a second "
                    "one with IDENTITY_ROLE=streams over the same database (woken by "
                    "LISTEN/NOTIFY). RSS is the replica's.",
                    replica_rows,
                    window_s,
                    paced_s,
                ),
            ]
    sections += _targets(sqlite_rows, replica_rows)
    return "\n".join(sections) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
