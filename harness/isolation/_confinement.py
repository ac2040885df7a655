"""How a sandboxed process is confined on this machine: the layers, and starting and
stopping one process under them.

Strong isolation is bubblewrap (https://github.com/containers/bubblewrap, Debian package
`bubblewrap`), run as an unprivileged host user: new user, mount, PID, network, IPC and UTS
namespaces; a read-only view of /usr and of the interpreter and nothing else of the host;
private size-limited tmpfs for /tmp, /dev/shm and the working directory (its disk quota);
no network (and so no abstract unix sockets; no path-based ones either, as no host socket
is mounted); no further user namespaces; a new session; killed when the harness dies.
When the harness runs as root, each sandboxed process gets a host uid of its own, never 0:
a user namespace that maps the program to root would pass every file permission check.

The process count and memory cover the whole program: a cgroup (v1 `pids` and `memory`
controllers, or v2) where the harness may create one, else RLIMIT_NPROC, which the kernel
counts per user namespace, so per program, and RLIMIT_AS per process.

Without bubblewrap (or where it cannot start), programs still run as separate processes
with rlimits, a scrubbed environment, a fresh working directory and a private uid when the
harness is root, but they see the host's files and network: weak isolation, which callers
refuse unless the user opts in.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.isolation._cgroups import Cgroups, ProgramCgroup, trace_prefix

# Host uids for sandboxed processes when the harness runs as root: far above the ranges
# distributions give to users, services and subordinate-id ranges, and disjoint between
# harness processes (a block per pid), so two harnesses never share a uid.
SANDBOX_UID_BASE = 1_800_000_000


UIDS_PER_HARNESS = 64


MAX_WORKERS = UIDS_PER_HARNESS // 2  # each program takes two uids: candidate and checker


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


WORKDIR = "/sandbox"


SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


# Processes of the sandbox itself on top of the program's own: the launching shell (which
# becomes bubblewrap), bubblewrap's init in the new PID namespace, and the interpreter.
SANDBOX_PROCESSES = 3


@dataclass(frozen=True)
class Interpreter:
    path: str  # the real executable
    prefix: str  # its installation folder (bin/, lib/), mounted read-only in the sandbox
    version: str


@dataclass(frozen=True)
class Isolation:
    interpreter: Interpreter
    bwrap: str | None = None  # bubblewrap, when it confines programs here
    bwrap_version: tuple[int, ...] = ()
    private_uids: bool = False  # root harness: each process under a host uid of its own
    cgroups: Cgroups | None = None
    notes: tuple[str, ...] = ()  # why a layer is missing
    weak_because: str = ""  # why bubblewrap is not used

    @property
    def strong(self) -> bool:
        return self.bwrap is not None and (self.private_uids or os.geteuid() != 0)

    @property
    def disables_user_namespaces(self) -> bool:
        return self.bwrap_version >= (0, 8)

    def weakness(self) -> str:
        """Why isolation is weak here (one line), or "" when it is strong."""
        return "" if self.strong else self.weak_because or "bubblewrap is not used"

    def uid(self, slot: int, role: int) -> int | None:
        if not self.private_uids:
            return None
        return SANDBOX_UID_BASE + (os.getpid() % (1 << 22)) * UIDS_PER_HARNESS + 2 * slot + role

    def describe(self) -> dict[str, Any]:
        """What confines each program, for the result record."""
        user = ("a host uid of its own per process, never root" if self.private_uids
                else f"the harness's uid {os.geteuid()}" + (" (ROOT)" if os.geteuid() == 0 else ""))
        if self.cgroups is not None:
            processes = memory = f"cgroup v{self.cgroups.version} for the whole program"
        else:
            processes = "RLIMIT_NPROC" + (" in the program's own user namespace"
                                          if self.bwrap else " of its uid")
            memory = "RLIMIT_AS per process (whole program: up to processes x memory_mb)"
        if self.bwrap:
            layers = {
                "tool": f"bubblewrap {'.'.join(map(str, self.bwrap_version))}",
                "filesystem": "read-only /usr and interpreter, nothing else of the host; "
                              "private tmpfs /tmp, /dev/shm and working dir of file_size_mb each",
                "network": "none (new network namespace; no host sockets mounted)",
                "processes": f"new PID namespace; {processes}",
                "user_namespaces": "disabled inside" if self.disables_user_namespaces
                                   else "NOT disabled (bubblewrap < 0.8)",
                "lifetime": "killed with the harness (die-with-parent), wall clock, RLIMIT_CPU"}
        else:
            layers = {
                "tool": "none",
                "filesystem": "NOT isolated: the host's files, as the user below",
                "network": "NOT isolated",
                "processes": f"new session; {processes}",
                "lifetime": "wall clock, RLIMIT_CPU; NOT killed with the harness"}
        return {"isolation": "strong" if self.strong else f"weak: {self.weakness()}",
                "user": user, "memory": memory, **layers,
                "interpreter": f"{self.interpreter.path} ({self.interpreter.version}, -S -s)",
                "verdict": "a separate checker process runs the tests; the candidate's "
                           "process only answers calls with plain data",
                "notes": list(self.notes)}


def bubblewrap() -> tuple[str | None, tuple[int, ...]]:
    path = shutil.which("bwrap")
    if path is None:
        return None, ()
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None, ()
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", output)
    return path, tuple(int(part) for part in match.groups("0")) if match else ()


def interpreters() -> list[Interpreter]:
    """Pythons of the harness's own version that could run sandboxed programs: the harness's
    (best), then the system's, for when the sandbox uid cannot read the harness's (say, a
    pyenv under /root)."""
    version = "%d.%d" % sys.version_info[:2]
    own = os.path.realpath(sys.executable)
    found = {own: Interpreter(own, os.path.realpath(sys.base_prefix), version)}
    for path in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        real = os.path.realpath(path)
        if real not in found and os.access(real, os.X_OK):
            found[real] = Interpreter(real, str(Path(real).parent.parent), version)
    return list(found.values())


def environment(home: str, tmp: str) -> dict[str, str]:
    # A fixed hash seed: the same completion gets the same verdict on every run.
    return {"PATH": SANDBOX_PATH, "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def bwrap_arguments(layers: Isolation, file_size_mb: int) -> list[str]:
    assert layers.bwrap is not None
    size = str(file_size_mb * 1024 * 1024)
    arguments = [layers.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent",
                 "--new-session", "--cap-drop", "ALL"]
    if layers.disables_user_namespaces:
        arguments.append("--disable-userns")
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            arguments += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            arguments += ["--ro-bind", folder, folder]
    prefix = layers.interpreter.prefix
    if not any(prefix == folder or prefix.startswith(folder + "/") for folder in SYSTEM_DIRS):
        arguments += ["--ro-bind", prefix, prefix]
    arguments += ["--proc", "/proc", "--dev", "/dev"]
    for folder in ("/tmp", "/dev/shm", WORKDIR):
        arguments += ["--size", size, "--tmpfs", folder]
    arguments += ["--chdir", WORKDIR, "--clearenv"]
    for name, value in environment(home=WORKDIR, tmp="/tmp").items():
        arguments += ["--setenv", name, value]
    return [*arguments, "--"]


def bubblewrap_problem(layers: Isolation, uid: int | None) -> str | None:
    """bubblewrap's own complaint when it cannot start the interpreter under `layers`."""
    try:
        result = subprocess.run(
            [*bwrap_arguments(layers, file_size_mb=1), layers.interpreter.path, "-S", "-c", "pass"],
            capture_output=True, text=True, timeout=30, cwd="/", env={"PATH": SANDBOX_PATH},
            user=uid, group=uid, extra_groups=[] if uid is not None else None)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    lines = result.stderr.strip().splitlines()
    return None if result.returncode == 0 else (lines[-1] if lines else f"exit status {result.returncode}")


