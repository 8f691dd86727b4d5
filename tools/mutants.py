"""`make mutants`: mutation testing of the code where a silent bug costs most.

mutmut (pinned in pyproject's `mutants` extra) changes one thing at a time in
the functions named in TARGETS (a comparison flipped, a constant changed, a
statement dropped) and runs the tests that guard them; a mutant the tests do not
notice "survives". Each survivor is either killed by a new test or written down
as equivalent (the change cannot alter behaviour) in tools/mutants_equivalent.toml
with its reason. The run rewrites docs/mutants.md (score, per target, survivors
with their reasons) and fails while a survivor has no reason.

The run works on a copy of the work tree (mutmut edits files in place; a run
cut short must never leave a mutant in the developer's tree) and imports the
copy first (PYTHONPATH), also in the processes the tests start. Only the named
functions are mutated (a patch file marks their lines), so that the whole run
fits in 30 minutes on a 2-core machine. Not part of `make test`.

    python tools/mutants.py            # all targets, then the report
    python tools/mutants.py events     # targets whose name contains "events"
    python tools/mutants.py --survivors events   # re-test the last run's survivors
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutants"
TREE = WORK / "tree"
EQUIVALENT = ROOT / "tools" / "mutants_equivalent.toml"
REPORT = ROOT / "docs" / "mutants.md"


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    #: Functions (qualified names: "Class.method") whose lines are mutated.
    functions: tuple[str, ...]
    #: The tests that guard them (pytest node ids or files), run for each mutant.
    tests: tuple[str, ...]
    #: mutmut mutation types left out: "string" turns literals into "XX...XX", which
    #: in these functions is mostly log text and dictionary keys a test would only
    #: catch by repeating them; kept where the strings are the code (migrations).
    disable: tuple[str, ...] = ("string", "fstring")


TARGETS: tuple[Target, ...] = (
    Target(
        "events: the event log",
        "identity_service/storage/events.py",
        ("emit",),
        ("tests/core/test_events.py",),
    ),
    Target(
        "tokens: bearer checks",
        "identity_service/domain/tenants.py",
        ("check_bearer",),
        ("tests/core/test_tenants_tokens.py",),
    ),
    Target(
        "scopes: which credential may call which method",
        "identity_service/edge/auth.py",
        ("Credential.allows",),
        ("tests/security/test_core_transport.py",),
    ),
    Target(
        "uniqueness: userName and identity conflicts",
        "identity_service/domain/users.py",
        ("_find_identity", "_refuse_taken_name"),
        # _find_identity is JIT provisioning's match (userName or email, by policy).
        ("tests/core/test_users.py", "tests/policy/test_policy_core.py"),
    ),
    Target(
        "migrations: 0004 counts backfill",
        "identity_service/storage/migrations/versions/0004_paging_indexes.py",
        ("upgrade",),
        ("tests/deploy/test_upgrade.py",),
        disable=(),
    ),
    Target(
        "patch: PATCH application",
        "identity_service/domain/patching.py",
        ("DocumentPatcher._apply_attr", "DocumentPatcher._apply_filtered", "_one_primary"),
        # The property test is the oracle; the gateway suites add Okta's and Entra's shapes.
        (
            "tests/core/test_patch_property.py",
            "tests/gateway/test_patch.py",
            "tests/gateway/test_patch_fidelity.py",
        ),
    ),
    Target(
        "streams: event filters",
        "identity_service/changes/streams.py",
        ("_Filter.matches",),
        ("tests/streams/test_watch.py",),
    ),
)

#: Each mutant runs its target's tests on SQLite only (PostgreSQL doubles the time;
#: the mutated functions are the same code on both), stopping at the first failure.
SELECT = "not postgresql"


def _function_lines(source: str, names: tuple[str, ...]) -> set[int]:
    """Line numbers (1-based) of the bodies of the named functions."""
    found: dict[str, tuple[int, int]] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = prefix + child.name
                first = child.body[0]
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and len(child.body) > 1
                ):
                    first = child.body[1]  # the docstring is not code
                found[qual] = (first.lineno, child.end_lineno or first.lineno)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(ast.parse(source), "")
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"mutants: no function {missing} (TARGETS in tools/mutants.py is stale)")
    lines: set[int] = set()
    for n in names:
        start, end = found[n]
        lines.update(range(start, end + 1))
    return lines


def _patch(path: str, lines: set[int], source: str) -> str:
    """A unified diff that presents `lines` of `path` as added (mutmut's
    --use-patch-file mutates only added lines)."""
    text = source.splitlines()
    out = [f"--- a/{path}", f"+++ b/{path}"]
    run: list[int] = []
    for n in [*sorted(lines), 0]:
        if run and n != run[-1] + 1:
            out.append(f"@@ -0,0 +{run[0]},{len(run)} @@")
            out.extend("+" + text[i - 1] for i in run)
            run = []
        if n:
            run.append(n)
    return "\n".join(out) + "\n"


def _copy_tree(tree: Path = TREE) -> None:
    if tree.exists():
        shutil.rmtree(tree)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            dst = tree / f.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _env(tree: Path = TREE) -> dict[str, str]:
    env = dict(os.environ)
    # The copy before the editable install, in this process and the ones tests start.
    env["PYTHONPATH"] = os.pathsep.join(str(tree / p) for p in ("", "clients", "protos"))
    return env


def _runner(t: Target, *, quote: bool = False) -> list[str]:
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider"]
    return [*pytest, "-k", f"'{SELECT}'" if quote else SELECT, *t.tests]


def _recheck(t: Target, path: Path) -> None:
    """Runs the target's tests (as they are now) against each mutant that survived
    its last run: after a test was added for it, a full run is not needed to see
    that it is killed. The mutant is re-applied from the recorded diff."""
    tree = WORK / "recheck"
    _copy_tree(tree)
    doc = json.loads(path.read_text())
    source = tree / t.path
    original = source.read_text()
    for r in doc["results"]:
        if r["status"] != "bad_survived":
            continue
        diff = str(r["diff"]).splitlines()
        before = [ln[1:] for ln in diff if ln.startswith("-") and not ln.startswith("---")]
        after = [ln[1:] for ln in diff if ln.startswith("+") and not ln.startswith("+++")]
        lines = original.splitlines()
        at = int(r["line"]) - 1
        if len(before) != 1 or len(after) != 1 or lines[at] != before[0]:
            print(f"mutants: cannot re-apply {t.path}:{r['line']}; run the target again")
            continue
        lines[at] = after[0]
        source.write_text("\n".join(lines) + "\n")
        try:
            rc = subprocess.run(
                _runner(t), cwd=tree, env=_env(tree), capture_output=True, check=False
            ).returncode
        finally:
            source.write_text(original)
        if rc != 0:
            r["status"] = "ok_killed"
            r["rechecked"] = True
        print(f"mutants: {t.path}:{r['line']} {'killed' if rc else 'survives'}", flush=True)
    path.write_text(json.dumps(doc))


def _run_target(t: Target) -> None:
    source = (TREE / t.path).read_text()
    patch = WORK / (re.sub(r"\W+", "_", t.path) + ".patch")
    patch.write_text(_patch(t.path, _function_lines(source, t.functions), source))
    runner = " ".join(_runner(t, quote=True))
    started = time.monotonic()
    print(f"mutants: {t.name} ({t.path})", flush=True)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "mutmut"),
            "run",
            "--paths-to-mutate",
            t.path,
            "--use-patch-file",
            str(patch),
            "--runner",
            runner,
            "--no-progress",
            "--simple-output",
            *(["--disable-mutation-types", ",".join(t.disable)] if t.disable else []),
            # A shared machine is noisy: only a run 60 s slower than the baseline
            # counts as a mutant that hangs.
            "--test-time-base",
            "60",
        ],
        cwd=TREE,
        env=_env(),
        check=False,  # mutmut's exit code says "some survived"; the report judges
    )
    print(f"mutants: {t.name}: {time.monotonic() - started:.0f} s", flush=True)


_READ_CACHE = """
import json, sys
from mutmut.cache import Mutant, init_db, get_unified_diff
from pony.orm import db_session
@init_db
@db_session
def main():
    out = []
    for m in Mutant.select():
        diff = get_unified_diff(m.id, [], update_cache=False) if m.status != "ok_killed" else ""
        out.append({"file": m.line.sourcefile.filename, "line": m.line.line_number + 1,
                    "status": m.status, "diff": diff})
    json.dump(out, sys.stdout)
