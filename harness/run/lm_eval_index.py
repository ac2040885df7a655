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
import importlib.metadata as md
import pickle
from pathlib import Path
from typing import Any, Iterator

from harness.content_cache import ContentCache, DamagedEntry, content_key

INDEX_FORMAT = 1


def index_key(include_path: list[str], include_defaults: bool) -> str:
    import lm_eval.tasks

    return content_key({
        "format": INDEX_FORMAT, "lm_eval": md.version("lm_eval"),
        # an installed lm-eval changes its files only with its version
        "defaults": str(Path(lm_eval.tasks.__file__).parent.resolve()) if include_defaults else None,
        "include": [[str(folder.resolve()),
                     [[str(path), path.stat().st_size, path.stat().st_mtime_ns]
                      for path in sorted(folder.rglob("*.yaml"))]]
                    for folder in map(Path, include_path)]})


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


def _read_index(path: Path) -> dict[str, Any]:
    index = pickle.loads(path.read_bytes())
    if not isinstance(index, dict):
        raise DamagedEntry(f"{path}: not a task index")
    return index


def cached_task_manager(include_path: list[str], include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    from harness.settings import cache_root

    arguments = {"include_path": include_path or None, "include_defaults": include_defaults}
    store = ContentCache(cache_root() / "lm-eval-index", suffix=".pickle", key_chars=32,
                         damage=(pickle.UnpicklingError, EOFError, AttributeError, ImportError))
    key = index_key(include_path, include_defaults)
    index = store.load(key, _read_index)
    if index is not None:
        with _prebuilt_index(index):
            return TaskManager(**arguments)

    def write(path: Path) -> Any:
        manager = TaskManager(**arguments)
        path.write_bytes(pickle.dumps(manager._index, protocol=pickle.HIGHEST_PROTOCOL))
        return manager

    return store.publish(key, write)
