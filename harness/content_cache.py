"""One content-addressed cache for everything the harness builds once and keeps: zoo models,
fits, FUSE adapters, MinED token maps, lm-eval's task index, judgments, weight digests.

An entry is a file or a folder stored under a key that digests everything that determines
its content (`content_key`: sha256 of the identity's sorted JSON), so an entry never goes
stale: a changed input is another key. The four operations:

- key: `content_key(identity)`;
- build: `publish(key, write)` hands `write` a private staging path beside the entry (a
  fresh folder for folder caches, a path to create for file caches);
- atomic publish: the staging path is fsynced and renamed onto the entry, so a reader sees
  the whole entry or none, and a build killed midway leaves only a hidden staging leftover
  (named after host and pid, removed by the build itself on any exception, and by the next
  build of that entry once its process is dead or it has been untouched for a day). Two processes
  building one key both build; for a file the last rename wins, for a folder the first one
  does and the other drops its copy, and both then use the published entry (builds are
  deterministic, so the copies are the same; a published folder is never replaced while
  someone may be reading it, only a damaged one). Before the rename every staged file and
  folder is given the umask's mode (some writers, safetensors' among them, make 0600 files);
- verify: `load(key, read)` returns `read(entry)`, or None when the entry is missing or
  `read` finds it damaged (raises `DamagedEntry` or one of the cache's `damage` types); a
  damaged entry is rebuilt and replaced by the next `fetch`.

A resumable build keeps its progress in `scratch(key)`, a fixed folder beside the entry
that survives a crash and that `discard_scratch` removes once the entry is published.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from harness.files import abandoned, follow_umask, fsync_dir, owner_tag, remove_path

T = TypeVar("T")
ABANDONED_BUILD_S = 24 * 3600  # a build on another host may run this long; then it is left over


class DamagedEntry(Exception):
    """Raised by a cache's `read` when an entry is incomplete or corrupt."""


def content_key(identity: Any) -> str:
    """sha256 of `identity` as sorted JSON (objects JSON cannot hold enter as `str`)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ContentCache:
    """Entries under `root`, each named `<label><key[:key_chars]><suffix>` (under `key[:2]/`
    with `fan_out`, for caches of many small entries). `folder`: entries are folders.
    `damage`: exception types that `read` raises on a damaged entry besides `DamagedEntry`."""

    root: Path
    suffix: str = ""
    folder: bool = False
    key_chars: int = 64
    fan_out: bool = False
    damage: tuple[type[Exception], ...] = ()

    def path(self, key: str, label: str = "") -> Path:
        name = f"{label}{key[:self.key_chars]}{self.suffix}"
        return self.root / key[:2] / name if self.fan_out else self.root / name

    def load(self, key: str, read: Callable[[Path], T], label: str = "") -> T | None:
        """The entry as `read` returns it; None when it is missing or damaged."""
        return self._read(self.path(key, label), read)[1]

    def _read(self, path: Path, read: Callable[[Path], T]) -> tuple[bool, T | None]:
        """(whether the entry is damaged, what `read` returned)."""
        if not path.exists():
            return False, None
        try:
            return False, read(path)
        except FileNotFoundError:  # a folder entry without a file `read` needs
            return True, None
        except Exception as exc:
            if isinstance(exc, (DamagedEntry, *self.damage)):
                return True, None
            raise

    def publish(self, key: str, write: Callable[[Path], T], label: str = "") -> T:
        """Build the entry through `write(staging)` and publish it atomically; returns what
        `write` returns (which must not refer to the staging path)."""
        path = self.path(key, label)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sweep(path)
        staging = path.with_name(f".{path.name}.{owner_tag()}.{secrets.token_hex(4)}{self.suffix}")
        if self.folder:
            staging.mkdir()
        try:
            result = write(staging)
            _settle(staging)
            self._rename(staging, path)
            fsync_dir(path.parent)
        finally:
            remove_path(staging)
        return result

    def _sweep(self, path: Path) -> None:
        """Remove the staging leftovers of killed builds of this entry (never the resumable
        `scratch` folder, nor a live builder's staging)."""
        host = socket.gethostname()
        for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if abandoned(leftover, host, ABANDONED_BUILD_S, extension=self.suffix):
                remove_path(leftover)

    def _rename(self, staging: Path, path: Path) -> None:
        if not self.folder:
            os.replace(staging, path)
            return
        try:
            os.rename(staging, path)
        except OSError:  # another process published first: use its entry
            if not path.exists():
                raise

    def fetch(self, key: str, read: Callable[[Path], T], write: Callable[[Path], T],
              label: str = "") -> T:
        """The stored entry (`read`), or one built, published and returned (`write`)."""
        damaged, stored = self._read(self.path(key, label), read)
        if stored is not None:
            return stored
        if damaged:
            self._remove(self.path(key, label))
        return self.publish(key, write, label)

    def _remove(self, path: Path) -> None:
        """Take an entry away: renamed aside first, so no reader meets half of it."""
        aside = path.with_name(f".{path.name}.{owner_tag()}.damaged")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        remove_path(aside)

    def scratch(self, key: str, label: str = "") -> Path:
        """A folder where a build of this key keeps what lets it resume after a crash."""
        path = self.path(key, label)
        folder = path.with_name(f".{path.name}.partial")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def discard_scratch(self, key: str, label: str = "") -> None:
        path = self.path(key, label)
        shutil.rmtree(path.with_name(f".{path.name}.partial"), ignore_errors=True)


def _settle(path: Path) -> None:
    """Give a staged file, or every file and folder of a staged folder, the umask's mode
    and flush it to disk before the rename publishes it (a rename can reach the disk before
    the data it names)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the build wrote nothing")
    for item in [*path.rglob("*"), path] if path.is_dir() else [path]:
        follow_umask(item, directory=item.is_dir())
        fsync_dir(item)
