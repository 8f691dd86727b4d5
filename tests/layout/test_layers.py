"""The package tree is the architecture: each subpackage imports only the layers below it.

identity_service: the commands (__main__, bootstrap, probe) > edge (RPC) > changes (Watch
feeds, retention) > domain > storage > the root's shared leaves (settings, errors, context,
schema: the attribute catalogue, which the domain applies and filters compile with).
scim_gateway: the process (__main__, worker) > the HTTP side (app, guard, core, http, access,
tenant, observability, tracing, resources) > scim
(SCIM syntax) > the root's errors, settings.
identity_admin: the process (__main__, worker) > the app and its pages (app) > each
feature's actions, API routes and pages (connector, directory, rules, history,
setup_guide, live) > the API's framework (api) > what every page and route needs
(console), the policy forms' translation (policy_form) > settings.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Rank of each room; a module may import only rooms of a rank not above its own.
LAYERS: dict[str, dict[str, int]] = {
    "identity_service": {
        "__main__": 9,
        "bootstrap": 9,
        "probe": 9,
        "edge": 4,
        "changes": 3,
        "domain": 2,
        "storage": 1,
        "settings": 0,
        "errors": 0,
        "context": 0,
        "schema": 0,
    },
    "scim_gateway": {
        "__main__": 9,
        "worker": 9,
        "app": 3,
        "guard": 3,
        "core": 3,
        "resources": 3,
        "access": 3,
        "tenant": 3,
        "observability": 3,
        "tracing": 3,
        "http": 2,
        "history": 2,
        "scim": 1,
        "errors": 0,
        "settings": 0,
    },
    "identity_admin": {
        "__main__": 9,
        "worker": 9,
        "app": 4,
        "connector": 3,
        "rules": 3,
        "directory": 3,
        "history": 3,
        "live": 3,
        "setup_guide": 3,
        "api": 2,
        "console": 1,
        "policy_form": 1,
        "settings": 0,
    },
}


def _modules(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "versions" not in p.parts)


def _room(top: str, dotted: str) -> str:
    parts = dotted.split(".")
    assert parts[0] == top
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, top: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of `top` in the file."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == top or m.startswith(top + ".")]


@pytest.mark.parametrize("top", sorted(LAYERS))
def test_imports_only_go_down(top: str) -> None:
    ranks = LAYERS[top]
    upward = []
    for path in _modules(top):
        rel = path.relative_to(ROOT).with_suffix("")
        own = rel.parts[1] if len(rel.parts) > 2 else rel.parts[-1]
        if own == "__init__":
            continue
        assert own in ranks, f"{path}: place the module in a room of LAYERS"
        for line, target in _imports(path, top):
            room = _room(top, target)
            if room in ("", "__init__"):
                continue
            assert room in ranks, f"{path}:{line} imports {target}, which is in no room"
            if ranks[room] > ranks[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {target}")
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)


#: Top-level packages each side may not import: the core knows nothing of its clients
#: (the client library, the gateway, the admin console); the gateway and the console
#: reach the core only over gRPC, and neither imports the other.
FORBIDDEN = {
    "identity_service": ("scim_identity_client", "scim_gateway", "identity_admin"),
    "scim_gateway": ("identity_service", "identity_admin"),
    "identity_admin": ("identity_service", "scim_gateway"),
}
#: The first-party packages the admin console may import besides its own: the client,
#: the contract, the shared logging.
ADMIN_MAY_IMPORT = ("scim_identity_client", "scim_identity_api", "identity_log")
FIRST_PARTY = (
    "identity_service",
    "scim_gateway",
    "identity_log",
    "scim_identity_client",
    "scim_identity_api",
    "identity_admin",
)


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_no_import_across_the_boundary(top: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in _modules(top)
        for other in FORBIDDEN[top]
        for line, target in _imports(path, other)
    ]
    assert not found, "\n".join(found)


def test_the_console_imports_only_the_client_the_contract_and_logging() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in _modules("identity_admin")
        for other in FIRST_PARTY
        if other not in ADMIN_MAY_IMPORT and other != "identity_admin"
        for line, target in _imports(path, other)
    ]
    assert not found, "\n".join(found)
    # The rule has something to check: the console does call the core through the client.
    assert any(_imports(p, "scim_identity_client") for p in _modules("identity_admin"))
