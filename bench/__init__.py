"""Benchmarks: `python -m bench [--quick] [--only NAME ...] [--backend ...]` (`make bench`).

Each module exposes `run(...) -> str`, a Markdown section; `bench.__main__` writes them
to BENCHMARKS.md with the machine and the date. Speed targets live here, never in
timed unit tests.
"""
