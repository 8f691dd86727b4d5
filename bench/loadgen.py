"""A closed-loop HTTP load generator: several processes, each with a few threads that
each hold one keep-alive `http.client.HTTPConnection`.

Standard library only, so the spawned generator processes start fast and carry none of
the service's imports. Every connection sends its next request as soon as the previous
answer has been read, for a fixed duration; all processes start together on one event.
`run_jobs` sends a fixed list of requests instead (each once, the same way), for the
initial-sync benchmark.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass(frozen=True)
class Workload:
    """What every connection sends. `op` is one of OPS."""

    op: str
    host: str
    port: int
    prefix: str = ""  # SCIM base path, e.g. /scim/v2/bench
    token: str = ""
    user_count: int = 0  # seeded users are user000000 .. user{n-1}, ext-0 .. ext-{n-1}
    user_ids: tuple[str, ...] = ()  # for PATCH
    seconds: float = 2.0


@dataclass
class Outcome:
    """Merged result of one measurement."""

    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_sample: str = ""
    #: CPU seconds the generator processes used while sending (start-up excluded).
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        k = min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))
        return s[k] * 1000


def user_name(i: int) -> str:
    return f"user{i:06d}"


def external_id(i: int) -> str:
    """The externalId of seeded user i (its IdP-side id)."""
    return f"ext-{i}"


def _request(w: Workload, rng: random.Random, tag: str, seq: int) -> tuple[str, str, bytes | None]:
    """(method, path, body) of the next request."""
    if w.op == "healthz":
        return "GET", "/healthz", None
    if w.op == "readyz":
        return "GET", "/readyz", None
    if w.op == "filter":
        name = user_name(rng.randrange(w.user_count))
        q = f"filter=userName%20eq%20%22{name}%22"
        return "GET", f"{w.prefix}/Users?{q}", None
    if w.op == "filter_ext":
        q = f"filter=externalId%20eq%20%22{external_id(rng.randrange(w.user_count))}%22"
        return "GET", f"{w.prefix}/Users?{q}", None
    if w.op == "post":
        body = {
            "schemas": [USER_SCHEMA],
            "userName": f"new-{tag}-{seq}",
            "name": {"givenName": "New", "familyName": f"User {seq}"},
            "emails": [{"value": f"new-{tag}-{seq}@example.com", "type": "work", "primary": True}],
            "active": True,
        }
        return "POST", f"{w.prefix}/Users", json.dumps(body).encode()
    if w.op == "patch":
        uid = w.user_ids[rng.randrange(len(w.user_ids))]
        # Half the writes change `title` (always a new value), half set `active` at random
        # (a no-op when it already has that value, as a real IdP's resends often are).
        op: dict[str, object]
        if seq % 2:
            op = {"op": "replace", "path": "title", "value": f"Title {tag}-{seq}"}
        else:
            op = {"op": "replace", "path": "active", "value": rng.random() < 0.5}
        body = {"schemas": [PATCH_SCHEMA], "Operations": [op]}
        return "PATCH", f"{w.prefix}/Users/{uid}", json.dumps(body).encode()
    raise ValueError(f"unknown op {w.op!r}")


EXPECTED = {
    "healthz": 200,
    "readyz": 200,
    "filter": 200,
    "filter_ext": 200,
    "post": 201,
    "patch": 200,
}


class _Conn:
    """One keep-alive connection that sends a request and reads the whole answer;
    a broken connection is replaced, and the failure described, for the next."""

    def __init__(self, host: str, port: int, token: str, timeout: float) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self.headers = {"Content-Type": "application/scim+json", "Accept": "application/scim+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes] | str:
        """(status, body), or the description of a failed exchange."""
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            return f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.conn.close()


def _connection_loop(
    w: Workload, go: Any, out: list[Any], lock: threading.Lock, ready: threading.Barrier
) -> None:
    rng = random.Random()
    tag = uuid.uuid4().hex[:12]
    conn = _Conn(w.host, w.port, w.token, 30)
    conn.conn.connect()
    latencies: list[float] = []
    errors = 0
    sample = ""
    expected = EXPECTED[w.op]
    seq = 0
    ready.wait()
    go.wait()
    end = time.perf_counter() + w.seconds
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            seq += 1
            method, path, body = _request(w, rng, tag, seq)
            answer = conn.exchange(method, path, body)
            if isinstance(answer, str):
                errors += 1
                sample = sample or answer
                continue
            status, data = answer
            latencies.append(time.perf_counter() - t0)
            if status != expected:
                errors += 1
                sample = sample or f"{method} {path} -> {status} {data[:200]!r}"
    finally:
        conn.close()
    with lock:
        out.append((latencies, errors, sample, time.perf_counter() - (end - w.seconds)))


def _process_main(w: Workload, connections: int, ready_q: Any, go: Any, result_q: Any) -> None:
    out: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)
    threads = [
        threading.Thread(target=_connection_loop, args=(w, go, out, lock, barrier))
        for _ in range(connections)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    ready_q.put(True)
    go.wait()
    cpu0 = time.process_time()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    lat: list[float] = []
    errors = 0
    sample = ""
    elapsed = 0.0
    for latencies, err, smp, el in out:
        lat.extend(latencies)
        errors += err
        sample = sample or smp
        elapsed = max(elapsed, el)
    result_q.put((lat, errors, sample, elapsed, cpu))


def run_load(w: Workload, processes: int, connections: int) -> Outcome:
    """Runs `processes` generator processes with `connections` connections each for
    `w.seconds`; returns the merged outcome. Bounded: the processes stop by themselves
    and are killed if they overstay."""
    ctx = mp.get_context("spawn")
    ready_q = ctx.Queue()
    result_q = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(target=_process_main, args=(w, connections, ready_q, go, result_q), daemon=True)
        for _ in range(processes)
    ]
    started: list[Any] = []
    try:
        for p in procs:
            p.start()
            started.append(p)
        for _ in procs:
            ready_q.get(timeout=60)
        go.set()
        outcome = Outcome()
        for _ in procs:
            lat, errors, sample, elapsed, cpu = result_q.get(timeout=w.seconds + 90)
            outcome.cpu_seconds += cpu
            outcome.latencies.extend(lat)
            outcome.errors += errors
            outcome.error_sample = outcome.error_sample or sample
            outcome.elapsed = max(outcome.elapsed, elapsed)
        outcome.requests = len(outcome.latencies)
        return outcome
    finally:
        for p in started:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


# -- a fixed list of requests (an IdP's initial sync) ----------------------------------------


@dataclass(frozen=True)
class Job:
    """One request of a fixed list. Jobs of the same lane go over the same connection,
    in list order (an IdP sends one group's membership batches one after another)."""

    lane: int
    method: str
    path: str
    body: bytes | None
    expect: int


@dataclass(frozen=True)
class JobList:
    host: str
    port: int
    token: str
    #: (job number, job) pairs this connection sends, in order.
    jobs: tuple[tuple[int, Job], ...]
    #: Return the `id` of each JSON answer (POST: the created resource's id).
    want_ids: bool = False


def _job_loop(
    batches: list[JobList], go: Any, out: list[Any], lock: threading.Lock, k: int
) -> None:
    jl = batches[k]
    conn = _Conn(jl.host, jl.port, jl.token, 120)
    latencies: list[float] = []
    ids: list[tuple[int, str]] = []
    errors = 0
    sample = ""
    go.wait()
    start = time.perf_counter()
    try:
        for number, job in jl.jobs:
            t0 = time.perf_counter()
            answer = conn.exchange(job.method, job.path, job.body)
            if isinstance(answer, str):
                errors += 1
                sample = sample or answer
                continue
            status, data = answer
            latencies.append(time.perf_counter() - t0)
            if status != job.expect:
                errors += 1
                sample = sample or f"{job.method} {job.path} -> {status} {data[:200]!r}"
            elif jl.want_ids:
                try:
                    ids.append((number, str(json.loads(data)["id"])))
                except (ValueError, KeyError, TypeError):
                    errors += 1
                    sample = sample or f"{job.method} {job.path}: no id in {data[:200]!r}"
    finally:
        conn.close()
    with lock:
        out.append((latencies, errors, sample, time.perf_counter() - start, ids))


def _jobs_process_main(batches: list[JobList], ready_q: Any, go: Any, result_q: Any) -> None:
    out: list[Any] = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_job_loop, args=(batches, go, out, lock, k))
        for k in range(len(batches))
    ]
    for t in threads:
        t.start()
    ready_q.put(True)
    go.wait()
    cpu0 = time.process_time()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    lat: list[float] = []
    ids: list[tuple[int, str]] = []
    errors = 0
    sample = ""
    elapsed = 0.0
    for latencies, err, smp, el, got in out:
        lat.extend(latencies)
        ids.extend(got)
        errors += err
        sample = sample or smp
        elapsed = max(elapsed, el)
    result_q.put((lat, errors, sample, elapsed, cpu, ids))


