"""Imports point one way: server → app → transport → schema → (loaders, realtime) → db."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each package may import of ours.
ALLOWED = {
    "db": {"db"},
    "loaders": {"loaders", "db"},
    "realtime": {"realtime", "db"},
    "schema": {"schema", "loaders", "realtime", "db"},
    "transport": {"transport", "schema", "loaders", "realtime", "db"},
    "ops": {"ops", "db"},
    "explorer": {"explorer"},
    "app": {"app", "transport", "schema", "loaders", "realtime", "db", "ops", "explorer"},
}
OURS = {"db", "loaders", "realtime", "schema", "transport", "ops", "explorer", "app", "server"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_no_package_imports_against_the_direction_of_the_layers() -> None:
    backward = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported in _imports(path) - allowed:
                backward.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert backward == []


def test_nothing_imports_the_server_module() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for package in ALLOWED
        for path in (ROOT / package).rglob("*.py")
        if "server" in _imports(path)
    ]
    assert importers == []


def test_nothing_below_the_app_package_imports_it() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for package in ALLOWED.keys() - {"app"}
        for path in sorted((ROOT / package).rglob("*.py"))
        if "app" in _imports(path)
    ]
    assert importers == []


def test_the_entry_point_imports_the_app_package_alone() -> None:
    assert _imports(ROOT / "server.py") == {"app"}
