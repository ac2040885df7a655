"""Resource limits by cgroup v2: the delegated parents this user may create children
under, and one child per untrusted program with its memory and process limits."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def trace_prefix() -> str:
    """Names of this harness process's cgroups and working dirs start with it, so stale ones
    (left by a killed harness) are recognisable and tests can look for their own."""
    return f"harness-sandbox-{os.getpid()}-"


@dataclass(frozen=True)
class Cgroups:
    """Folders under which each sandboxed process gets its own cgroup: one per v1
    hierarchy (pids, memory), or the same v2 folder twice."""

    version: int
    pids: Path
    memory: Path


def cgroup_parents() -> Cgroups | None:
    """This process's cgroup folders where it may create children with pids and memory
    limits, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            v1[controller] = path.lstrip("/")
    root = Path("/sys/fs/cgroup")
    if "pids" in v1 and "memory" in v1:
        parents = Cgroups(1, root / "pids" / v1["pids"], root / "memory" / v1["memory"])
        limit_files: tuple[tuple[str, ...], tuple[str, ...]] = (("pids.max",),
                                                               ("memory.limit_in_bytes",))
    elif "" in v1 and (root / "cgroup.controllers").is_file():
        folder = root / v1[""]
        try:
            enabled = (folder / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        if not {"pids", "memory"} <= set(enabled):
            return None
        parents = Cgroups(2, folder, folder)
        limit_files = (("pids.max", "memory.max"), ())
    else:
        return None
    for parent, files in zip((parents.pids, parents.memory), limit_files):
        if files and not _can_make_child(parent, files):
            return None
        _remove_stale_children(parent)
    return parents


def _remove_stale_children(parent: Path) -> None:
    """Empty cgroups of harness processes that were killed before they could clean up."""
    for folder in parent.glob("harness-sandbox-*-*"):
        owner = folder.name.split("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                folder.rmdir()
            except OSError:  # still in use after all, or not ours to remove
                pass


def _can_make_child(parent: Path, limit_files: tuple[str, ...]) -> bool:
    try:
        probe = Path(tempfile.mkdtemp(prefix=trace_prefix(), dir=parent))
    except OSError:
        return False
    usable = all((probe / name).is_file() for name in limit_files) and os.access(
        probe / "cgroup.procs", os.W_OK)
    probe.rmdir()
    return usable


class ProgramCgroup:
    """The cgroup of one sandboxed process and everything it starts."""

    def __init__(self, parents: Cgroups, processes: int, memory_bytes: int):
        self.folders: list[Path] = []
        try:
            for parent in dict.fromkeys((parents.pids, parents.memory)):
                self.folders.append(Path(tempfile.mkdtemp(prefix=trace_prefix(), dir=parent)))
            self.pids, self.memory = self.folders[0], self.folders[-1]
            if parents.version == 1:
                required = {"pids.max": processes, "memory.limit_in_bytes": memory_bytes}
                swap = {"memory.memsw.limit_in_bytes": memory_bytes}  # with swap accounting
                self.oom_file = self.memory / "memory.oom_control"
            else:
                required = {"pids.max": processes, "memory.max": memory_bytes}
                swap = {"memory.swap.max": 0}
                self.oom_file = self.memory / "memory.events"
            for name, value in {**required, **swap}.items():
                path = (self.pids if name.startswith("pids.") else self.memory) / name
                if name in required or path.exists():
                    path.write_text(str(value))
        except BaseException:
            self.remove()
            raise

    def add(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def members(self) -> list[int]:
        pids: set[int] = set()
        for folder in self.folders:
            try:
                pids.update(int(pid) for pid in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def oom_killed(self) -> bool:
        try:
            fields = dict(line.split() for line in self.oom_file.read_text().splitlines())
        except (OSError, ValueError):
            return False
        return int(fields.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        for folder in self.folders:
            for _ in range(200):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy while killed processes are being reaped
                    time.sleep(0.01)
