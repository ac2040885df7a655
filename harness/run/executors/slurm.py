"""The Slurm executor, through submitit: the jobs form one job array with at most --jobs
running at once, each array task holding the GPUs its job needs and running the job's
worker (`harness _job SPEC`), one process per job. Ctrl-C cancels the array. The nodes
must see the --results folder and have the harness installed.

Slurm keeps one process per job where the local pool and Ray keep long-lived workers:
each array task is an allocation of its own, queued, placed, time-limited and accounted
by Slurm, so a worker that took job after job would hold its allocation (and GPUs) while
it waits for the next, bypass the queue's fair share and backfill, and outlive the time
limit Slurm set for one job; the start-up it saves (seconds) is small next to a queue's
wait and a real cell's minutes.

Slurm parameters come from HARNESS_SLURM_* variables (HARNESS_SLURM_PARTITION=gpu,
HARNESS_SLURM_ACCOUNT=...); HARNESS_SUBMITIT_CLUSTER=local runs the same array with
submitit's local executor (tests, a workstation).
"""

from __future__ import annotations

import math
import os
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job
from harness.errors import UsageError, first_line
from harness.run.executors import (exit_reason, finish_job, run_worker, worker_command,
                                   write_job_spec)

SLURM_VARIABLE_PREFIX = "HARNESS_SLURM_"
DEFAULT_TIMEOUT_MIN = 24 * 60


def _executor(ctx: ExecutionContext, gpus: int) -> Any:
    try:
        import submitit
    except ImportError:
        raise UsageError("the slurm executor needs submitit: pip install 'harness[slurm]'") from None
    executor = submitit.AutoExecutor(folder=ctx.folder / "submitit",
                                     cluster=os.environ.get("HARNESS_SUBMITIT_CLUSTER") or None)
    timeout_min = math.ceil(ctx.timeout_s / 60) + 1 if ctx.timeout_s else DEFAULT_TIMEOUT_MIN
    slurm = {f"slurm_{k[len(SLURM_VARIABLE_PREFIX):].lower()}": v
             for k, v in os.environ.items() if k.startswith(SLURM_VARIABLE_PREFIX)}
    executor.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus, cpus_per_task=1,
                               slurm_array_parallelism=max(1, ctx.slots), **slurm)
    return executor


def run_slurm(ctx: ExecutionContext) -> list[CellOutcome]:
    ctx.folder.mkdir(parents=True, exist_ok=True)
    executor = _executor(ctx, gpus=1 if ctx.gpus else 0)
    pending = [(job, 1) for job in ctx.jobs]
    outcomes: list[CellOutcome] = []
    submitted: list[tuple[Job, int, Any]] = []
    try:
        while pending:
            specs = [write_job_spec(ctx, job) for job, _ in pending]
            with executor.batch():
                handles = [executor.submit(run_worker, worker_command(ctx, spec),
                                           str(spec.with_suffix(".log")), ctx.timeout_s)
                           for spec in specs]
            submitted = [(job, attempt, handle)
                         for (job, attempt), handle in zip(pending, handles)]
            pending = []
            for (job, attempt, handle), spec in zip(submitted, specs):
                try:
                    code = handle.result()
                    why = exit_reason(ctx, code)
                except Exception as exc:  # the array task died (node failure, preemption)
                    code, why = -1, f"slurm job failed: {first_line(exc)}"
                if code != 0 and attempt <= ctx.retries:
                    pending.append((job, attempt + 1))
                    continue
                outcomes += finish_job(ctx, job, spec, why)
            submitted = []
    except BaseException:
        for _, _, handle in submitted:
            handle.cancel(check=False)
        raise
    return outcomes
