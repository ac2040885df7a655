"""Judging model-written Python functions without trusting them.

Each program runs as two sandboxed processes (see `harness.isolation._confinement` for the
layers and `harness.isolation._child` for the code inside):

- the candidate runs the prompt and the model's completion and answers calls of the entry
  point with plain data;
- the checker runs the problem's trusted prompt and tests, calling the candidate through a
  stub, and writes the verdict on a pipe that only the parent reads.

The candidate's process never holds the tests' expectations, the verdict channel or
anything else the verdict depends on, so forging a pass from inside it (an always-equal
return value, patched builtins, a trace hook that replaces `check`, reading a secret from
a parent frame) only ever produces data the checker compares honestly.

A program passes when the checker's `check(candidate)` returns; it times out when the
wall clock (`timeout_s`, sandbox start-up included) or a process's CPU limit runs out.

`isolation()` probes once per process what this machine allows. Strong isolation needs
bubblewrap; without it `run_programs` refuses unless `allow_weak_isolation=True`, and every
result should carry `isolation().describe()`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import queue
import select
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from harness.errors import HarnessError
from harness.isolation._cgroups import cgroup_parents
from harness.isolation._confinement import (MAX_WORKERS, ConfinedProcess, Isolation, bubblewrap,
                                            bubblewrap_problem, interpreters, signal_of)

CHILD_SOURCE = Path(__file__).with_name("_child.py").read_text(encoding="utf-8")
VERDICT_READ_LIMIT = 64 * 1024
# Below these, no program can do anything but fail: two sandboxed interpreters take about
# 0.2 s to start, and the interpreter alone needs about 20 MB of address space.
MIN_TIMEOUT_S = 1.0
MIN_MEMORY_MB = 64
# After the checker's verdict, how long a failed candidate gets to finish dying, so that
# its exit status can say why (CPU limit, memory cgroup).
CANDIDATE_EXIT_GRACE_S = 1.0
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"


@dataclass(frozen=True)
class Limits:
    """Per-program limits, for the candidate and the checker alike. `file_size_mb` is also
    the size of each private tmpfs (working dir, /tmp, /dev/shm): the program's disk quota."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 16  # what the program may start, beyond the sandbox's own processes

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s >= MIN_TIMEOUT_S):
            raise ValueError(f"timeout_s={self.timeout_s} is too short: need at least "
                             f"{MIN_TIMEOUT_S:g} s (starting the sandbox takes about 0.2 s)")
        if self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"memory_mb={self.memory_mb} is too small: need at least "
                             f"{MIN_MEMORY_MB} (the interpreter alone needs about 20 MB)")
        for name in ("cpu_s", "file_size_mb", "open_files", "processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: need at least 1")


@dataclass(frozen=True)
class Program:
    """A HumanEval-style problem and one completion: `prompt + completion` defines
    `entry_point`; `test` defines `check(candidate)`, which raises unless it is right."""

    prompt: str
    completion: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class Execution:
    status: Literal["passed", "failed", "timed out"]
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def describe(self) -> str:
        return self.status if not self.detail else f"{self.status}: {self.detail}"


@functools.cache
def isolation() -> Isolation:
    """The strongest layers that run a trivial program correctly here, probed once."""
    if sys.platform != "linux":
        raise HarnessError("the code-execution sandbox needs Linux (namespaces, rlimits, /proc)")
    bwrap, version = bubblewrap()
    cgroups = cgroup_parents()
    notes = [] if cgroups else ["no cgroup with pids and memory controllers the harness may "
                                "create: limits by rlimits"]
    weak_because = "" if bwrap else "bubblewrap is not installed"
    private = os.geteuid() == 0
    attempts = []
    for interpreter in interpreters() if bwrap else ():
        plain = Isolation(interpreter, bwrap, version, private)
        if problem := bubblewrap_problem(plain, plain.uid(0, 0)):
            notes.append(f"bubblewrap cannot start {interpreter.path}: {problem}")
            weak_because = weak_because or f"bubblewrap cannot start here: {problem}"
            continue
        attempts += [Isolation(interpreter, bwrap, version, private, groups)
                     for groups in dict.fromkeys((cgroups, None))]
    attempts += [Isolation(interpreter, None, (), uid_choice, groups)
                 for uid_choice in dict.fromkeys((private, False))  # a private uid first
                 for interpreter in interpreters()
                 for groups in dict.fromkeys((cgroups, None))]
    for layers in attempts:
        problem = _probe(layers)
        if problem is None:
            return dataclasses.replace(layers, notes=tuple(notes),
                                       weak_because="" if layers.strong else weak_because)
        notes.append(f"{layers.interpreter.path} {'in bubblewrap' if layers.bwrap else 'unconfined'}"
                     f"{' as a private uid' if layers.private_uids else ''}"
                     f"{' in a cgroup' if layers.cgroups else ''}: {problem}")
        if layers.bwrap:
            weak_because = weak_because or f"bubblewrap fails here: {problem}"
    raise HarnessError("cannot run sandboxed programs here: " + "; ".join(notes))


PROBE = Program(prompt='import sys\n\ndef version():\n    """(major, minor)"""\n',
                completion="    return sys.version_info[:2]\n",
                test="def check(candidate):\n    assert candidate() == tuple(sys.version_info[:2])\n",
                entry_point="version")


