"""The local executor: this process when there is one slot and no GPU to share, else a
pool of worker processes (`harness _job SPEC`), each job with the GPUs it needs, its own
log under <out>/jobs/, a timeout and retries; Ctrl-C stops every worker."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job
from harness.run.executors import finish_job, worker_command, write_job_spec
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


@dataclass
class _Running:
    job: Job
    process: subprocess.Popen[bytes]
    gpus: list[str]
    started: float
    attempt: int
    spec_path: Path


def run_local(ctx: ExecutionContext) -> list[CellOutcome]:
    """One slot: every job here, in order (the live display follows each cell). More
    slots: a pool of worker processes, each job with the GPUs it needs."""
    if ctx.slots <= 1 and len(ctx.gpus) <= 1:
        return [o for job in ctx.jobs for o in run_job(ctx.host, ctx.plan, job, ctx.capture_logs)]
    return _Pool(ctx).run()


class _Pool:
    def __init__(self, ctx: ExecutionContext) -> None:
        self.ctx = ctx
        self.free_gpus = list(ctx.gpus)
        memory = _gpu_memory() if ctx.gpus else None
        self.needs = {id(job): (min(gpus_needed(job, memory), len(ctx.gpus)) if ctx.gpus else 0)
                      for job in ctx.jobs}
        self.queue = [(job, 1) for job in ctx.jobs]
        self.running: list[_Running] = []
        self.outcomes: list[CellOutcome] = []
        ctx.folder.mkdir(parents=True, exist_ok=True)

    def run(self) -> list[CellOutcome]:
        try:
            while self.queue or self.running:
                self._start_what_fits()
                time.sleep(0.2)
                self._collect()
        except BaseException:
            self._stop_all()
            raise
        return self.outcomes

    def _start_what_fits(self) -> None:
        while self.queue and len(self.running) < max(1, self.ctx.slots):
            job, attempt = self.queue[0]
            need = self.needs[id(job)]
            if need > len(self.free_gpus):
                return  # the next job waits for GPUs (jobs run in order)
            self.queue.pop(0)
            gpus, self.free_gpus = self.free_gpus[:need], self.free_gpus[need:]
            self.running.append(self._start(job, attempt, gpus))

    def _start(self, job: Job, attempt: int, gpus: list[str]) -> _Running:
        spec_path = write_job_spec(self.ctx, job)
        # an empty CUDA_VISIBLE_DEVICES hides every GPU from a job that needs none
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
        with open(spec_path.with_suffix(".log"), "ab") as log:
            process = subprocess.Popen(worker_command(self.ctx, spec_path), stdout=log,
                                       stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        return _Running(job, process, gpus, time.monotonic(), attempt, spec_path)

    def _collect(self) -> None:
        for running in list(self.running):
            timed_out = (self.ctx.timeout_s is not None
                         and time.monotonic() - running.started > self.ctx.timeout_s)
            if timed_out:
                _kill(running.process)
            code = running.process.poll()
            if code is None:
                continue
            self.running.remove(running)
            self.free_gpus += running.gpus
            if (timed_out or code != 0) and running.attempt <= self.ctx.retries:
                self.queue.insert(0, (running.job, running.attempt + 1))
                continue
            why = (f"job timed out after {self.ctx.timeout_s:g} s" if timed_out
                   else f"job exited with status {code}")
            self.outcomes += finish_job(self.ctx, running.job, running.spec_path, why)

    def _stop_all(self) -> None:
        """Ctrl-C: every worker dies; what they had not committed is simply not there."""
        for running in self.running:
            _kill(running.process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
