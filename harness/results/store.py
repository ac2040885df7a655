"""The results store: one directory per finished cell, written atomically, verifiable.

Layout under the output root::

    cells/<method>/<task>/<fingerprint>/result.json    the CellRecord (metrics, provenance)
    cells/<method>/<task>/<fingerprint>/samples.jsonl  one record per document (and filter)
    cells/<method>/<task>/<fingerprint>/log.txt        what the libraries printed
    cells/<method>/<task>/<fingerprint>/SHA256SUMS     checksums of the three files above
    failed/<method>--<task>--<fingerprint>.json         the last failure of a cell, if any
    failed/<method>--<task>--<fingerprint>.log.txt      its log
    failed/<method>--<task>--<fingerprint>.samples.jsonl  its samples (a cell that ran but
                                                         could not be scored)
    work/<fingerprint>/                                  scratch: lm-eval response cache, checkpoints
    locks/<fingerprint>.lock                             the process computing a cell
    plan.json                                            the cells of the last run (harness status)
    quarantine/...                                       untrusted files moved aside, same layout

A cell directory is assembled in a temporary sibling and renamed into place, so it exists
complete or not at all. A cell counts as done only when its record parses as a
`CellRecord` and every file matches its checksum: a truncated, edited or garbage cell is
reported by path (`harness verify`, leaderboards) and recomputed by the next run that
includes it; `harness verify --repair` moves untrusted files into quarantine/.

Every temporary file and folder is named with its host and process id, so `tidy` (run
before each run and each `harness status`) can clear what a killed process left: its
temporaries, its lock, and the scratch folder of a cell it had committed. A full disk is
reported with the path written and the space left.

Files and folders follow the user's umask, so a --results folder shared on a cluster is as
readable as anything else the user writes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

from harness.errors import DataError, redact
from harness.files import (abandoned, atomic_write_text, file_sha256, follow_umask, fsync_dir,
                           jsonl_text, naming_full_disk, owner_tag, read_jsonl, remove_path,
                           write_jsonl)
from harness.results import locks
from harness.results.locks import LOCK_HEARTBEAT_S, LOCK_STALE_S, LockHolder
from harness.results.records import NEWER_SCHEMA, CellRecord

RESULT_FILE = "result.json"


SAMPLES_FILE = "samples.jsonl"


LOG_FILE = "log.txt"


CHECKSUMS_FILE = "SHA256SUMS"


PLAN_FILE = "plan.json"


CHECKSUMMED = (RESULT_FILE, SAMPLES_FILE)


QUARANTINE = "quarantine"  # untrusted files moved aside (`harness verify --repair`)


def record_json(record: CellRecord) -> str:
    return redact(json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str)) + "\n"


def _redacted_log(log: Path) -> str:
    return redact(log.read_text(encoding="utf-8", errors="replace"))


@dataclass(frozen=True)
class Problem:
    """A file in the store that cannot be trusted, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _readable(paths: Iterable[Path], read: Callable[[Path], CellRecord],
              problems: list[Problem] | None) -> list[CellRecord]:
    """The records `read` gets from `paths`; each one that cannot be read goes to `problems`."""
    records = []
    for path in paths:
        try:
            records.append(read(path))
        except DataError as exc:
            if problems is not None:
                problems.append(Problem(path, str(exc)))
    return records


