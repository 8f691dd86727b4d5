"""No state in modules: what the services remember between requests belongs to an object
the Database or the app owns (storage.memo.Memo, the app's Recorder). A module-level
mutable container is allowed only as a constant: named like one and never changed."""

from __future__ import annotations

import ast
import collections
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("identity_service", "scim_gateway", "identity_log", "identity_admin")
MUTABLE = (dict, list, set, bytearray, collections.deque)
CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
#: Methods that change a container in place.
MUTATORS = frozenset(
    {
        "append",
        "appendleft",
        "clear",
        "discard",
        "extend",
        "extendleft",
        "insert",
        "pop",
        "popitem",
        "popleft",
        "remove",
        "reverse",
        "setdefault",
        "sort",
        "update",
        "add",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)


def _modules() -> list[ModuleType]:
    out = []
    for top in PACKAGES:
        pkg = importlib.import_module(top)
        out.append(pkg)
        for info in pkgutil.walk_packages(pkg.__path__, f"{top}."):
            if ".migrations" in info.name or info.name.endswith(".__main__"):
                continue  # Alembic scripts run only under Alembic; entrypoints hold no state
            out.append(importlib.import_module(info.name))
    return out


def _changed_names(tree: ast.AST) -> set[str]:
    """Names whose container the code changes: `X[k] = v`, `del X[k]`, `X |= ...`,
    `X.append(...)` and the like (also as `module.X...`)."""

    def name_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        return None

    changed: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
            if isinstance(node, ast.AugAssign) and (n := name_of(node.target)):
                changed.add(n)
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, ast.Subscript) and (n := name_of(t.value)):
                changed.add(n)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
            and (n := name_of(node.func.value))
        ):
            changed.add(n)
    return changed


def test_no_module_level_mutable_state() -> None:
    changed: set[str] = set()
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            changed |= _changed_names(ast.parse(path.read_text(), str(path)))
    found = []
    for mod in _modules():
        for name, value in vars(mod).items():
            if name.startswith("__") or not isinstance(value, MUTABLE):
                continue
            if not CONSTANT_NAME.match(name):
                found.append(f"{mod.__name__}.{name}: a mutable {type(value).__name__}")
            elif name in changed:
                found.append(f"{mod.__name__}.{name}: a {type(value).__name__} changed in place")
    assert not found, "module-level state (move it into an object):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("_CACHE[key] = 1", "_CACHE"),
        ("_SEEN.add(x)", "_SEEN"),
        ("del mod._BY_ID[k]", "_BY_ID"),
        ("_ALL |= {1}", "_ALL"),
    ],
)
def test_the_walk_sees_changes(source: str, name: str) -> None:
    assert name in _changed_names(ast.parse(source))
