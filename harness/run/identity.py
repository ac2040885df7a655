"""What a cell's fingerprint hashes: the method's and task's code, options and models, the
data, the run settings and the library versions; and the provenance a record keeps beside it
(git commit, hardware)."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from harness.contract import Cell, options_to_dict
from harness.files import file_sha256

IDENTITY_SCHEMA = 2


VERSIONED_LIBRARIES = ("harness", "lm_eval", "transformers", "torch", "peft", "datasets")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cell_identity(cell: Cell, versions: dict[str, str]) -> dict[str, Any]:
    plan = cell.lm_eval_plan
    method_code, task_code = cell.code["method"], cell.code["task"]
    return {
        "schema": IDENTITY_SCHEMA,
        "method": {"name": cell.method, "options": options_to_dict(cell.row.options),
                   "models": [m.identity() for m in cell.row.models],
                   "version": method_code.version, "distribution": method_code.distribution},
        "task": {"name": cell.task, "options": options_to_dict(cell.column.options),
                 "version": task_code.version, "distribution": task_code.distribution},
        "data": {"source": cell.settings.data_source.kind,
                 "files": {f"{p.parent.name}/{p.name}": file_sha256(p) if p.is_file()
                           else "missing" for p in (plan.data_files if plan else [])},
                 "training_data": _training_data_digest(cell.row.options)},
        "lm_eval": None if plan is None else {
            "tasks": [config_identity(t) for t in plan.tasks],
            "yaml": {str(p.relative_to(root)): file_sha256(p) for root in plan.include_path
                     for p in sorted(Path(root).rglob("*.yaml"))},
            "num_fewshot": plan.num_fewshot, "gen_kwargs": plan.gen_kwargs,
            "apply_chat_template": plan.apply_chat_template,
            "confirm_run_unsafe_code": plan.confirm_run_unsafe_code},
        "limit": cell.settings.limit,
        "seed": cell.settings.seed,
        "versions": versions,
    }


def config_identity(value: Any) -> Any:
    """An lm-eval task config as fingerprint material: every prompt template and setting,
    with callables named by qualified name and file paths by file name (their contents are
    hashed separately, so moving a data folder keeps the fingerprint)."""
    if isinstance(value, dict):
        return {str(k): config_identity(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_identity(v) for v in value]
    if isinstance(value, functools.partial):
        return {"callable": config_identity(value.func),
                "args": config_identity(value.args), "keywords": config_identity(value.keywords)}
    if isinstance(value, Path):
        return value.name
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def _training_data_digest(options: Any) -> str | None:
    """A user-named training set enters the fingerprint by content, not by path."""
    path = getattr(options, "training_data", "")
    return file_sha256(Path(path)) if path and Path(path).is_file() else None


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "device": device}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The harness source commit, with '-dirty' when the tree has local changes; None
    outside a git checkout (an installed harness)."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"],
                               check=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")
