"""Executors: how a plan's jobs run. `local` (the default) runs them in this process when it
has one slot, else as a pool of subprocesses, each job with the GPUs it needs
(CUDA_VISIBLE_DEVICES), its own log, a timeout and retries; `ray` and `slurm` hand the same
jobs to those engines. Executors are plugins (`harness_executors`), so a third party can
add another.

A job leaves the parent as a job spec (JSON): the row's method, models, options and label,
its tasks, the run settings, the plugin switches, and the fingerprints of its cells. The
worker (`harness _job SPEC`, or a Ray task, or a Slurm job) plans the same cells again,
refuses to run if any fingerprint differs (the code or data changed meanwhile), runs them
with `runner.run_job` into the shared --results folder, and writes its outcomes beside the
spec. Cells are claimed through their lock files wherever they run, so every executor
resumes exactly like a local run and never computes a cell twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.contract import CellOutcome, ExecutionContext, Job, Plan, options_to_dict
from harness.errors import HarnessError
from harness.files import atomic_write_text
from harness.host import Host, load_host
from harness.options import build_options
from harness.results.store import Store
from harness.run import progress
from harness.run.cell import record_failure
from harness.run.jobs import run_job
from harness.run.plan import plan_cells
from harness.run.request import resolve
from harness.settings import RunRequest, SuiteMethod, SuiteTask

# ----------------------------------------------------------------------------- job specs


def job_id(job: Job) -> str:
    more = f"+{len(job.cells) - 1}" if len(job.cells) > 1 else ""
    shard = f"-{job.shard[0]}of{job.shard[1]}" if job.shard else ""
    return job.cells[0].fingerprint[:12] + more + shard


def job_models(job: Job) -> tuple[str, ...]:
    """The job's base models: a worker that last loaded them has them in its model memo."""
    return tuple(f"{ref.id}@{ref.revision}:{ref.dtype}" for ref in job.cells[0].row.models)


def job_spec(job: Job, switches: list[str], force: bool) -> dict[str, Any]:
    """A job as plain data a worker process can plan again."""
    row = job.cells[0].row
    settings = job.cells[0].settings
    return {
        "id": job_id(job),
        "switches": list(switches),
        "force": force,
        "method": {"method": row.spec.name,
                   "models": [m.id + (f"@{m.revision}" if m.revision != "main" else "")
                              for m in row.models],
                   "options": options_to_dict(row.options), "label": row.label},
        "tasks": [{"task": c.task, "options": options_to_dict(c.column.options)}
                  for c in job.cells],
        "settings": dataclasses.asdict(settings),
        "fingerprints": [c.fingerprint for c in job.cells],
        "shard": list(job.shard) if job.shard else None,
    }


def run_job_spec(spec: dict[str, Any], capture_logs: bool = True, host: Host | None = None
                 ) -> list[dict[str, Any]]:
    """A worker's side: plan the job's cells again, check their fingerprints, run them
    (`host`: the spec's plugins, already loaded). Returns plain outcomes ({fingerprint,
    status, error, headline})."""
    host = host or load_host(spec["switches"])
    request = RunRequest([build_options(SuiteMethod, spec["method"], f"job {spec['id']}")],
                         [build_options(SuiteTask, entry, f"job {spec['id']}")
                          for entry in spec["tasks"]], spec["settings"])
    rows, columns, settings = resolve(host, request)  # exactly as the parent resolved it
    plan = plan_cells(host, rows, columns, settings, Store(Path(settings.results)),
                      force=spec["force"])
    by_fingerprint = {c.fingerprint: c for c in plan.cells}
    changed = [fp[:12] for fp in spec["fingerprints"] if fp not in by_fingerprint]
    if changed:
        raise HarnessError(f"job {spec['id']}: cell(s) {', '.join(changed)} plan differently "
                           f"here (code, data or libraries changed since the run was planned)")
    pending = [by_fingerprint[fp] for fp in spec["fingerprints"]
               if by_fingerprint[fp].state == "pending"]
    shard = tuple(spec["shard"]) if spec.get("shard") else None
    outcomes = run_job(host, plan, Job(pending, shard), capture_logs) if pending else []
    return [{"fingerprint": o.cell.fingerprint, "status": o.status, "error": o.error,
             "headline": o.headline} for o in outcomes]


