"""The local executor: this process when there is one slot and no GPU to share, else a
pool of long-lived worker processes (harness.run.executors.worker) that take job after job,
each job with the GPUs it needs, its own log under <out>/jobs/, a timeout and retries;
Ctrl-C stops every worker."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job
from harness.run.executors import TIMED_OUT, finish_job, job_models, write_job_spec
from harness.run.executors.worker import default_memo_bytes
from harness.run.jobs import run_job

# Bytes of GPU memory per parameter, by dtype, with room for activations and caches.
BYTES_PER_PARAMETER = {"float32": 4, "bfloat16": 2, "float16": 2}
ACTIVATION_HEADROOM = 1.3

# ----------------------------------------------------------------------------- GPUs


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES, else every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def gpus_needed(job: Job, gpu_memory_bytes: float | None) -> int:
    """GPUs a job needs: the method's declaration, else its models' weights (from their
    files, in the dtype they load in) against one GPU's memory; at least one."""
    spec = job.cells[0].row.spec
    if spec.gpus is not None:
        return spec.gpus
    if not gpu_memory_bytes:
        return 1
    need = sum(_weight_bytes(ref) for ref in job.cells[0].row.models) * ACTIVATION_HEADROOM
    return max(1, math.ceil(need / gpu_memory_bytes))


def _weight_bytes(ref: Any) -> float:
    """Bytes of a model's weights once loaded: the safetensors/bin sizes of a local folder
    rescaled to the load dtype (hub and zoo models: unknown here, counted as 0)."""
    folder = Path(ref.id).expanduser()
    if not folder.is_dir():
        return 0.0
    stored = sum(p.stat().st_size for p in folder.iterdir()
                 if p.suffix in (".safetensors", ".bin"))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    stored_dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    ratio = BYTES_PER_PARAMETER.get(ref.resolved_dtype, 4) / BYTES_PER_PARAMETER.get(stored_dtype, 4)
    return stored * ratio


def _gpu_memory() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory)
    except ImportError:
        pass
    return None


# ----------------------------------------------------------------------------- local


def run_local(ctx: ExecutionContext) -> list[CellOutcome]:
    """One slot: every job here, in order (the live display follows each cell). More
    slots: a pool of long-lived worker processes, each job with the GPUs it needs."""
    if ctx.slots <= 1 and len(ctx.gpus) <= 1:
        return [o for job in ctx.jobs for o in run_job(ctx.host, ctx.plan, job, ctx.capture_logs)]
    return _Pool(ctx).run()


