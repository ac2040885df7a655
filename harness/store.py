"""The results store: one directory per finished cell, written atomically.

Layout under the output root::

    cells/<method>/<task>/<fingerprint>/result.json    metrics, provenance, timings
    cells/<method>/<task>/<fingerprint>/samples.jsonl  one record per document (and filter)
    failed/<method>--<task>--<fingerprint>.json         the last failure of a cell, if any
    work/<fingerprint>/                                  scratch: lm-eval response cache, checkpoints
    locks/<fingerprint>.lock                             the process computing a cell

A cell directory is assembled in a temporary sibling and renamed into place, so it either
exists complete or not at all; a cell is done iff its directory exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import DataError

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.jsonl"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True, default=str, ensure_ascii=False))
            handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def cell_dir(self, method: str, task: str, fp: str) -> Path:
        return self.root / "cells" / method / task / fp[:16]

    def is_done(self, method: str, task: str, fp: str) -> bool:
        return (self.cell_dir(method, task, fp) / RESULT_FILE).exists()

    def workdir(self, fp: str) -> Path:
        path = self.root / "work" / fp[:16]
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def claim(self, fp: str) -> Iterator[str | None]:
        """Hold a cell's lock while it runs; yields None, or the holder if another process has it.

        Several processes (GPUs, nodes sharing the filesystem, array jobs) may work on one
        matrix: the lock is created exclusively (a hard link of a complete file), so each
        cell runs once. A lock left by a dead process on this host is taken over; one from
        another host is honoured until that run removes it (delete `locks/<fingerprint>.lock`
        to release it by hand).
        """
        lock = self.root / "locks" / f"{fp[:16]}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        fd, draft = tempfile.mkstemp(prefix=".draft-", dir=lock.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        try:
            while True:
                try:
                    os.link(draft, lock)
                    break
                except FileExistsError:
                    try:
                        holder = json.loads(lock.read_text())
                    except (OSError, ValueError):
                        continue  # released between the link and the read: try again
                    if holder.get("host") == me["host"] and not _pid_alive(holder.get("pid", -1)):
                        lock.unlink(missing_ok=True)
                        continue
                    yield f"{holder.get('host', '?')}:{holder.get('pid', '?')}"
                    return
        finally:
            Path(draft).unlink(missing_ok=True)
        try:
            yield None
        finally:
            lock.unlink(missing_ok=True)

    def commit_cell(self, method: str, task: str, fp: str, result: dict[str, Any],
                    samples: list[dict[str, Any]]) -> Path:
        """Write result + samples into a temp dir and rename it into place.

        An older result (--force) is renamed aside first and deleted only after the new one
        is in place, so a kill at any point leaves one whole result.
        """
        target = self.cell_dir(method, task, fp)
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in target.parent.glob(f".{target.name}.*"):  # from killed processes
            pid = leftover.name.split(".")[2]
            if not (pid.isdigit() and _pid_alive(int(pid))):
                shutil.rmtree(leftover, ignore_errors=True)
        prefix = f".{target.name}.{os.getpid()}."
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        old = target.with_name(f"{prefix}old")
        try:
            write_jsonl(staging / SAMPLES_FILE, samples)
            with (staging / RESULT_FILE).open("w", encoding="utf-8") as handle:
                json.dump(result, handle, indent=2, sort_keys=True, default=str)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            _fsync_dir(staging)
            if target.exists():
                os.rename(target, old)
            os.rename(staging, target)
            _fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self.failure_path(method, task, fp).unlink(missing_ok=True)
        shutil.rmtree(self.root / "work" / fp[:16], ignore_errors=True)
        return target

    def failure_path(self, method: str, task: str, fp: str) -> Path:
        return self.root / "failed" / f"{method}--{task}--{fp[:16]}.json"

    def record_failure(self, method: str, task: str, fp: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.failure_path(method, task, fp),
                          json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")

    def results(self) -> Iterator[dict[str, Any]]:
        """Every finished cell's result.json, in a stable order."""
        paths = (p for p in (self.root / "cells").glob(f"*/*/*/{RESULT_FILE}")
                 if not p.parent.name.startswith("."))  # staging dirs of running processes
        yield from _read_records(paths)

    def failures(self) -> Iterator[dict[str, Any]]:
        yield from _read_records((self.root / "failed").glob("*.json"))


def _read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in sorted(paths):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable result record ({exc})") from None
