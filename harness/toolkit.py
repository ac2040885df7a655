"""How a toolkit's face (its `__init__`) exports names whose modules import torch: each such
name is loaded on first use, so a plugin can import the face at module level and `harness
list` still loads every plugin without torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_names(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for `package` that imports `where[name]` (a private
    module of the package) on first access to `name`."""
    def load(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return load
