"""The host's layout keeps its promises: no import circle among its modules (imports under
TYPE_CHECKING and inside functions included), the contract and the results modules import
in any order, the contract imports no host module, and no host module grows past 400
lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from support import REPO

HARNESS = REPO / "harness"
TOOLKITS = ("harness.fusion", "harness.fuse", "harness.training", "harness.zoo")
MOST_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in HARNESS.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from package import module` depends on that module, not on the package
                targets.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                               in modules else node.module for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert _circles(_graph()) == []


# Imports each named module with no harness module loaded yet, as a script or a test file
# that starts with it does: prints each one that fails.
IMPORT_FIRST = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "harness" or m.startswith("harness.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
"""


def test_contract_and_results_modules_import_first() -> None:
    """The contract's types refer to results' and results' records to the contract's reports:
    whichever a program imports first, the import works (a package's __init__ runs before
    its module, so a circle through the packages fails only in some orders)."""
    names = sorted(m for m in _graph() if m.startswith(("harness.contract", "harness.results")))
    failed = subprocess.run([sys.executable, "-c", IMPORT_FIRST, *names], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert failed == ""


def test_the_contract_depends_on_no_host_module() -> None:
    graph = _graph()
    host_parts = ("harness.run", "harness.report", "harness.cli", "harness.host",
                  "harness.hookspecs", "harness.api")
    contract = [m for m in graph if m.startswith("harness.contract")]
    leaks = sorted(f"{m} -> {t}" for m in contract for t in graph[m] if t.startswith(host_parts))
    assert leaks == []


def test_no_host_module_over_400_lines() -> None:
    long = sorted(f"{_module_name(p)}: {n}" for p in HARNESS.rglob("*.py")
                  if not _module_name(p).startswith(TOOLKITS)
                  and (n := len(p.read_text().splitlines())) > MOST_LINES)
    assert long == []