def run_jobs(
    host: str,
    port: int,
    token: str,
    jobs: list[Job],
    *,
    processes: int,
    connections: int,
    want_ids: bool = False,
    timeout: float = 3600.0,
) -> tuple[Outcome, list[str]]:
    """Sends every job once, over `processes` x `connections` keep-alive connections
    (job lane modulo the number of connections picks the connection), all starting
    together; returns the merged outcome and, with want_ids, the `id` each job's answer
    carried ("" where it failed), by job number. Elapsed is until the last job answered."""
    total = processes * connections
    lists: list[list[tuple[int, Job]]] = [[] for _ in range(total)]
    for number, job in enumerate(jobs):
        lists[job.lane % total].append((number, job))
    ctx = mp.get_context("spawn")
    ready_q = ctx.Queue()
    result_q = ctx.Queue()
    go = ctx.Event()
    procs = []
    for p in range(processes):
        batches = [
            JobList(host, port, token, tuple(lists[p * connections + c]), want_ids)
            for c in range(connections)
        ]
        procs.append(
            ctx.Process(
                target=_jobs_process_main, args=(batches, ready_q, go, result_q), daemon=True
            )
        )
    started: list[Any] = []
    ids = [""] * len(jobs)
    try:
        for proc in procs:
            proc.start()
            started.append(proc)
        for _ in procs:
            ready_q.get(timeout=60)
        go.set()
        outcome = Outcome()
        for _ in procs:
            lat, errors, sample, elapsed, cpu, got = result_q.get(timeout=timeout)
            outcome.cpu_seconds += cpu
            outcome.latencies.extend(lat)
            outcome.errors += errors
            outcome.error_sample = outcome.error_sample or sample
            outcome.elapsed = max(outcome.elapsed, elapsed)
            for number, rid in got:
                ids[number] = rid
        outcome.requests = len(outcome.latencies)
        return outcome, ids
    finally:
        for proc in started:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
