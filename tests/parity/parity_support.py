"""Importing the official code of a method from an untracked checkout named by an
environment variable (never committed here), with stand-ins for the few dependencies of
its era that current environments lack; and the fixtures that keep what that code
computed (numbers only: `regenerate_fixtures.py` writes them from checkouts), so CI
compares with it without one."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest


def official_checkout(variable: str, repository: str, marker: str) -> Path:
    """The checkout `$variable` points at, or skip the calling module saying how to run it."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set; point it at a checkout of {repository} to compare "
                    "with the official code", allow_module_level=True)
    path = Path(value).expanduser()
    if not (path / marker).is_file():
        pytest.skip(f"{variable}={value} has no {marker}; expected a checkout of {repository}",
                    allow_module_level=True)
    return path


def import_official(folder: Path, names: list[str],
                    stand_ins: dict[str, dict[str, Any]] | None = None) -> list[types.ModuleType]:
    """Import the modules `names` from `folder`. A module of `stand_ins` that is not
    installed is replaced, for the duration of the import, by a stub with those attributes
    (e.g. an unused accelerator class); the official modules keep what they bound, and
    their helper modules leave `sys.modules` again so generic names (`utils`) cannot clash."""
    added = []
    for name, attributes in (stand_ins or {}).items():
        if name in sys.modules or _installed(name):
            continue
        stub = types.ModuleType(name)
        stub.__dict__.update(attributes)
        sys.modules[name] = stub
        added.append(name)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(folder))
        for name in added:
            sys.modules.pop(name, None)
        for name in set(sys.modules) - before - set(names):  # e.g. their generic `utils`
            if str(getattr(sys.modules[name], "__file__", "")).startswith(str(folder)):
                sys.modules.pop(name)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


FIXTURES = Path(__file__).parent / "fixtures"


def save_fixture(name: str, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """`fixtures/<name>.safetensors`: named tensors plus JSON metadata (no pickles)."""
    from safetensors.torch import save_file

    FIXTURES.mkdir(exist_ok=True)
    path = FIXTURES / f"{name}.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"json": json.dumps(meta, sort_keys=True, ensure_ascii=False)})
    return path


def load_fixture(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = json.loads(handle.metadata()["json"])
    return tensors, meta


def seeded_(model: Any, seed: int, scale: float) -> Any:
    """Every parameter uniform in [-scale, scale), drawn in parameter-name order from one
    generator: the same numbers on every machine and transformers version (unlike a
    library's initialisation order or a vectorised normal sampler)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_((torch.rand(parameter.shape, generator=generator,
                                        dtype=torch.float64) * 2 - 1) * scale)
    return model
