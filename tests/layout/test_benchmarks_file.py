"""BENCHMARKS.md keeps its history: `make bench` rewrites the file from its sections, so
every section in it must be one the writer reads back (a hand-kept record under a
marker it did not match was dropped by the next run)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.__main__ import previous_sections

ROOT = Path(__file__).resolve().parents[2]


def test_every_marked_section_of_benchmarks_md_survives_a_rewrite() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    opened = re.findall(r"<!-- bench:([^ ]+) -->", text)
    assert opened, "no sections"
    kept = previous_sections(ROOT / "BENCHMARKS.md")
    assert sorted(kept) == sorted(opened)
    # Nothing but the generated header stands outside the sections.
    outside = re.sub(r"<!-- bench:([^ ]+) -->.*?<!-- /bench:\1 -->", "", text, flags=re.S)
    assert "##" not in outside, outside[:2000]
