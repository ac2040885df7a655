"""Cell locks: each cell runs once across processes and nodes that share a results folder."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import DataError
from harness.files import owner_tag, pid_alive

# A lock whose holder has not refreshed it for this long is taken over, whatever the host
# (containers change hostname at every start, so "another host" proves nothing).
LOCK_STALE_S = 300.0
LOCK_HEARTBEAT_S = 20.0


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    age_s: float  # since the holder's last heartbeat

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} (heartbeat {self.age_s:.0f} s ago)"


@contextmanager
def claim(lock: Path, stale_s: float = LOCK_STALE_S, heartbeat_s: float = LOCK_HEARTBEAT_S
          ) -> Iterator[LockHolder | None]:
    """Hold `lock` while a cell (or a part of it) runs; yields None, or the live holder if
    another process has it.

    The lock is created exclusively and whole (a hard link of a complete file), so
    each cell runs once across processes and nodes sharing the folder. Its holder
    refreshes its modification time every `heartbeat_s`; a lock that is empty,
    unreadable, left by a dead process on this host, or not refreshed for
    `stale_s` is taken over.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "started": time.time()}
    fd, draft = tempfile.mkstemp(prefix=f".draft.{owner_tag()}.", dir=lock.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(me, handle)
    try:
        for _attempt in range(100):
            try:
                os.link(draft, lock)
                break
            except FileExistsError:
                holder = live_holder(lock, host, stale_s)
                if holder is not None:
                    yield holder
                    return
        else:
            raise DataError(f"{lock}: could not take the lock (it keeps changing)")
    finally:
        Path(draft).unlink(missing_ok=True)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock, stop, heartbeat_s), daemon=True)
    beat.start()
    try:
        yield None
    finally:
        stop.set()
        beat.join()
        lock.unlink(missing_ok=True)

def live_holder(lock: Path, my_host: str, stale_s: float) -> LockHolder | None:
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
    dead = pid < 0 or (host == my_host and not pid_alive(pid)) or age > stale_s
    if not dead:
        return LockHolder(host, pid, age)
    # Move the lock aside, then check it is the one judged dead: when two processes
    # take over the same stale lock, the slower one may have moved the faster one's
    # fresh lock, which it then puts back.
    aside = lock.with_name(f"{lock.name}.stale.{owner_tag()}.aside")
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

def _heartbeat(lock: Path, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        try:
            os.utime(lock)
        except OSError:
            return

def holder(lock: Path) -> LockHolder | None:
    """Who holds a lock now, without taking it."""
    try:
        stat = lock.stat()
        data = json.loads(lock.read_text())
        return LockHolder(str(data["host"]), int(data["pid"]), time.time() - stat.st_mtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None
