"""Files the harness writes beside results and caches: atomic writes that follow the user's
umask and name a full disk, content hashes, JSON lines, and temporaries named by their
owner (`host-pid`) so a later run can tell a killed process's leftovers."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import DataError, redact


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


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def follow_umask(path: Path, directory: bool = False) -> None:
    """tempfile makes 0600 files and 0700 folders; give them the user's usual mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owner_tag() -> str:
    """`host-pid`, put in the name of every temporary file and folder the harness makes
    beside its results, so that a later run can tell the leftovers of a killed process."""
    return f"{socket.gethostname()}-{os.getpid()}"


# `{owner_tag()}.{suffix}` at the end of a temporary's name: tempfile's 8 random
# characters, or the suffix of a set-aside cell folder or lock
TAG_PID = re.compile(r"-(\d+)\.(?:[a-z0-9_]{8}|old|aside)$")


def abandoned(path: Path, host: str, stale_s: float, extension: str = "") -> bool:
    """Whether a temporary file or folder named `...{owner_tag()}.{suffix}{extension}` is
    a leftover: its process is dead on this host, or it has not changed for `stale_s` (a
    temporary lives for seconds, a cache build for minutes)."""
    name = path.name.removesuffix(extension)
    match = TAG_PID.search(name)
    if match is None:
        return False
    if name[:match.start()].endswith(f".{host}") and not pid_alive(int(match[1])):
        return True
    try:
        return time.time() - path.lstat().st_ctime > stale_s
    except FileNotFoundError:
        return False


def remove_path(path: Path) -> None:
    """Delete a file, a link or a whole folder, whichever `path` is; nothing if it is gone
    (a link to a folder is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def naming_full_disk(path: Path) -> Iterator[None]:
    """A full disk reported with the path written and the space left there."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        folder = next((p for p in (Path(path), *Path(path).parents) if p.exists()), Path("/"))
        try:
            space = shutil.disk_usage(folder).free
            free = (f"{space / 2**30:.1f} GiB" if space >= 2**30 else f"{space / 2**20:.1f} MiB") \
                + " free"
        except OSError:
            free = "free space unknown"
        what = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left on the device"
        raise DataError(f"{path}: {what} ({free} in {folder}); free some space and rerun "
                        f"the same command to resume") from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, rename."""
    path = Path(path)
    with naming_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            follow_umask(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line, secrets redacted (samples can hold judge error bodies)."""
    return "".join(redact(json.dumps(record, sort_keys=True, default=str, ensure_ascii=False))
                   + "\n" for record in records)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        handle.write(jsonl_text(records))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
