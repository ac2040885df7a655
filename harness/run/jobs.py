"""Running a plan: pending cells grouped into jobs (cells that share one built LM), each job
run in this process or handed to an executor, every cell's outcome recorded."""

from __future__ import annotations

import contextlib
from typing import Callable

from harness.contract import Cell, CellOutcome, Job, Plan, PluginHost
from harness.results.store import Store
from harness.run.cell import base_record, record_failure
from harness.run.plan import plan_entries
from harness.run.row import run_cells


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
    """The job's cells in this process on one built LM (harness.run.row).

    Every cell is claimed before any runs, so jobs shared out to several processes compute
    every cell once.
    """
    if job.shard is not None:
        from harness.run.shards import run_shard

        return run_shard(host, plan, job, capture_logs)
    outcomes: dict[int, CellOutcome] = {}
    with contextlib.ExitStack() as claims:
        mine = []
        for cell in job.cells:
            holder = claims.enter_context(plan.store.claim(cell.fingerprint))
            if holder is not None:
                outcome = CellOutcome(cell, "busy", error=f"running in process {holder}")
            elif not plan.force and plan.store.is_done(cell.method, cell.task, cell.fingerprint):
                # another process finished it between our plan and our claim
                outcome = CellOutcome(cell, "skipped", plan.store.cell_dir(
                    cell.method, cell.task, cell.fingerprint))
            else:
                mine.append(cell)
                continue
            host.hook.harness_cell_finished(cell=cell, outcome=outcome)
            outcomes[id(cell)] = outcome
        for cell, outcome in zip(mine, run_cells(host, plan.store, mine, capture_logs,
                                                        plan.force)):
            outcomes[id(cell)] = outcome
    return [outcomes[id(cell)] for cell in job.cells]


def _record_not_applicable(store: Store, cell: Cell) -> CellOutcome:
    path = store.commit_cell(base_record(cell, "n/a", cell.reason), [])
    return CellOutcome(cell, "n/a", path)
