"""The host's executors, contributed through the `harness_executors` hook like a third-party
executor would be, and the lookup of an executor by name. Each executor's module (and Ray
or submitit behind it) is imported only when that executor runs."""

from __future__ import annotations

from harness import hookimpl
from harness.contract import CellOutcome, ExecutionContext, ExecutorSpec
from harness.errors import UsageError, did_you_mean
from harness.host import Host


def executor_named(host: Host, name: str) -> ExecutorSpec:
    executors = {e.name: e for group in host.pm.hook.harness_executors() for e in group}
    if name not in executors:
        raise UsageError(f"unknown executor {name!r}{did_you_mean(name, executors)}; "
                         f"known: {', '.join(sorted(executors))}")
    return executors[name]


def _run_local(ctx: ExecutionContext) -> list[CellOutcome]:
    from harness.run.executors.local import run_local

    return run_local(ctx)


def _run_ray(ctx: ExecutionContext) -> list[CellOutcome]:
    from harness.run.executors.ray import run_ray

    return run_ray(ctx)


def _run_slurm(ctx: ExecutionContext) -> list[CellOutcome]:
    from harness.run.executors.slurm import run_slurm

    return run_slurm(ctx)


@hookimpl
def harness_executors() -> list[ExecutorSpec]:
    return [
        ExecutorSpec("local", "this machine: in process with one slot, else a pool of worker "
                              "processes sharing the GPUs (--jobs, --gpus)", _run_local),
        ExecutorSpec("ray", "a Ray cluster (pip install harness[ray]): one Ray task per job "
                            "with the GPUs it needs", _run_ray),
        ExecutorSpec("slurm", "Slurm through submitit (pip install harness[slurm]): a job "
                              "array with a concurrency cap", _run_slurm),
    ]