class ConfinedProcess:
    """One sandboxed Python process running `child_source`, started under `layers`.

    It waits for its JSON request on stdin (`send`); `stop` kills it and all it started and
    removes every trace of it on the host."""

    def __init__(self, layers: Isolation, child_source: str, *, uid: int | None,
                 processes: int, memory_mb: int, file_size_mb: int, pass_fds: tuple[int, ...]):
        python = [layers.interpreter.path, "-S", "-s", "-B", "-c", child_source]
        self.uid = uid
        self.workdir: Path | None = None
        self.cgroup: ProgramCgroup | None = None
        try:
            if layers.bwrap:
                command, cwd, env = [*bwrap_arguments(layers, file_size_mb), *python], "/", {
                    "PATH": SANDBOX_PATH}
            else:
                self.workdir = Path(tempfile.mkdtemp(prefix=trace_prefix()))
                if uid is not None:
                    os.chown(self.workdir, uid, uid)
                command, cwd = python, str(self.workdir)
                env = environment(home=cwd, tmp=cwd)
            if layers.cgroups is not None:
                self.cgroup = ProgramCgroup(layers.cgroups, processes + SANDBOX_PROCESSES,
                                            memory_mb * 1024 * 1024)
                # The shell waits for the parent to move it into the cgroup before it
                # becomes the sandbox, so every process the program ever starts is counted.
                command = ["/bin/sh", "-c", 'read -r _ && exec "$@"', "sh", *command]
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=pass_fds, start_new_session=True,
                user=uid, group=uid, extra_groups=[] if uid is not None else None)
            if self.cgroup is not None:
                self.cgroup.add(self.process.pid)
        except BaseException:
            self._remove_traces()
            raise

    def send(self, request: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((("\n" if self.cgroup else "") + request).encode())
            self.process.stdin.close()
        except BrokenPipeError:  # it has already died; its exit status will say why
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> tuple[int, bool]:
        """Kill it and whatever it left behind, then clean up; (exit status, whether a
        memory cgroup killed something in it)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        returncode = self.process.wait()
        # Descendants that left its session (setsid) are still in its cgroup or its uid.
        for _ in range(200):
            leftovers = [pid for pid in (*(self.cgroup.members() if self.cgroup else ()),
                                         *(processes_of_uid(self.uid) if self.uid is not None else ()))
                         if is_running(pid)]
            if not leftovers:
                break
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        oom = self.cgroup.oom_killed() if self.cgroup else False
        self._remove_traces()
        return returncode, oom

    def _remove_traces(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.workdir is not None:
            remove_tree(self.workdir)


def processes_of_uid(uid: int) -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines()
                            if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid_line.split()[1] == str(uid):
            pids.append(int(status.parent.name))
    return pids


def is_running(pid: int) -> bool:
    """False for a process that has ended, zombies (waiting to be reaped) included."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def signal_of(returncode: int) -> int | None:
    """The signal that ended a process: Popen reports -N, bubblewrap exits with 128 + N."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    return number if 0 < number < 65 else None


def remove_tree(path: Path) -> None:
    def make_writable_and_retry(function: Any, target: str, _: Any) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        function(target)

    try:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
