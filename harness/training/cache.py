"""The fit cache: a finished fit's trainable parameters and report, stored under the
build context's cache root by a fingerprint of everything that determines them (method,
its version and distribution, options, base models, data, seed, device, libraries)."""

from __future__ import annotations

import importlib.metadata as md
import json
import pickle
from pathlib import Path
from typing import Any

from harness.content_cache import ContentCache, content_key
from harness.contract import BuildContext, options_to_dict
from harness.models.loading import model_identity
from harness.training.options import NON_RESULT_OPTIONS, TrainingOptions

FIT_SCHEMA = 2
ADAPTER, RECORD, CHECKPOINT = "adapter.pt", "fit.json", "checkpoint.pt"


def fit_fingerprint(ctx: BuildContext, method: str, options: TrainingOptions, data_hash: str,
                    device: str) -> str:
    return content_key({
        "schema": FIT_SCHEMA,
        "method": method,
        "code": dict(ctx.method_code),
        "options": {k: v for k, v in options_to_dict(options).items()
                    if k not in NON_RESULT_OPTIONS},
        "models": [model_identity(m) for m in ctx.models],
        "data": data_hash,
        "seed": ctx.seed,
        "device": device,
        "versions": {name: _version(name) for name in ("torch", "transformers", "peft")},
    })


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


def fit_cache(ctx: BuildContext) -> ContentCache:
    """Finished fits, one folder each (`<method>-<key>`: the trainable parameters in
    `adapter.pt`, the report in `fit.json`); an unfinished one keeps its resumable
    checkpoint in the entry's scratch folder."""
    return ContentCache(Path(ctx.cache_root) / "fits", folder=True, key_chars=24,
                        damage=(ValueError, RuntimeError, EOFError, pickle.UnpicklingError))


def read_record(folder: Path) -> dict[str, Any]:
    record = json.loads((folder / RECORD).read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{folder / RECORD}: not a fit record")
    return record


def read_fit(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable parameters, report) of a finished fit."""
    import torch

    record = read_record(folder)
    return torch.load(folder / ADAPTER, map_location="cpu", weights_only=True), record


def write_record(folder: Path, report: dict[str, Any]) -> None:
    (folder / RECORD).write_text(json.dumps(report, indent=2, sort_keys=True))
