"""The import arrows stay one way (DESIGN.md §3, README "Architecture"): adapters never
import proxy; inside proxy every package sits on a floor and imports only its own floor
or lower ones; only proxy/settings.py reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# proxy, from the bottom up. A unit may import itself and any unit on a lower floor;
# units on one floor may import each other only where ``SIDEWAYS`` says so.
PROXY_FLOORS: list[tuple[str, ...]] = [
    ("proxy.durations", "proxy.errors"),  # vocabulary every layer speaks
    ("proxy.settings",),  # the validated config
    ("proxy.store",),  # every SQL statement, and the values it stores
    ("proxy.context", "proxy.auth"),  # what a running proxy holds; who is calling
    ("proxy.costs",),  # prices, estimates, reports
    ("proxy.lanes",),  # the planner (pure) and the real-time call
    ("proxy.deferral",),  # the queue's life
    ("proxy.ops",),  # routing log, metrics, alerts, admin queries, the ops page
    ("proxy.api",),  # the HTTP surface
    ("proxy.app",),  # wiring
    # ``costroute simulate``: builds the real app (proxy.app) in front of the emulators
    # and steps its scheduler on a virtual clock; only the commands use it.
    ("proxy.simulate",),
    ("proxy.cli", "proxy.__main__"),  # commands
]
PROXY_SIDEWAYS = {("proxy.auth", "proxy.context"), ("proxy.__main__", "proxy.cli")}

# adapters: shared modules, then one package per provider, then what builds them all.
# Emulators are their own tree: they may use the shared modules, never a provider's
# adapter (they must not agree with it by sharing its code), and nothing imports them.
ADAPTER_FLOORS: list[tuple[str, ...]] = [
    ("adapters.errors", "adapters.clock"),
    ("adapters.http",),  # pooled HTTP to a provider
    ("adapters.wire", "adapters.base", "adapters.responses_bridge"),
    ("adapters.parts",),  # what a provider is built from and into
    ("adapters.openai", "adapters.gemini", "adapters.anthropic"),
    ("adapters.deepseek",),  # OpenAI's wire format with DeepSeek's differences
    ("adapters.registry",),
    ("adapters.upkeep",),
    ("adapters.emulators",),
]
ADAPTER_SIDEWAYS: set[tuple[str, str]] = set()
EMULATORS_MAY_USE = {"adapters.clock", "adapters.emulators"}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from proxy.cli import bench`` imports proxy.cli.bench
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _unit(module: str, floors: list[tuple[str, ...]]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for floor, units in enumerate(floors):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (
                best is None or len(unit) > len(best[1])
            ):
                best = (floor, unit)
    return best


def _wrong_arrows(
    package: str, floors: list[tuple[str, ...]], sideways: set[tuple[str, str]]
) -> list[str]:
    wrong = []
    for path in _modules(package):
        me = _name(path)
        if me == package:  # the package's own docstring
            continue
        mine = _unit(me, floors)
        assert mine is not None, f"{me} is on no floor: add it to the floors in this test"
        for imported in sorted(_imports(path)):
            theirs = _unit(imported, floors)
            if theirs is None or theirs[1] == mine[1]:
                continue
            if theirs[0] < mine[0] or (mine[1], theirs[1]) in sideways:
                continue
            where = "a floor above" if theirs[0] > mine[0] else "the same floor"
            wrong.append(f"{me} ({mine[1]}) imports {imported} ({theirs[1]}, {where})")
    return wrong


def test_every_proxy_import_points_down() -> None:
    assert _wrong_arrows("proxy", PROXY_FLOORS, PROXY_SIDEWAYS) == []


def test_every_adapters_import_points_down() -> None:
    assert _wrong_arrows("adapters", ADAPTER_FLOORS, ADAPTER_SIDEWAYS) == []


def test_adapters_never_import_proxy() -> None:
    offenders = {
        _name(path): sorted(i for i in _imports(path) if i.split(".")[0] == "proxy")
        for path in _modules("adapters")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_emulators_share_no_code_with_the_adapters_they_stand_in_for() -> None:
    offenders = {}
    for path in _modules("adapters/emulators"):
        used = {
            i
            for i in _imports(path)
            if i.split(".")[0] == "adapters"
            and not any(i == ok or i.startswith(ok + ".") for ok in EMULATORS_MAY_USE)
        }
        if used:
            offenders[_name(path)] = sorted(used)
    assert offenders == {}


def test_the_floors_catch_a_wrong_arrow(tmp_path: Path) -> None:
    """The check itself can fail: a store module importing the ops package is named."""
    floor, unit = _unit("proxy.store.tickets", PROXY_FLOORS) or (None, None)
    above = _unit("proxy.ops.routelog", PROXY_FLOORS)
    assert unit == "proxy.store"
    assert above is not None
    assert above[0] > (floor or 0)


def test_only_settings_reads_the_environment() -> None:
    readers = []
    for package in ("proxy", "adapters"):
        for path in _modules(package):
            source = path.read_text()
            if "os.environ" in source or "os.getenv" in source:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ["proxy/settings.py"]
