"""The Ray executor: each job is a Ray task holding the GPUs the job needs; the task runs
the job's worker (`harness _job SPEC`, as the local pool does) with Ray's
CUDA_VISIBLE_DEVICES, so timeouts, logs and results are those of a local run. Every node
must see the --out folder (a shared filesystem) and have the harness installed.

`ray.init` connects to the cluster named by RAY_ADDRESS, or starts a local instance.
"""

from __future__ import annotations

import os
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job
from harness.errors import UsageError, first_line
from harness.run.executors import (exit_reason, finish_job, job_id, run_worker, worker_command,
                                   write_job_spec)

# Variables a worker needs to find the same plugins, caches and offline settings.
FORWARDED_PREFIXES = ("HARNESS_", "HF_", "TRANSFORMERS_", "PYTHONPATH", "TOKENIZERS_")


def run_ray(ctx: ExecutionContext) -> list[CellOutcome]:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'harness[ray]'") from None
    environment = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": environment},
                 ignore_reinit_error=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    worker = ray.remote(run_worker)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    attempts: dict[Any, tuple[Job, int]] = {}

    def submit(job: Job, attempt: int) -> None:
        spec_path = write_job_spec(ctx, job)
        reference = worker.options(num_gpus=gpus, num_cpus=1).remote(
            worker_command(ctx, spec_path), str(spec_path.with_suffix(".log")), ctx.timeout_s)
        attempts[reference] = (job, attempt)

    for job in ctx.jobs:
        submit(job, 1)
    outcomes: list[CellOutcome] = []
    try:
        while attempts:
            [done], _ = ray.wait(list(attempts), num_returns=1)
            job, attempt = attempts.pop(done)
            try:
                code = ray.get(done)
                why = exit_reason(ctx, code)
            except Exception as exc:  # the task itself died (a node lost, a worker killed)
                code, why = -1, f"ray task failed: {first_line(exc)}"
            if code != 0 and attempt <= ctx.retries:
                submit(job, attempt + 1)
                continue
            outcomes += finish_job(ctx, job, ctx.folder / f"{job_id(job)}.json", why)
    except BaseException:
        for reference in attempts:
            ray.cancel(reference, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return outcomes

