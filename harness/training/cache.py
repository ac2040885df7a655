"""The fit cache: a finished fit's trainable parameters and report, stored under the
build context's cache root by a fingerprint of everything that determines them (method,
its version and distribution, options, base models, data, seed, device, libraries)."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import BuildContext, options_to_dict
from harness.errors import HarnessError
from harness.training.options import NON_RESULT_OPTIONS, TrainingOptions

FIT_SCHEMA = 2


def fit_fingerprint(ctx: BuildContext, method: str, options: TrainingOptions, data_hash: str,
                    device: str) -> str:
    identity = {
        "schema": FIT_SCHEMA,
        "method": method,
        "code": dict(ctx.method_code),
        "options": {k: v for k, v in options_to_dict(options).items()
                    if k not in NON_RESULT_OPTIONS},
        "models": [m.identity() for m in ctx.models],
        "data": data_hash,
        "seed": ctx.seed,
        "device": device,
        "versions": {name: _version(name) for name in ("torch", "transformers", "peft")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


def fit_folder(ctx: BuildContext, method: str, key: str) -> "FitFolder":
    return FitFolder(Path(ctx.cache_root) / "fits" / f"{method}-{key[:24]}")


@dataclass(frozen=True)
class FitFolder:
    """Where one fingerprint's adapter, its record and its in-progress checkpoint live."""

    path: Path

    @property
    def adapter(self) -> Path:
        return self.path / "adapter.pt"

    @property
    def record(self) -> Path:
        return self.path / "fit.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def finished(self) -> bool:
        return self.adapter.is_file() and self.record.is_file()


def atomic_torch_save(obj: Any, path: Path) -> None:
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
