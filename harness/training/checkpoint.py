"""A fit's trainable parameters on disk: a resumable checkpoint replaced at once, and the
parameters loaded back into a model (torch only, so the zoo's training can use it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Replace a resumable checkpoint at once (a crash keeps the previous one)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, staging)
    os.replace(staging, path)


def load_into(parameters: dict[str, Any], state: dict[str, Any], source: Path) -> None:
    import torch

    if set(state) != set(parameters):
        missing, extra = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
        raise HarnessError(f"{source}: trainable parameters do not match "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device, parameter.dtype))
