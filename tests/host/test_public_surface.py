"""Plugins stand on the public surface: built-in methods and tasks import `harness.api`, the
host's public toolkits, their own package, and nothing else of the host."""

from __future__ import annotations

import ast
from pathlib import Path

import harness.api
from support import REPO

TOOLKITS = ("harness.api", "harness.fusion", "harness.fuse", "harness.isolation.sandbox", "harness.judge")


def _host_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n == "harness" or n.startswith("harness.")]


def test_plugins_import_only_the_public_surface() -> None:
    offenders = []
    for folder in ("plugins", "tasks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            package = path.relative_to(REPO / folder).parts[0]
            own = f"harness.{folder}.{package}"
            for name in _host_imports(path):
                if not (name.startswith(TOOLKITS) or name.startswith(own)):
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


def test_the_public_surface_stays_light_and_complete() -> None:
    missing = [name for name in harness.api.__all__ if not hasattr(harness.api, name)]
    assert missing == []
