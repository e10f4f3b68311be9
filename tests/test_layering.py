"""The package layout stays layered: no import cycle between subpackages, no API → worker import.

Read from the source with ``ast`` (every import, lazy ones inside functions included), so a new
cycle fails here rather than at some later import order.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tradebot"
WORKER_MODULES = ("service", "alpaca_service", "polygon_service", "timeseries_service", "history_service")
# Nothing below these may import a worker package: they are what the workers are built from.
FOUNDATIONS = {"common", "providers", "universe"}
WORKER_PACKAGES = {"market_data", "strategy", "execution", "storage", "backfill", "api", "bench"}


def imports_of(path: Path) -> set[str]:
    """Every ``tradebot.*`` module a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("tradebot.")}


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None


def package_graph() -> dict[str, set[str]]:
    """Subpackage → the other subpackages its modules import."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).parts
        if len(relative) < 2:
            continue  # top-level modules (cli, supervisor, roles) sit above every package
        for module in imports_of(path):
            target = subpackage(module)
            if target and target != relative[0] and (PACKAGE / target).is_dir():
                graph[relative[0]].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle reachable in ``graph``, as the path that closes it."""
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif len(path) < len(graph) + 1:
                visit(target, [*path, target])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_import_cycle_between_subpackages() -> None:
    assert cycles(package_graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}})[0] == ["a", "b", "a"]


def test_foundations_import_no_worker_package() -> None:
    graph = package_graph()
    assert {name: graph[name] & WORKER_PACKAGES for name in FOUNDATIONS if graph[name] & WORKER_PACKAGES} == {}


def test_the_api_imports_no_worker_module() -> None:
    offending = [
        (path.name, module)
        for path in (PACKAGE / "api").rglob("*.py")
        for module in imports_of(path)
        if module.rsplit(".", 1)[-1] in WORKER_MODULES and not module.startswith("tradebot.api.")
    ]
    assert offending == []
