"""The import arrows stay one way (DESIGN.md §3): adapters never import proxy, and only
proxy/settings.py reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_adapters_never_import_proxy() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(i for i in _imports(path) if i.split(".")[0] == "proxy")
        for path in _modules("adapters")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_settings_reads_the_environment() -> None:
    readers = []
    for package in ("proxy", "adapters"):
        for path in _modules(package):
            source = path.read_text()
            if "os.environ" in source or "os.getenv" in source:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ["proxy/settings.py"]
