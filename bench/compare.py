"""Side-by-side tables of two sets of `python -m bench --only gateway` runs: before and after
a change, each run possibly repeated and interleaved (before, after, before, after, ...) so
that a shared machine's drift hits both sides alike.

    python -m bench.compare --before b1.md b2.md --after a1.md a2.md

Reads the per-size throughput tables each run writes ("#### SQLite: 2,000 users ...") and
prints, per backend and size, each operation's req/s and its share of the same run's
baseline B (`/ B`), as the mean over the runs of each side, and after / before of both.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path

#: "#### SQLite: 2,000 users (seeded in 1 s)" -> ("SQLite", "2,000 users")
_SECTION = re.compile(r"^#### (SQLite|PostgreSQL): ([\d,]+ users) \(")

#: (req/s, / B, CPU ms per request of the gateway, of the core, of postgres); CPU per
#: request is what a shared machine disturbs least (it does not count time spent waiting).
Row = tuple[float, float, float, float, float]
Figures = dict[tuple[str, str], dict[str, Row]]


def read(path: Path) -> Figures:
    """{(backend, size): {operation: Row}} from one run's output."""
    out: Figures = defaultdict(dict)
    section: tuple[str, str] | None = None
    in_table = False  # in the section's throughput table ("| operation | req/s | ...")
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            section, in_table = (m.group(1), m.group(2)), False
            continue
        if line.startswith("#"):
            section = None
        if i + 1 < len(lines) and lines[i + 1].startswith("|---"):  # a table's header
            in_table = line.startswith("| operation | req/s |")
            continue
        if section is None or not in_table or not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 11 or not cells[1].replace(",", "").isdigit() or not cells[8]:
            continue
        rate, share, gateway, core, pg = cells[1], cells[5], cells[8], cells[9], cells[10]
        out[section][cells[0]] = (
            float(rate.replace(",", "")),
            float(share),
            float(gateway),
            float(core),
            float(pg),
        )
    return dict(out)


def _mean(runs: list[Figures], section: tuple[str, str], op: str, i: int) -> float | None:
    values = [r[section][op][i] for r in runs if op in r.get(section, {})]
    return statistics.fmean(values) if values else None


def table(before: list[Figures], after: list[Figures]) -> str:
    lines: list[str] = []
    sections = [s for s in before[0] if all(s in r for r in before + after)]
    for section in sections:
        lines += [
            f"#### {section[0]}, {section[1]}",
            "",
            "| operation | before req/s | before / B | after req/s | after / B "
            "| after / before (of / B) | CPU ms/req before: gateway + core + postgres "
            "| after | after / before (CPU) |",
            "|---|---:|---:|---:|---:|---:|---|---|---:|",
        ]
        for op in before[0][section]:
            b = [_mean(before, section, op, i) for i in range(5)]
            a = [_mean(after, section, op, i) for i in range(5)]
            if any(v is None for v in b + a):
                continue
            bf = [v or 0.0 for v in b]
            af = [v or 0.0 for v in a]
            b_cpu, a_cpu = sum(bf[2:]), sum(af[2:])
            lines.append(
                f"| {op} | {bf[0]:,.0f} | {bf[1]:.2f} | {af[0]:,.0f} | {af[1]:.2f} "
                f"| {af[1] / bf[1]:.2f} "
                f"| {bf[2]:.2f} + {bf[3]:.2f} + {bf[4]:.2f} = {b_cpu:.2f} "
                f"| {af[2]:.2f} + {af[3]:.2f} + {af[4]:.2f} = {a_cpu:.2f} "
                f"| {a_cpu / b_cpu:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    args = parser.parse_args(argv)
    print(table([read(p) for p in args.before], [read(p) for p in args.after]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
