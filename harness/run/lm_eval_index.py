"""lm-eval's task index, built once and kept on disk.

`TaskManager` scans every YAML file of lm-eval's task folders (about 14,700) at
construction: seconds of start-up in every process that evaluates a stock task. The index
it builds is plain data, so it is stored under the cache root, keyed by lm-eval's version
and install folder and by the size and modification time of every YAML file under the
task plugins' own folders (`LmEvalPlan.include_path`); a change to those files, or another
lm-eval, builds it anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

INDEX_FORMAT = 1


def index_key(include_path: list[str], include_defaults: bool) -> str:
    import lm_eval.tasks

    digest = hashlib.sha256(f"{INDEX_FORMAT}:{md.version('lm_eval')}".encode())
    if include_defaults:  # an installed lm-eval changes its files only with its version
        digest.update(str(Path(lm_eval.tasks.__file__).parent.resolve()).encode())
    for folder in map(Path, include_path):
        digest.update(str(folder.resolve()).encode())
        for path in sorted(folder.rglob("*.yaml")):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _prebuilt_index(index: dict[str, Any]) -> Iterator[None]:
    """Let `TaskManager.__init__` take `index` instead of scanning the folders."""
    import lm_eval.tasks.manager as manager

    original = manager.TaskIndex

    class Prebuilt(original):  # type: ignore[misc, valid-type]
        @staticmethod
        def build(paths: Any, **kwargs: Any) -> dict[str, Any]:
            return index

    manager.TaskIndex = Prebuilt
    try:
        yield
    finally:
        manager.TaskIndex = original


def cached_task_manager(include_path: list[str], include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    from harness.settings import cache_root

    arguments = {"include_path": include_path or None, "include_defaults": include_defaults}
    path = cache_root() / "lm-eval-index" / f"{index_key(include_path, include_defaults)}.pickle"
    try:
        index = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        index = None
    if isinstance(index, dict):
        with _prebuilt_index(index):
            return TaskManager(**arguments)
    manager = TaskManager(**arguments)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_bytes(pickle.dumps(manager._index, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(staging, path)
    return manager