def _probe(layers: Isolation) -> str | None:
    """None when a trivial program passes under `layers`, else why not."""
    try:
        result = judge(PROBE, Limits(timeout_s=30), layers, slot=0)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if result.passed else result.describe()


def run_programs(programs: Sequence[Program], limits: Limits = Limits(), *, workers: int = 4,
                 allow_weak_isolation: bool = False) -> list[Execution]:
    """Judge programs in parallel, each in its own sandboxes; results in input order.
    Refuses (HarnessError) under weak isolation unless `allow_weak_isolation`."""
    layers = isolation()
    if not layers.strong and not allow_weak_isolation:
        raise HarnessError(weak_isolation_refusal(layers, "allow_weak_isolation=True"))
    if not 1 <= workers <= MAX_WORKERS:
        raise HarnessError(f"workers={workers}: need 1 to {MAX_WORKERS}")
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def run(program: Program) -> Execution:
        slot = slots.get()
        try:
            return judge(program, limits, layers, slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, programs))


def weak_isolation_refusal(layers: Isolation, opt_in: str) -> str:
    return (f"refusing to run model-written code under weak isolation ({layers.weakness()}): "
            f"{INSTALL_HINT}, or accept the risk with {opt_in}")


def judge(program: Program, limits: Limits, layers: Isolation, slot: int) -> Execution:
    """Run one program's candidate and checker under `layers`; `slot` (one per concurrent
    call) picks their private uids."""
    calls_read, calls_write = os.pipe()
    replies_read, replies_write = os.pipe()
    verdict_read, verdict_write = os.pipe()

    def start(role: int, pass_fds: tuple[int, ...]) -> ConfinedProcess:
        return ConfinedProcess(layers, CHILD_SOURCE, uid=layers.uid(slot, role),
                               processes=limits.processes, memory_mb=limits.memory_mb,
                               file_size_mb=limits.file_size_mb, pass_fds=pass_fds)

    started: list[ConfinedProcess] = []
    try:
        try:
            started.append(start(0, (calls_read, replies_write)))
            started.append(start(1, (calls_write, replies_read, verdict_write)))
        finally:  # the children hold their ends now; a pipe ends when its holders do
            for fd in (calls_read, calls_write, replies_read, replies_write, verdict_write):
                os.close(fd)
        candidate, checker = started
        deadline = time.monotonic() + limits.timeout_s
        common = {"entry_point": program.entry_point, "limits": dataclasses.asdict(limits)}
        candidate.send(json.dumps({
            "role": "candidate", "source": program.prompt + program.completion, **common,
            "fds": {"calls": calls_read, "replies": replies_write}}))
        checker.send(json.dumps({
            "role": "checker", "prompt": program.prompt, "test": program.test, **common,
            "fds": {"calls": calls_write, "replies": replies_read, "verdict": verdict_write}}))
        report, finished = _read_verdict(verdict_read, checker, deadline)
        verdict = _parse(report)
        if finished and verdict.get("passed") is not True:  # let it say why it failed
            candidate.wait(min(deadline - time.monotonic(), CANDIDATE_EXIT_GRACE_S))
    finally:
        ends = [process.stop() for process in started]
        os.close(verdict_read)
    if not finished:
        return Execution("timed out", f"wall clock > {limits.timeout_s:g} s")
    return _outcome(verdict, candidate_end=ends[0], checker_end=ends[1])


def _read_verdict(fd: int, checker: ConfinedProcess, deadline: float) -> tuple[bytes, bool]:
    """What the checker wrote before it closed the pipe; False if the deadline passed."""
    chunks: list[bytes] = []
    size = 0
    poller = select.poll()  # not select(): descriptor numbers in a big process exceed 1024
    poller.register(fd, select.POLLIN)
    while (remaining := deadline - time.monotonic()) > 0:
        if not poller.poll(min(remaining, 0.05) * 1000):
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # the checker closed it: it has ended or is ending
            return b"".join(chunks), checker.wait(remaining) is not None
        if size < VERDICT_READ_LIMIT:
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks), False


def _parse(report: bytes) -> dict[str, Any]:
    """The checker's verdict; {} when it wrote none."""
    try:
        verdict = json.loads(report)
    except ValueError:
        return {}
    return verdict if isinstance(verdict, dict) else {}


def _outcome(verdict: dict[str, Any], candidate_end: tuple[int, bool],
             checker_end: tuple[int, bool]) -> Execution:
    """The verdict, or why there was none: each end is (exit status, killed by the memory
    cgroup)."""
    if verdict.get("passed") is True:
        return Execution("passed")
    for (returncode, out_of_memory), role in ((candidate_end, ""), (checker_end, " (checker)")):
        if signal_of(returncode) == signal.SIGXCPU:
            return Execution("timed out", f"cpu time limit{role}")
        if out_of_memory:
            return Execution("failed", f"memory limit{role}")
    if "detail" not in verdict:
        return Execution("failed", f"the checker ended without a verdict "
                                   f"(exit status {checker_end[0]})")
    return Execution("failed", str(verdict["detail"]))
