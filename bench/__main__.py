"""`python -m bench [--quick] [--only NAME ...] [--backend sqlite|postgresql|both]`

Runs the benchmark modules and rewrites BENCHMARKS.md: title, date, machine, the
command, then one section per module between `<!-- bench:NAME -->` markers. Sections
of modules not run this time are kept from the previous file, so `--only gateway`
leaves the stream figures in place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import os
import platform
import re
import shlex
import sqlite3
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "BENCHMARKS.md"
#: Benchmark modules in report order.
MODULES = ("gateway", "groups", "streams", "tracing")
#: A section: `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`, NAME a module's or a
#: hand-kept record's (e.g. `writes-16`: hyphens too, or a rewrite would drop it).
SECTION_RE = re.compile(r"<!-- bench:([\w-]+) -->(.*?)<!-- /bench:\1 -->", re.S)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _postgres_version() -> str:
    try:
        import psycopg

        from tests.support import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            autovacuum = conn.execute("SHOW autovacuum").fetchone()
            # autovacuum matters: every write updates the tenant's revision row.
            return (
                f"PostgreSQL {version[0] if version else '(unknown version)'}"
                f" (autovacuum {autovacuum[0] if autovacuum else 'unknown'})"
            )
    except Exception as exc:  # only for the report header
        return f"PostgreSQL unavailable ({type(exc).__name__})"


def machine() -> list[str]:
    return [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; memory {_memory()}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- SQLite {sqlite3.sqlite_version}; {_postgres_version()}",
    ]


def previous_sections(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {m.group(1): m.group(2).strip() for m in SECTION_RE.finditer(path.read_text())}


def run_module(name: str, quick: bool, backends: list[str]) -> str:
    mod = importlib.import_module(f"bench.{name}")
    if name in ("gateway", "groups", "streams"):
        return str(mod.run(quick=quick, backends=backends))
    return str(mod.run(quick=quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    parser.add_argument(
        "--only", nargs="+", choices=MODULES, metavar="NAME", help=f"any of {', '.join(MODULES)}"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="databases for the gateway and groups benchmarks (default both)",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    wanted = [m for m in MODULES if not args.only or m in args.only]
    command = "python -m bench" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    started = dt.datetime.now(dt.UTC)

    sections = previous_sections(args.output)
    failed: list[str] = []
    for name in wanted:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"[bench] {name}: no module bench/{name}.py, skipped", file=sys.stderr)
            continue
        print(f"[bench] {name}: running", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            body = run_module(name, args.quick, backends)
        except Exception:
            traceback.print_exc()
            print(f"[bench] {name}: FAILED (previous figures kept)", file=sys.stderr)
            failed.append(name)
            continue
        took = time.monotonic() - t0
        print(f"[bench] {name}: done in {took:.0f}s", file=sys.stderr, flush=True)
        stamp = f"_Run {started:%Y-%m-%d %H:%M} UTC by `{command}`, took {took:.0f} s._\n\n"
        sections[name] = stamp + body.strip()

    order = [m for m in MODULES if m in sections] + [m for m in sections if m not in MODULES]
    text = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand. Figures are ratios to",
        "baselines measured in the same run where possible: this machine is shared and noisy.",
        "",
        f"Last run: {started:%Y-%m-%d %H:%M} UTC, command `{command}`",
        "",
        "Machine:",
        "",
        *machine(),
        "",
    ]
    for name in order:
        text += [f"<!-- bench:{name} -->", "", sections[name], "", f"<!-- /bench:{name} -->", ""]
    args.output.write_text("\n".join(text).rstrip() + "\n")
    print(f"[bench] wrote {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
