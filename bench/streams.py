"""Change-stream benchmark: write-to-subscriber latency and write throughput with
0, 1, 10 and 100 subscribers, against a real `identity-service` process.

    .venv/bin/python -c 'import bench.streams as b; print(b.run(quick=True))'

* Throughput: WRITERS threads create users as fast as they can for a while.
* Latency: one writer creates users at a steady RATE per second; for each, the
  time from the write's response (in this process) to the event's arrival at
  every subscriber (in a separate subscriber process, so consuming 100 streams
  does not steal this process's CPU). Both processes read CLOCK_MONOTONIC,
  which is system-wide on Linux. An event may arrive before the writer has
  decoded its response; such a sample counts as 0 ms.

Subscribers run in one asyncio process with `AsyncIdentityClient.watch`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRITERS = 4
RATE = 100  # writes per second in the latency phase
SUBSCRIBERS = (0, 1, 10, 100)
LATENCY_PREFIX = "lat-"
DONE_PREFIX = "done-"
READY_PREFIX = "ready-"


@dataclass
class Row:
    subscribers: int
    writes_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    paced_rate: float | None = None
    samples: int = 0
    reconnects: int = 0


# -- the subscriber process ---------------------------------------------------------------


async def _subscribe(target: str, tenant_id: str, n: int, since: int, out: str) -> None:
    from identity_client import AsyncIdentityClient

    arrivals: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    ready = [asyncio.Event() for _ in range(n)]
    reconnects = [0] * n

    async with AsyncIdentityClient(target) as client:

        async def one(i: int) -> None:
            w = client.watch(tenant_id, since=since, resource_types=["User"])
            async for ev in w:
                name = ev.user.user_name
                if name.startswith(LATENCY_PREFIX):
                    arrivals[i].append((name, time.monotonic()))
                elif name.startswith(READY_PREFIX):
                    ready[i].set()
                elif name.startswith(DONE_PREFIX):
                    break
            reconnects[i] = w.reconnects
            await w.aclose()

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.gather(*(e.wait() for e in ready))
        print("ready", flush=True)
        await asyncio.gather(*tasks)
    Path(out).write_text(json.dumps({"arrivals": arrivals, "reconnects": reconnects}))


def subscriber_main(argv: list[str]) -> None:
    target, tenant_id, n, since, out = argv
    asyncio.run(_subscribe(target, tenant_id, int(n), int(since), out))


# -- the benchmark ---------------------------------------------------------------------------


def _start_service(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.support import free_port, wait_serving

    target = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "IDENTITY_DATABASE_URL": database_url,
        "IDENTITY_LISTEN": target,
    }
    log = open(workdir / "identity.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(BIN / "identity-service")], env=env, stdout=log, stderr=log)
    wait_serving(target, timeout=60)
    return proc, target


def _user(name: str) -> object:
    from identity_client.types import User

    return User(user_name=name)


def _throughput(target: str, tenant_id: str, seconds: float) -> float:
    from identity_client import IdentityClient

    counts = [0] * WRITERS
    stop = threading.Event()

    def writer(k: int) -> None:
        with IdentityClient(target) as c:
            i = 0
            while not stop.is_set():
                c.create_user(tenant_id, _user(f"t{k}-{i}-{uuid.uuid4().hex[:6]}"))  # type: ignore[arg-type]
                i += 1
                counts[k] = i

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


def _paced(target: str, tenant_id: str, seconds: float) -> tuple[dict[str, float], float]:
    """Writes RATE users per second; returns {user_name: response time} and the rate achieved."""
    from identity_client import IdentityClient

    responses: dict[str, float] = {}
    n = int(seconds * RATE)
    with IdentityClient(target) as c:
        start = time.monotonic()
        for i in range(n):
            due = start + i / RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = f"{LATENCY_PREFIX}{i}-{uuid.uuid4().hex[:6]}"
            c.create_user(tenant_id, _user(name))  # type: ignore[arg-type]
            responses[name] = time.monotonic()
        elapsed = time.monotonic() - start
    return responses, n / elapsed


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _measure(
    target: str,
    sub_target: str,
    subscribers: int,
    *,
    throughput_s: float,
    latency_s: float,
    workdir: Path,
) -> Row:
    """One row: writes go to `target`, subscribers watch through `sub_target`."""
    from identity_client import IdentityClient

    with IdentityClient(target) as c:
        tenant = c.create_tenant(f"bench-{uuid.uuid4().hex[:10]}")
        since = c.get_revision(tenant.id).revision
        sub: subprocess.Popen[str] | None = None
        out = workdir / f"subs-{subscribers}.json"
        if subscribers:
            code = "import sys, bench.streams as b; b.subscriber_main(sys.argv[1:])"
            argv = [sub_target, tenant.id, str(subscribers), str(since), str(out)]
            sub = subprocess.Popen(
                [sys.executable, "-c", code, *argv],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            assert sub.stdout is not None
            # Repeat the marker until every subscriber is attached and has seen one.
            ready = threading.Event()
            threading.Thread(
                target=lambda: (sub.stdout.readline(), ready.set()),  # type: ignore[union-attr]
                daemon=True,
            ).start()
            while not ready.wait(0.5):
                c.create_user(tenant.id, _user(f"{READY_PREFIX}{uuid.uuid4().hex[:8]}"))  # type: ignore[arg-type]
                if sub.poll() is not None:
                    raise RuntimeError("subscriber process exited early")
        rate = _throughput(target, tenant.id, throughput_s)
        responses, paced_rate = _paced(target, tenant.id, latency_s)
        c.create_user(tenant.id, _user(f"{DONE_PREFIX}{uuid.uuid4().hex[:8]}"))  # type: ignore[arg-type]
    row = Row(subscribers, rate, paced_rate=paced_rate)
    if sub is not None:
        sub.wait(120)
        data = json.loads(out.read_text())
        lat = sorted(
            max(0.0, arrived - responses[name]) * 1000
            for per_sub in data["arrivals"]
            for name, arrived in per_sub
            if name in responses
        )
        expected = len(responses) * subscribers
        if len(lat) != expected:
            raise RuntimeError(f"{subscribers} subscribers: {len(lat)} of {expected} events")
        row.p50_ms = statistics.median(lat)
        row.p99_ms = _percentile(lat, 99)
        row.max_ms = lat[-1]
        row.samples = len(lat)
        row.reconnects = sum(data["reconnects"])
    return row


def _section(title: str, note: str, rows: list[Row], throughput_s: float, latency_s: float) -> str:
    base = rows[0].writes_per_s
    lines = [
        f"### {title}",
        "",
        note,
        f"Throughput: {WRITERS} writer threads creating users for {throughput_s:g} s. "
        f"Latency: {RATE} writes/s for {latency_s:g} s, write response → event at each "
        "subscriber.",
        "",
        "| subscribers | writes/s | vs 0 subscribers | p50 ms | p99 ms | max ms "
        "| paced writes/s | samples | reconnects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for r in rows:
        lines.append(
            f"| {r.subscribers} | {r.writes_per_s:.0f} | {r.writes_per_s / base:.2f} "
            f"| {ms(r.p50_ms)} | {ms(r.p99_ms)} | {ms(r.max_ms)} "
            f"| {ms(r.paced_rate)} | {r.samples} | {r.reconnects} |"
        )
    return "\n".join(lines)


def _pg_url() -> str | None:
    try:
        import psycopg

        from tests.support import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return PG_ADMIN_URL
    except Exception:
        return None


def _backend(
    title: str, database_url: str, quick: bool, workdir: Path, *, stream_replica: bool = False
) -> str:
    throughput_s, latency_s = (3.0, 4.0) if quick else (8.0, 8.0)
    procs = []
    try:
        proc, target = _start_service(database_url, workdir)
        procs.append(proc)
        sub_target = target
        note = "One identity-service process serves the writes and the streams."
        if stream_replica:
            proc, sub_target = _start_service(database_url, workdir)
            procs.append(proc)
            note = (
                "Two replicas over the same database: writes go to one, subscribers "
                "watch through the other (woken by LISTEN/NOTIFY)."
            )
        rows = [
            _measure(
                target,
                sub_target,
                n,
                throughput_s=throughput_s,
                latency_s=latency_s,
                workdir=workdir,
            )
            for n in SUBSCRIBERS
        ]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return _section(title, note, rows, throughput_s, latency_s)


def run(quick: bool) -> str:
    """Runs the benchmark and returns a Markdown section. quick: SQLite only, < 60 s."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sections = [
        "## Change streams",
        "",
        f"One identity-service process, subscribers in one separate asyncio process; "
        f"{os.cpu_count()} CPUs shared by the service, the writers and the subscribers.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        workdir = Path(tmp)
        sections.append(_backend("SQLite", f"sqlite:///{workdir / 'identity.db'}", quick, workdir))
        if not quick:
            admin = _pg_url()
            if admin is not None:
                from tests.support import throwaway_pg_database

                with throwaway_pg_database("identity_bench") as url:
                    sections += ["", _backend("PostgreSQL", url, quick, workdir)]
                with throwaway_pg_database("identity_bench") as url:
                    sections += [
                        "",
                        _backend(
                            "PostgreSQL, streams served by a second replica",
                            url,
                            quick,
                            workdir,
                            stream_replica=True,
                        ),
                    ]
    return "\n".join(sections) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
