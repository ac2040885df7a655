"""The Ray executor: a set of long-lived Ray actors (harness.run.executors.worker), each
holding one CPU (and a GPU when the cluster has them) and taking job after job in its own
process, with the same logs, outcomes, timeouts and retries as the local pool. An actor
that dies (a node lost, an out-of-memory kill) or outlives --job-timeout takes only its
current job with it and is replaced. Every node must see the --results folder (a shared
filesystem) and have the harness installed.

`ray.init` connects to the cluster named by RAY_ADDRESS, or starts a local instance with
at least --jobs CPUs (so --jobs means the same here as for the local pool). There are
--jobs actors, or with --jobs 1 (the default) one per CPU (GPU) of the cluster.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job
from harness.errors import UsageError, first_line
from harness.run.executors import TIMED_OUT, exit_reason, finish_job, job_models, write_job_spec
from harness.run.executors.worker import JobActor, default_memo_bytes

# Variables a worker needs to find the same plugins, caches and offline settings.
FORWARDED_PREFIXES = ("HARNESS_", "HF_", "TRANSFORMERS_", "PYTHONPATH", "TOKENIZERS_")


@dataclass
class _Actor:
    handle: Any
    models: tuple[str, ...] = ()  # the base models of its latest job


@dataclass
class _Running:
    job: Job
    actor: _Actor
    started: float
    attempt: int
    spec_path: Path


def run_ray(ctx: ExecutionContext) -> list[CellOutcome]:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'harness[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS") or None
        cpus = None if address else max(os.cpu_count() or 1, ctx.slots)
        # a local instance's workers inherit this process's environment; a cluster's are
        # given the variables that matter (a runtime environment makes Ray start each worker
        # through a setup process, seconds of start-up that a local instance need not pay)
        environment = ({"env_vars": {k: v for k, v in os.environ.items()
                                     if k.startswith(FORWARDED_PREFIXES)}} if address else None)
        ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=environment, ignore_reinit_error=True)
    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) > 0 else 0
    capacity = int(resources.get("GPU" if gpus else "CPU", 1))
    count = max(1, min(len(ctx.jobs), ctx.slots if ctx.slots > 1 else capacity))
    memo_bytes = default_memo_bytes(count)
    actor_class = ray.remote(num_cpus=1, num_gpus=gpus)(JobActor)
    ctx.folder.mkdir(parents=True, exist_ok=True)
    idle = [_Actor(actor_class.remote(memo_bytes)) for _ in range(count)]
    running: dict[Any, _Running] = {}
    queue = [(job, 1) for job in ctx.jobs]
    outcomes: list[CellOutcome] = []

    def settle(done: _Running, code: int, why: str) -> None:
        if code != 0 and done.attempt <= ctx.retries:
            queue.insert(0, (done.job, done.attempt + 1))
        else:
            outcomes.extend(finish_job(ctx, done.job, done.spec_path, why))

    def replace(actor: _Actor) -> None:
        ray.kill(actor.handle, no_restart=True)
        idle.append(_Actor(actor_class.remote(memo_bytes)))

    try:
        while queue or running:
            while queue and idle:
                job, attempt = queue.pop(0)
                models = job_models(job)
                actor = next((a for a in idle if a.models == models), idle[0])
                idle.remove(actor)
                actor.models = models
                spec_path = write_job_spec(ctx, job)
                reference = actor.handle.run.remote(str(spec_path), ctx.capture_logs)
                running[reference] = _Running(job, actor, time.monotonic(), attempt, spec_path)
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for reference in done:
                finished = running.pop(reference)
                try:
                    code = ray.get(reference)
                    why = exit_reason(ctx, code)
                    idle.append(finished.actor)
                except Exception as exc:  # the actor died (a node lost, a worker killed)
                    code, why = -1, f"ray worker died: {first_line(exc)}"
                    replace(finished.actor)
                settle(finished, code, why)
            for reference, late in list(running.items()):
                if ctx.timeout_s is not None and time.monotonic() - late.started > ctx.timeout_s:
                    del running[reference]
                    replace(late.actor)
                    settle(late, TIMED_OUT, exit_reason(ctx, TIMED_OUT))
    finally:  # Ctrl-C included: every actor stops; what it had not committed is not there
        for actor in [*idle, *(r.actor for r in running.values())]:
            ray.kill(actor.handle, no_restart=True)
        if started_here:
            ray.shutdown()
    return outcomes