class Store:
    def __init__(self, root: Path, lock_stale_s: float = LOCK_STALE_S,
                 heartbeat_s: float = LOCK_HEARTBEAT_S) -> None:
        self.root = Path(root)
        self.lock_stale_s = lock_stale_s
        self.heartbeat_s = heartbeat_s

    # ------------------------------------------------------------------ paths

    def cell_dir(self, method: str, task: str, fp: str) -> Path:
        return self.root / "cells" / method / task / fp[:16]

    def workdir(self, fp: str) -> Path:
        path = self.root / "work" / fp[:16]
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, fp: str) -> Path:
        """A cell's log of what the libraries print, in its scratch folder until committed."""
        return self.workdir(fp) / LOG_FILE

    def failure_path(self, method: str, task: str, fp: str) -> Path:
        return self.root / "failed" / f"{method}--{task}--{fp[:16]}.json"

    def lock_path(self, fp: str, part: str = "") -> Path:
        return self.root / "locks" / f"{fp[:16]}{part}.lock"

    # ------------------------------------------------------------------ reading

    def load_cell(self, directory: Path) -> CellRecord:
        """The record of a committed cell directory, checked against its checksums and the
        schema; any doubt raises DataError naming the file."""
        sums_path = directory / CHECKSUMS_FILE
        if not sums_path.exists():
            return self._legacy_cell(directory)
        try:
            sums = dict(line.split("  ", 1)[::-1] for line in
                        sums_path.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{sums_path}: unreadable checksums ({exc})") from None
        for name in CHECKSUMMED:
            path = directory / name
            if not path.is_file():
                raise DataError(f"{path}: missing")
            if sums.get(name) != file_sha256(path):
                raise DataError(f"{path}: does not match its checksum (edited or truncated)")
        return self._parse(directory / RESULT_FILE)

    def _legacy_cell(self, directory: Path) -> CellRecord:
        """A cell written by harness 0.1, before checksums: trusted on its schema alone."""
        path = directory / RESULT_FILE
        try:
            schema = json.loads(path.read_text(encoding="utf-8")).get("schema")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        if schema != 1:
            raise DataError(f"{directory / CHECKSUMS_FILE}: missing")
        return self._parse(path)

    @staticmethod
    def _parse(path: Path) -> CellRecord:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        return CellRecord.from_dict(data, str(path))

    def samples_of(self, record: CellRecord) -> list[dict[str, Any]]:
        """The per-document samples stored with a finished cell, or with a failure that ran
        far enough to produce them (empty when there are none)."""
        if record.status == "ok":
            path = self.cell_dir(record.row.method, record.task.name,
                                 record.fingerprint) / SAMPLES_FILE
        else:
            path = self.failure_path(record.row.method, record.task.name,
                                     record.fingerprint).with_suffix(".samples.jsonl")
        if not path.is_file():
            return []
        try:
            return read_jsonl(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: unreadable samples ({type(exc).__name__}: {exc})") from None

    def done_record(self, method: str, task: str, fp: str) -> CellRecord | None:
        """The finished cell's record, or None when it is absent or cannot be trusted."""
        directory = self.cell_dir(method, task, fp)
        if not (directory / RESULT_FILE).exists():
            return None
        try:
            record = self.load_cell(directory)
        except DataError:
            return None
        return record if record.fingerprint == fp else None

    def is_done(self, method: str, task: str, fp: str) -> bool:
        return self.done_record(method, task, fp) is not None

    def cell_dirs(self) -> list[Path]:
        return sorted(p for p in (self.root / "cells").glob("*/*/*")
                      if p.is_dir() and not p.name.startswith("."))

    def results(self, problems: list[Problem] | None = None) -> list[CellRecord]:
        """Every trustworthy finished cell, in a stable order; the others go to `problems`."""
        return _readable(self.cell_dirs(), self.load_cell, problems)

    def failures(self, problems: list[Problem] | None = None) -> list[CellRecord]:
        return _readable(sorted((self.root / "failed").glob("*.json")), self._parse, problems)

    def verify(self) -> list[Problem]:
        """Everything in the tree that a run would not trust (and would recompute)."""
        problems: list[Problem] = []
        self.results(problems)
        self.failures(problems)
        for directory in self.cell_dirs():
            expected = directory.name
            try:
                record = self.load_cell(directory)
            except DataError:
                continue
            if record.fingerprint[:16] != expected:
                problems.append(Problem(directory, f"record fingerprint {record.fingerprint[:16]} "
                                                   f"does not match its folder"))
        return problems

    def find(self, task: str | None = None, method: str | None = None,
             row: str | None = None, status: str | None = "ok",
             data: str | None = None) -> list[CellRecord]:
        """Finished cells, newest first. `row` matches a row key or a row label."""
        found = [r for r in self.results()
                 if (task is None or r.task.name == task)
                 and (method is None or r.row.method == method)
                 and (row is None or row in (r.row.key, r.row.label))
                 and (status is None or r.status == status)
                 and (data is None or r.task.data == data)]
        return sorted(found, key=lambda r: r.finished_at, reverse=True)

    # ------------------------------------------------------------------ locks

    def claim(self, fp: str, part: str = "") -> ContextManager[LockHolder | None]:
        """Hold a cell's lock (or the lock of one `part` of it, a document shard) while it
        runs; yields None, or the live holder if another process has it (`locks.claim`)."""
        return locks.claim(self.lock_path(fp, part), self.lock_stale_s, self.heartbeat_s)

    def holder(self, fp: str, part: str = "") -> LockHolder | None:
        """Who holds a cell's (or a part's) lock now (`harness status`), without taking it."""
        return locks.holder(self.lock_path(fp, part))

    # ------------------------------------------------------------------ leftovers

    def tidy(self) -> None:
        """Clear what killed processes left behind (`harness run` and `harness status` do
        this first): locks whose holder is dead or stale, the temporary files and folders of
        dead processes, and the scratch folder of every finished cell (a kill between a
        cell's commit and its cleanup). A scratch folder is removed under its cell's lock,
        so a process recomputing that cell (--force) keeps its own."""
        host = socket.gethostname()
        for lock in sorted((self.root / "locks").glob("*.lock")):
            locks.live_holder(lock, host, self.lock_stale_s)  # removes it when its holder is gone
        temporaries = [path for prefix in (f".{PLAN_FILE}.", ".leaderboard.")
                       for path in self.root.glob(f"{prefix}*")]  # the root's own files
        temporaries += (self.root / "locks").glob("*.lock.stale.*")  # locks set aside
        for folder in (self.root / "locks", self.root / "failed", self.root / "jobs",
                       *(self.root / "cells").glob("*/*")):  # the harness's own folders
            temporaries += folder.glob(".*")
        for leftover in temporaries:
            if abandoned(leftover, host, self.lock_stale_s):
                remove_path(leftover)
        for scratch in sorted((self.root / "work").glob("*")):
            if self._finished(scratch.name):
                with self.claim(scratch.name) as holder:
                    if holder is None:
                        shutil.rmtree(scratch, ignore_errors=True)

    def _finished(self, fp16: str) -> bool:
        """Whether the cell whose fingerprint starts with `fp16` has a trusted result."""
        for directory in (self.root / "cells").glob(f"*/*/{fp16}"):
            try:
                if self.load_cell(directory).fingerprint[:16] == fp16:
                    return True
            except DataError:
                continue
        return False

    def quarantine(self, problems: Iterable[Problem]) -> list[tuple[Problem, Path]]:
        """Move untrusted files and cell folders under `quarantine/` (same relative path),
        where no run or leaderboard reads them; a record written by a newer harness is
        left in place. Returns what was moved, and where."""
        moved = []
        for problem in problems:
            if NEWER_SCHEMA in problem.reason or not problem.path.exists():
                continue
            try:
                relative = problem.path.relative_to(self.root)
            except ValueError:
                continue
            if relative.parts[0] == "cells" and len(relative.parts) > 4:
                relative = Path(*relative.parts[:4])  # the whole cell folder
            source = self.root / relative
            target = self.root / QUARANTINE / relative
            if target.exists():  # quarantined before: keep both
                target = self.root / QUARANTINE / str(time.time_ns()) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative.parts[0] == "failed":  # the failure's log and samples go with it
                for suffix in (".log.txt", ".samples.jsonl"):
                    if source.with_suffix(suffix).exists():
                        os.rename(source.with_suffix(suffix), target.with_suffix(suffix))
            os.rename(source, target)
            moved.append((problem, target))
        return moved

    def quarantine_failures(self) -> list[tuple[Problem, Path]]:
        """Failure records that cannot be read, moved aside: such a record only ever
        explains a failure, and a cell without a trusted result is recomputed anyway."""
        problems: list[Problem] = []
        self.failures(problems)
        return self.quarantine(problems)

    # ------------------------------------------------------------------ writing

    def commit_cell(self, record: CellRecord, samples: list[dict[str, Any]],
                    log: Path | None = None) -> Path:
        """Write record + samples (+ log) into a temp dir and rename it into place.

        An older result (--force, or an untrustworthy one) is renamed aside first and
        deleted only after the new one is in place, so a kill at any point leaves one
        whole result.
        """
        method, task, fp = record.row.method, record.task.name, record.fingerprint
        target = self.cell_dir(method, task, fp)
        with naming_full_disk(target):
            self._write_cell(target, record, samples, log)
        failure = self.failure_path(method, task, fp)
        for leftover in (failure, failure.with_suffix(".log.txt"),
                         failure.with_suffix(".samples.jsonl")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.root / "work" / fp[:16], ignore_errors=True)
        return target

    def _write_cell(self, target: Path, record: CellRecord, samples: list[dict[str, Any]],
                    log: Path | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in target.parent.glob(f".{target.name}.*"):  # from killed processes
            if abandoned(leftover, socket.gethostname(), self.lock_stale_s):
                shutil.rmtree(leftover, ignore_errors=True)
        prefix = f".{target.name}.{owner_tag()}."
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        old = target.with_name(f"{prefix}old")
        try:
            write_jsonl(staging / SAMPLES_FILE, samples)
            (staging / RESULT_FILE).write_text(record_json(record), encoding="utf-8")
            if log is not None and log.is_file():
                (staging / LOG_FILE).write_text(_redacted_log(log), encoding="utf-8")
            sums = "".join(f"{file_sha256(staging / name)}  {name}\n" for name in CHECKSUMMED)
            (staging / CHECKSUMS_FILE).write_text(sums, encoding="utf-8")
            for path in staging.iterdir():
                follow_umask(path)
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            follow_umask(staging, directory=True)
            fsync_dir(staging)
            if target.exists():
                os.rename(target, old)
            os.rename(staging, target)
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def record_failure(self, record: CellRecord, log: Path | None = None,
                       samples: list[dict[str, Any]] | None = None) -> Path:
        """The last failure of a cell, with its log and whatever samples it produced."""
        path = self.failure_path(record.row.method, record.task.name, record.fingerprint)
        atomic_write_text(path, record_json(record))
        if log is not None and log.is_file():
            atomic_write_text(path.with_suffix(".log.txt"), _redacted_log(log))
        if samples:
            atomic_write_text(path.with_suffix(".samples.jsonl"), jsonl_text(samples))
        return path

    def write_plan(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_text(self.root / PLAN_FILE, json.dumps(entries, indent=1, sort_keys=True) + "\n")

    def read_plan(self) -> list[dict[str, Any]]:
        path = self.root / PLAN_FILE
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc})") from None
        if not isinstance(entries, list):
            raise DataError(f"{path}: expected a list of cells")
        return [e for e in entries if isinstance(e, dict)]