def outcomes_from(job: Job, plain: list[dict[str, Any]]) -> list[CellOutcome]:
    """The parent's CellOutcomes for a job, from the plain outcomes its worker wrote."""
    by_fingerprint = {c.fingerprint: c for c in job.cells}
    outcomes = []
    for entry in plain:
        outcomes.append(CellOutcome(by_fingerprint[entry["fingerprint"]], entry["status"],
                                    None, entry.get("headline"), entry.get("error", "")))
    return outcomes


def record_lost_cells(plan: Plan, job: Job, outcomes: list[CellOutcome], why: str
                      ) -> list[CellOutcome]:
    """Cells of a job whose worker died before reporting them are failures (retried by the
    next run), unless another process has finished them."""
    seen = {id(o.cell) for o in outcomes}
    for cell in job.cells:
        if id(cell) in seen:
            continue
        if plan.store.is_done(cell.method, cell.task, cell.fingerprint):
            outcomes.append(CellOutcome(cell, "skipped"))
        else:
            outcomes.append(record_failure(plan.store, cell, why, ""))
    return outcomes


def worker_main(spec_path: Path, capture_logs: bool) -> int:
    """`harness _job SPEC`: run one job spec, write its outcomes beside it."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    # the worker's output is its job log, a file: secrets are redacted before they reach it
    with progress.redacted_descriptors(os.fdopen(os.dup(1), "wb")):
        outcomes = run_job_spec(spec, capture_logs)
    return write_outcomes(Path(spec_path), outcomes)


def write_outcomes(spec_path: Path, outcomes: list[dict[str, Any]]) -> int:
    """A job's plain outcomes beside its spec; returns the job's exit status (1: a cell
    failed)."""
    atomic_write_text(spec_path.with_suffix(".outcomes.json"), json.dumps(outcomes))
    return 1 if any(o["status"] == "failed" for o in outcomes) else 0


def switch_args(switches: list[str]) -> list[str]:
    """The `-p` switches as command-line arguments for a worker."""
    return [arg for switch in switches for arg in ("-p", switch)]


def write_job_spec(ctx: ExecutionContext, job: Job) -> Path:
    """The job's spec under <out>/jobs/ (its log and outcomes go beside it)."""
    path = ctx.folder / f"{job_id(job)}.json"
    atomic_write_text(path, json.dumps(job_spec(job, ctx.switches, ctx.plan.force), indent=1))
    path.with_suffix(".outcomes.json").unlink(missing_ok=True)
    return path


def worker_command(ctx: ExecutionContext, spec_path: Path) -> list[str]:
    """The command that runs one job spec: `harness [-p ...] [-v] _job SPEC`."""
    return [sys.executable, "-m", "harness.cli", *switch_args(ctx.switches),
            *([] if ctx.capture_logs else ["-v"]), "_job", str(spec_path)]


TIMED_OUT = 124  # the exit status of a worker stopped at its timeout (as timeout(1) uses)


def run_worker(command: list[str], log_path: str, timeout_s: float | None) -> int:
    """Run a job's worker command to its end or its timeout, output into its log; where an
    engine (Ray, Slurm) starts the job, this runs on the engine's worker."""
    import subprocess

    with open(log_path, "ab") as log:
        try:
            return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            return TIMED_OUT


def exit_reason(ctx: ExecutionContext, code: int) -> str:
    return (f"job timed out after {ctx.timeout_s:g} s" if code == TIMED_OUT
            else f"job exited with status {code}")


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    try:
        plain = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return plain if isinstance(plain, list) else []


def finish_job(ctx: ExecutionContext, job: Job, spec_path: Path, why: str) -> list[CellOutcome]:
    """A worker ended: its cells' outcomes, the ones it never reported recorded as failed
    with `why`, announced to the lifecycle hooks."""
    finished = outcomes_from(job, read_outcomes(spec_path.with_suffix(".outcomes.json")))
    finished = record_lost_cells(ctx.plan, job, finished,
                                 f"{why} (log: {spec_path.with_suffix('.log')})")
    ctx.finished_elsewhere(finished)
    return finished