class WorkerProcess:
    """A long-lived worker (harness.run.executors.worker) seeing `gpus`, in a session of its
    own so that a timeout or Ctrl-C stops it and whatever it started."""

    def __init__(self, gpus: tuple[str, ...], memo_bytes: int, log: Path) -> None:
        self.gpus = gpus
        self.models: tuple[str, ...] = ()  # the base models of its latest job
        # an empty CUDA_VISIBLE_DEVICES hides every GPU from a worker that needs none
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.run.executors.worker", "--memo-bytes",
                 str(memo_bytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, env=env, start_new_session=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests, self.replies = self.process.stdin, self.process.stdout

    def send(self, spec_path: Path, capture_logs: bool) -> bool:
        """Hand it a job; False when it has died."""
        line = json.dumps({"spec": str(spec_path), "capture_logs": capture_logs}) + "\n"
        try:
            self.requests.write(line.encode())
            self.requests.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def reply(self) -> int:
        """The finished job's exit status (call when `replies` is readable); a worker that
        died answers with its own exit status."""
        line = self.replies.readline()
        try:
            return int(json.loads(line)["code"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            return self.process.returncode

    def close(self) -> None:
        """End of its input: it exits after its current job (none, when this is called)."""
        close_all([self])

    def stop(self) -> None:
        _kill(self.process)
        for pipe in (self.requests, self.replies):
            with contextlib.suppress(OSError, ValueError):  # a broken pipe's last flush
                pipe.close()


def close_all(workers: list[WorkerProcess], grace_s: float = 10.0) -> None:
    """Close idle workers' input, then wait for all of them together (each exits at once;
    a worker still alive after `grace_s` is stopped)."""
    for worker in workers:
        with contextlib.suppress(OSError, ValueError):
            worker.requests.close()
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.stop()
        worker.replies.close()


@dataclass
class _Running:
    job: Job
    worker: WorkerProcess
    started: float
    attempt: int
    spec_path: Path


class _Pool:
    """At most `slots` workers, each running one job at a time. A worker is kept for the
    next job while its GPUs suit it; a job prefers an idle worker that last loaded the same
    base models (its model memo has them). A worker that dies or times out takes only its
    current job with it and is replaced on demand."""

    def __init__(self, ctx: ExecutionContext) -> None:
        self.ctx = ctx
        memory = _gpu_memory() if ctx.gpus else None
        self.needs = {id(job): (min(gpus_needed(job, memory), len(ctx.gpus)) if ctx.gpus else 0)
                      for job in ctx.jobs}
        self.queue = [(job, 1) for job in ctx.jobs]
        self.idle: list[WorkerProcess] = []
        self.running: list[_Running] = []
        self.outcomes: list[CellOutcome] = []
        self.memo_bytes = default_memo_bytes(max(1, ctx.slots))
        ctx.folder.mkdir(parents=True, exist_ok=True)

    def run(self) -> list[CellOutcome]:
        try:
            while self.queue or self.running:
                self._start_what_fits()
                self._collect()
        except BaseException:
            self._stop_all()
            raise
        close_all(self.idle)
        return self.outcomes

    def _start_what_fits(self) -> None:
        while self.queue and len(self.running) < max(1, self.ctx.slots):
            job, attempt = self.queue[0]
            worker = self._worker_for(job, self.needs[id(job)])
            if worker is None:
                return  # the next job waits for GPUs (jobs run in order)
            self.queue.pop(0)
            spec_path = write_job_spec(self.ctx, job)
            worker.models = job_models(job)
            if worker.send(spec_path, self.ctx.capture_logs):
                self.running.append(_Running(job, worker, time.monotonic(), attempt, spec_path))
            else:  # died idle: the job goes back to the front, to a new worker
                worker.close()
                self.queue.insert(0, (job, attempt))

    def _worker_for(self, job: Job, need: int) -> WorkerProcess | None:
        """An idle worker that sees the GPUs the job gets, else a new one (idle workers
        holding those GPUs, or a slot, make way); None while the GPUs are busy."""
        busy = {gpu for running in self.running for gpu in running.worker.gpus}
        free = [gpu for gpu in self.ctx.gpus if gpu not in busy]
        if need > len(free):
            return None
        suitable = [w for w in self.idle if len(w.gpus) == need and set(w.gpus) <= set(free)]
        if suitable:
            worker = next((w for w in suitable if w.models == job_models(job)), suitable[0])
            self.idle.remove(worker)
            return worker
        gpus = tuple(free[:need])
        for worker in [w for w in self.idle if set(w.gpus) & set(gpus)]:
            self._retire(worker)
        while self.idle and len(self.idle) + len(self.running) >= max(1, self.ctx.slots):
            self._retire(self.idle[0])
        return WorkerProcess(gpus, self.memo_bytes, self.ctx.folder / "workers.log")

    def _retire(self, worker: WorkerProcess) -> None:
        self.idle.remove(worker)
        worker.close()

    def _collect(self) -> None:
        readable = {running.worker.replies: running for running in self.running}
        ready, _, _ = select.select(list(readable), [], [], 0.2)
        for replies in ready:
            running = readable[replies]
            self._finished(running, running.worker.reply(), timed_out=False)
        for running in list(self.running):
            if (self.ctx.timeout_s is not None
                    and time.monotonic() - running.started > self.ctx.timeout_s):
                running.worker.stop()
                self._finished(running, TIMED_OUT, timed_out=True)

    def _finished(self, running: _Running, code: int, timed_out: bool) -> None:
        self.running.remove(running)
        worker = running.worker
        if worker.process.poll() is None:
            self.idle.append(worker)
        else:
            worker.close()
        if (timed_out or code != 0) and running.attempt <= self.ctx.retries:
            self.queue.insert(0, (running.job, running.attempt + 1))
            return
        why = (f"job timed out after {self.ctx.timeout_s:g} s" if timed_out
               else f"job exited with status {code}")
        self.outcomes += finish_job(self.ctx, running.job, running.spec_path, why)

    def _stop_all(self) -> None:
        """Ctrl-C: every worker dies; what they had not committed is simply not there."""
        for worker in [*self.idle, *(running.worker for running in self.running)]:
            worker.stop()


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