main()
"""


def _results() -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-c", _READ_CACHE],
        cwd=TREE,
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return list(json.loads(out))


def _change(diff: str) -> tuple[str, str]:
    """(before, after) of the mutated line, stripped: how equivalents are keyed
    (line numbers move; the text of the line and its mutant do not)."""
    before = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and ln[1:2] != "-"]
    after = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and ln[1:2] != "+"]
    return " / ".join(before), " / ".join(after)


def _report(
    chosen: list[Target], results: list[dict[str, object]], seconds: float, loads: list[float]
) -> int:
    equivalent = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", [])
    reasons = {(e["file"], e["before"], e["after"]): e["reason"] for e in equivalent}
    lines = [
        "# Mutation testing (`make mutants`)",
        "",
        "Generated by `tools/mutants.py` (mutmut, pinned in pyproject's `mutants` extra); do not",
        "edit by hand: equivalent mutants and their reasons live in",
        "`tools/mutants_equivalent.toml`. A mutant is one small change to the code (a comparison",
        "flipped, a constant changed, an argument dropped); the guarding tests must fail on it.",
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the targets took "
        f"{seconds / 60:.1f} min in all on a {os.cpu_count()}-core machine, "
        + (
            f"load average {min(loads):.1f}-{max(loads):.1f} as they ended"
            if loads
            else "shared (load not recorded)"
        )
        + " (mutmut runs each",
        "mutant's tests on SQLite only, stopping at the first failure).",
        "",
        "| target | functions | mutants | killed | equivalent | timed out | unexplained |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    unexplained: list[str] = []
    survivors_md: list[str] = []
    rechecked: list[str] = []
    total = killed_all = equivalent_all = 0
    for t in chosen:
        mine = [r for r in results if r["file"] == t.path]
        killed = sum(r["status"] in ("ok_killed", "ok_suspicious") for r in mine)
        timeout = sum(r["status"] == "bad_timeout" for r in mine)
        equiv = 0
        bad = 0
        for r in mine:
            if r.get("rechecked"):
                rechecked.append(
                    f"- `{t.path}` line {r['line']}: `{' / '.join(_change(str(r['diff'])))}`"
                )
            if r["status"] not in ("bad_survived", "untested", "skipped"):
                continue
            before, after = _change(str(r["diff"]))
            reason = reasons.get((t.path, before, after))
            if reason:
                equiv += 1
            else:
                bad += 1
                unexplained.append(f"{t.path}:{r['line']}: {before!r} -> {after!r}")
            survivors_md += [
                f"- `{t.path}` line {r['line']}: `{before}` → `{after}`",
                f"  - {reason or '**UNEXPLAINED: needs a test or a reason**'}",
            ]
        total += len(mine)
        killed_all += killed + timeout  # a mutant that hangs the tests is noticed
        equivalent_all += equiv
        lines.append(
            f"| {t.name} | {', '.join(t.functions)} | {len(mine)} | {killed} | {equiv} "
            f"| {timeout} | {bad} |"
        )
    missing = [t.name for t in TARGETS if t not in chosen]
    if missing:
        lines += [
            "",
            "Targets without results yet (run `make mutants`): " + "; ".join(missing) + ".",
        ]
    score = 100.0 * killed_all / max(1, total - equivalent_all)
    lines += [
        "",
        f"**Score: {killed_all} of {total - equivalent_all} non-equivalent mutants killed "
        f"({score:.1f}%); {equivalent_all} equivalent.**",
        "",
        "## Surviving mutants",
        "",
        *(survivors_md or ["None."]),
        "",
        "## Survivors of the run killed since by a new test",
        "",
        "Re-tested with `tools/mutants.py --survivors` (the recorded mutant re-applied, the",
        "target's tests as they are now); `before / after`:",
        "",
        *(rechecked or ["None."]),
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"mutants: score {score:.1f}% ({killed_all}/{total - equivalent_all}), report {REPORT}")
    for u in unexplained:
        print(f"mutants: survived, unexplained: {u}")
    return 1 if unexplained else 0


def _slug(t: Target) -> str:
    return re.sub(r"\W+", "_", t.name.split(":")[0])


def main(argv: list[str]) -> int:
    """Runs the chosen targets (all by default) and reports on every target that
    has results: a later run of one target keeps the others' last results."""
    recheck = "--survivors" in argv
    argv = [a for a in argv if a != "--survivors"]
    chosen = [t for t in TARGETS if not argv or any(a in t.name for a in argv)]
    results_dir = WORK / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    if recheck:
        for t in chosen:
            if (results_dir / f"{_slug(t)}.json").exists():
                _recheck(t, results_dir / f"{_slug(t)}.json")
        chosen = []
    else:
        _copy_tree()
    for t in chosen:
        started = time.monotonic()
        _run_target(t)
        mine = [r for r in _results() if r["file"] == t.path]
        doc = {
            "seconds": time.monotonic() - started,
            "load": os.getloadavg()[0],
            "results": mine,
        }
        (results_dir / f"{_slug(t)}.json").write_text(json.dumps(doc))
    reported: list[Target] = []
    results: list[dict[str, object]] = []
    seconds = 0.0
    loads: list[float] = []
    for t in TARGETS:
        path = results_dir / f"{_slug(t)}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            reported.append(t)
            results += doc["results"]
            seconds += doc["seconds"]
            if "load" in doc:
                loads.append(doc["load"])
    return _report(reported, results, seconds, loads)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
