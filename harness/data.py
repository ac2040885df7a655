"""Readers for benchmark files in their original formats, with line-precise errors.

Task plugins hand these to lm-eval as a task's `custom_dataset`, so lm-eval's own prompt
templates, few-shot samplers, filters and metrics run unchanged on local files.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.errors import DataError

Row = dict[str, Any]


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    raise DataError(f"{what} not found; looked in: {', '.join(str(p) for p in candidates)}")


def read_json_file(path: Path, what: str) -> Any:
    """The parsed content of a JSON file, or a DataError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl_rows(path: Path, required: Sequence[str] = ()) -> list[Row]:
    """Rows of a .jsonl or .jsonl.gz file; every row must be an object with `required` keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
                missing = [k for k in required if not isinstance(row, dict) or k not in row]
                if missing:
                    raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
                rows.append(row)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_csv_rows(path: Path, columns: int, check: Callable[[list[str]], str | None]) -> list[list[str]]:
    """Rows of a headerless CSV with exactly `columns` fields; `check` returns an error text."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if len(row) != columns:
                    raise DataError(f"{path}:{number}: expected {columns} columns, got {len(row)}")
                problem = check(row)
                if problem:
                    raise DataError(f"{path}:{number}: {problem}")
                rows.append(row)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def dataset_dict(splits: dict[str, list[Row]]) -> Any:
    """A `datasets.DatasetDict`, the shape lm-eval expects from `custom_dataset`."""
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)
                                 for name, rows in splits.items()})


def first_response(sample: Row) -> str:
    """The model's (filtered) answer in a logged lm-eval sample: lm-eval nests it in lists
    (one per repeat, one per filter step)."""
    response = sample.get("filtered_resps") or sample.get("response") or [""]
    while isinstance(response, (list, tuple)):
        response = response[0] if response else ""
    return str(response or "").strip()


HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_S = 1.5


def hub_dataset_problem(task: str, dataset: str) -> str | None:
    """Why `dataset` (a Hugging Face id, optionally followed by a config in parentheses)
    cannot be read now, or None: it is in the local datasets cache, or the hub answers.
    Checked at planning time, in about a second, so a run never loads models first."""
    repo = dataset.split(" ")[0]
    if _in_hub_cache(repo):
        return None
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    why = (f"{' and '.join(offline)} is set" if offline else "the Hugging Face hub is unreachable"
           ) if offline or not _hub_reachable() else None
    if why is None:
        return None
    return (f"task {task}: {repo} is not in the local Hugging Face cache and {why}; read the "
            f"original files with --data-dir DIR (or set $HARNESS_DATA_DIR once), or use "
            f"--data embedded for an offline smoke run")


def _in_hub_cache(repo: str) -> bool:
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """A TCP connection to the hub within HUB_PROBE_S (name lookup included: it runs in a
    thread so a hanging resolver cannot hold the plan up)."""
    import socket
    import threading

    reachable: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(HUB_HOST, timeout=HUB_PROBE_S):
                reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_S)
    return bool(reachable)
