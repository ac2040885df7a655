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

A cell directory is assembled in a temporary sibling and renamed into place, so it exists
complete or not at all. A cell counts as done only when its record parses as a
`CellRecord` and every file matches its checksum: a truncated, edited or garbage cell is
reported by path (`harness verify`) and recomputed by the next run.

Files and folders follow the user's umask, so an --out folder shared on a cluster is as
readable as anything else the user writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness.errors import DataError, redact
from harness.records import CellRecord

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.jsonl"
LOG_FILE = "log.txt"
CHECKSUMS_FILE = "SHA256SUMS"
PLAN_FILE = "plan.json"
CHECKSUMMED = (RESULT_FILE, SAMPLES_FILE)
# A lock whose holder has not refreshed it for this long is taken over, whatever the host
# (containers change hostname at every start, so "another host" proves nothing).
LOCK_STALE_S = 300.0
LOCK_HEARTBEAT_S = 20.0


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


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _follow_umask(path: Path, directory: bool = False) -> None:
    """tempfile makes 0600 files and 0700 folders; give them the user's usual mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


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
        _follow_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, secrets redacted (samples can hold judge error bodies)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(redact(json.dumps(record, sort_keys=True, default=str,
                                           ensure_ascii=False)))
            handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def record_json(record: CellRecord) -> str:
    return redact(json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str)) + "\n"


def _redacted_log(log: Path) -> str:
    return redact(log.read_text(encoding="utf-8", errors="replace"))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    age_s: float  # since the holder's last heartbeat

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} (heartbeat {self.age_s:.0f} s ago)"


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

    @contextmanager
    def claim(self, fp: str, part: str = "") -> Iterator[LockHolder | None]:
        """Hold a cell's lock (or the lock of one `part` of it, a document shard) while it
        runs; yields None, or the live holder if another process has it.

        The lock is created exclusively and whole (a hard link of a complete file), so
        each cell runs once across processes and nodes sharing the folder. Its holder
        refreshes its modification time every `heartbeat_s`; a lock that is empty,
        unreadable, left by a dead process on this host, or not refreshed for
        `lock_stale_s` is taken over.
        """
        lock = self.lock_path(fp, part)
        lock.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        me = {"host": host, "pid": os.getpid(), "started": time.time()}
        fd, draft = tempfile.mkstemp(prefix=".draft-", dir=lock.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        try:
            for _attempt in range(100):
                try:
                    os.link(draft, lock)
                    break
                except FileExistsError:
                    holder = self._live_holder(lock, host)
                    if holder is not None:
                        yield holder
                        return
            else:
                raise DataError(f"{lock}: could not take the lock (it keeps changing)")
        finally:
            Path(draft).unlink(missing_ok=True)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(lock, stop), daemon=True)
        beat.start()
        try:
            yield None
        finally:
            stop.set()
            beat.join()
            lock.unlink(missing_ok=True)

    def _live_holder(self, lock: Path, my_host: str) -> LockHolder | None:
        """The holder of an existing lock, or None after removing a dead or stale lock."""
        try:
            stat = lock.stat()
        except FileNotFoundError:
            return None  # released meanwhile: try again
        try:
            holder = json.loads(lock.read_text())
            host, pid = str(holder["host"]), int(holder["pid"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            host, pid = "?", -1  # garbage: nobody can be holding it
        age = time.time() - stat.st_mtime
        dead = pid < 0 or (host == my_host and not _pid_alive(pid)) or age > self.lock_stale_s
        if not dead:
            return LockHolder(host, pid, age)
        # Move the lock aside, then check it is the one judged dead: when two processes
        # take over the same stale lock, the slower one may have moved the faster one's
        # fresh lock, which it then puts back.
        aside = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            return None
        try:
            if aside.stat().st_ino != stat.st_ino:
                os.link(aside, lock)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return None

    def _heartbeat(self, lock: Path, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                os.utime(lock)
            except OSError:
                return

    def holder(self, fp: str, part: str = "") -> LockHolder | None:
        """Who holds a cell's (or a part's) lock now (`harness status`), without taking it."""
        lock = self.lock_path(fp, part)
        try:
            stat = lock.stat()
            data = json.loads(lock.read_text())
            return LockHolder(str(data["host"]), int(data["pid"]), time.time() - stat.st_mtime)
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
            (staging / RESULT_FILE).write_text(record_json(record), encoding="utf-8")
            if log is not None and log.is_file():
                (staging / LOG_FILE).write_text(_redacted_log(log), encoding="utf-8")
            sums = "".join(f"{file_sha256(staging / name)}  {name}\n" for name in CHECKSUMMED)
            (staging / CHECKSUMS_FILE).write_text(sums, encoding="utf-8")
            for path in staging.iterdir():
                _follow_umask(path)
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            _follow_umask(staging, directory=True)
            _fsync_dir(staging)
            if target.exists():
                os.rename(target, old)
            os.rename(staging, target)
            _fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        failure = self.failure_path(method, task, fp)
        for leftover in (failure, failure.with_suffix(".log.txt"),
                         failure.with_suffix(".samples.jsonl")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.root / "work" / fp[:16], ignore_errors=True)
        return target

    def record_failure(self, record: CellRecord, log: Path | None = None,
                       samples: list[dict[str, Any]] | None = None) -> Path:
        """The last failure of a cell, with its log and whatever samples it produced."""
        path = self.failure_path(record.row.method, record.task.name, record.fingerprint)
        atomic_write_text(path, record_json(record))
        if log is not None and log.is_file():
            atomic_write_text(path.with_suffix(".log.txt"), _redacted_log(log))
        if samples:
            write_jsonl(path.with_suffix(".samples.jsonl"), samples)
            _follow_umask(path.with_suffix(".samples.jsonl"))
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
