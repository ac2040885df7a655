"""Running a plan: pending cells grouped into jobs (cells that share one built LM), each job
run in this process or handed to an executor, every cell's outcome recorded."""

from __future__ import annotations

import traceback
from typing import Callable

from harness.contract import Cell, CellOutcome, Job, Plan, PluginHost
from harness.errors import HarnessError, first_line
from harness.results.store import Store
from harness.run import progress
from harness.run.cell import BuildError, BuiltLM, base_record, evaluate_cell, record_failure
from harness.run.plan import plan_entries


def make_jobs(cells: list[Cell], group: bool = True, doc_shards: int = 1) -> list[Job]:
    """Pending cells grouped into jobs (`group=False`: one cell per job); with
    `doc_shards` > 1, each cell's documents split over that many jobs (harness.run.shards)."""
    if doc_shards > 1:
        return [Job([cell], (index, doc_shards)) for cell in cells if cell.state == "pending"
                for index in range(doc_shards)]
    jobs: dict[str, Job] = {}
    for cell in cells:
        if cell.state != "pending":
            continue
        spec = cell.row.spec
        shared = group and spec.training is None and spec.reuse_across_tasks
        # one job per seed too: a job's cells share its settings (workers plan them again)
        key = f"{cell.row.key}@{cell.settings.seed}" if shared else cell.fingerprint
        jobs.setdefault(key, Job([])).cells.append(cell)
    return list(jobs.values())


Executor = Callable[[list[Job]], list[CellOutcome]]


def run_plan(host: PluginHost, plan: Plan, capture_logs: bool = True,
             executor: Executor | None = None, group: bool = True) -> list[CellOutcome]:
    """Record the plan's done, n/a and refused cells, then run its pending cells as jobs
    (`executor`; by default in this process, one job after another). A failing cell
    never stops the others.

    With `capture_logs`, what libraries print while a cell runs goes into the cell's
    log.txt instead of the terminal.
    """
    plan.store.tidy()  # what killed runs left: dead locks, temporaries, finished cells' scratch
    plan.store.quarantine_failures()
    plan.store.write_plan(plan_entries(plan))
    host.hook.harness_run_started(plan=plan)
    outcomes: dict[int, CellOutcome] = {}
    for cell in plan.cells:
        if cell.state == "done":
            outcome = CellOutcome(cell, "skipped",
                                  plan.store.cell_dir(cell.method, cell.task, cell.fingerprint))
        elif cell.state == "n/a":
            if plan.store.is_done(cell.method, cell.task, cell.fingerprint):
                continue  # recorded by an earlier run
            outcome = _record_not_applicable(plan.store, cell)
        elif cell.state == "error":
            outcome = record_failure(plan.store, cell, cell.reason, "")
        elif cell.state == "unavailable":
            outcome = CellOutcome(cell, "unavailable", error=cell.reason)
        else:
            continue
        host.hook.harness_cell_finished(cell=cell, outcome=outcome)
        outcomes[id(cell)] = outcome
    jobs = make_jobs(plan.cells, group, plan.cells[0].settings.doc_shards if plan.cells else 1)
    if executor is None:
        results = [o for job in jobs for o in run_job(host, plan, job, capture_logs)]
    else:
        results = executor(jobs)
    for outcome in results:  # a cell's merge (or failure) outranks its shards' outcomes
        if outcome.status != "shard" or id(outcome.cell) not in outcomes:
            outcomes[id(outcome.cell)] = outcome
    ordered = [outcomes[id(c)] for c in plan.cells if id(c) in outcomes]
    host.hook.harness_run_finished(plan=plan, outcomes=ordered)
    return ordered


def run_job(host: PluginHost, plan: Plan, job: Job, capture_logs: bool = True) -> list[CellOutcome]:
    """The job's cells in this process, its LM built at the first cell that needs it.

    Each cell is claimed before it runs, so jobs shared out to several processes compute
    every cell once.
    """
    if job.shard is not None:
        from harness.run.shards import run_shard

        return run_shard(host, plan, job, capture_logs)
    built: BuiltLM | None = None
    build_error: tuple[str, str] | None = None
    outcomes = []
    for cell in job.cells:
        with plan.store.claim(cell.fingerprint) as holder:
            if holder is not None:
                outcome = CellOutcome(cell, "busy", error=f"running in process {holder}")
            elif not plan.force and plan.store.is_done(cell.method, cell.task, cell.fingerprint):
                # another process finished it between our plan and our claim
                outcome = CellOutcome(cell, "skipped", plan.store.cell_dir(
                    cell.method, cell.task, cell.fingerprint))
            elif build_error is not None:
                outcome = record_failure(plan.store, cell, *build_error)
            else:
                host.hook.harness_cell_started(cell=cell)
                outcome, built, build_error = _run_cell(plan.store, cell, capture_logs,
                                                        built, keep=len(job.cells) > 1)
        host.hook.harness_cell_finished(cell=cell, outcome=outcome)
        outcomes.append(outcome)
    return outcomes


def _record_not_applicable(store: Store, cell: Cell) -> CellOutcome:
    path = store.commit_cell(base_record(cell, "n/a", cell.reason), [])
    return CellOutcome(cell, "n/a", path)


def _run_cell(store: Store, cell: Cell, capture_logs: bool, built: BuiltLM | None = None,
              keep: bool = False
              ) -> tuple[CellOutcome, BuiltLM | None, tuple[str, str] | None]:
    """Evaluate and record one claimed cell. Returns its outcome, the LM to reuse for the
    job's next cells (with `keep`), and the build's error when the LM could not be built."""
    workdir = store.workdir(cell.fingerprint)
    log = workdir / "log.txt"
    try:
        with progress.captured_output(log if capture_logs else None):
            record, samples, built = evaluate_cell(cell, workdir, store, built, keep)
    except Exception as exc:  # a plugin bug must not take the matrix down
        cause = exc.__cause__ if isinstance(exc, BuildError) and exc.__cause__ else exc
        message = (str(cause) if isinstance(cause, HarnessError)
                   else f"{type(cause).__name__}: {first_line(cause)}")
        trace = traceback.format_exc()
        build_error = (message, trace) if isinstance(exc, BuildError) else None
        return record_failure(store, cell, message, trace, log), None, build_error
    if not record.has_score:  # kept whole (metrics, details, samples), but not done
        reason = (record.score_details.headline_unavailable
                  or f"no {record.task.headline_key} could be computed (NaN)")
        record.status, record.reason = "failed", f"no score: {reason}"
        store.record_failure(record, log, samples)
        return CellOutcome(cell, "failed", error=record.reason), built, None
    path = store.commit_cell(record, samples, log if capture_logs else None)
    headline = record.headline.value if record.headline else None
    return CellOutcome(cell, "ok", path, headline), built, None
