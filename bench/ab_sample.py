"""One sample of an interleaved before/after comparison across checkouts.

Run from a checkout's root with that checkout's venv, so that the services measured are
that tree's own; alternate trees within each round, e.g.

    for i in 1 2 3; do for tree in /work/before /work/main; do
      (cd $tree && .venv/bin/python /work/main/bench/ab_sample.py \\
         postgresql+psycopg://127.0.0.1/ab_$(basename $tree)_$i 8 $(basename $tree))
    done; done

Each call seeds a fresh database (which must exist and be empty; or a new SQLite file)
with USERS users by `bench.seed` (of the tree being measured), starts its real core and
gateway (`bench.gateway.services`), and prints one line per window: req/s and the CPU
ms per request of the gateway, the core and PostgreSQL. Only interfaces every tree since
4ec0be6 has are used. BENCHMARKS.md ("Three trees interleaved") takes the median per tree.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import uuid
from pathlib import Path

USERS = 5000
OPS = ("readyz", "filter", "filter_ext", "post", "patch", "readyz")


def main() -> None:
    sys.path.insert(0, os.getcwd())  # the tree measured, not this file's
    from bench.gateway import cpu_used, services
    from bench.loadgen import Workload, run_load
    from bench.seed import add_users, create_tenant

    url, secs, label = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    t = create_tenant(url, "ab-" + uuid.uuid4().hex[:8])
    ids = add_users(url, t, 0, USERS, progress=None)
    targets = tuple(random.Random(1).sample(list(ids), 1000))
    with tempfile.TemporaryDirectory() as tmp, services(url, Path(tmp)) as running:
        for op in OPS:
            w = Workload(
                op,
                "127.0.0.1",
                running.port,
                prefix=f"/scim/v2/{t.name}",
                token=t.token,
                user_count=USERS,
                user_ids=targets if op == "patch" else (),
                seconds=secs,
            )
            before = running.cpu()
            out = run_load(w, 2, 4)
            cpu = cpu_used(before, running.cpu())
            per = {k: 1000 * v / max(1, out.requests) for k, v in cpu.items()}
            print(
                f"{label} {url.split(':')[0][:8]} {op:10s} {out.rate:8.0f} req/s "
                f"errors {out.errors} " + " ".join(f"{k} {v:.3f}" for k, v in per.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
