"""A job's claimed cells (one method row, one set of settings) on one built LM, their tasks
in one lm-eval evaluation where that cannot change a number.

The cells whose lm-eval plans agree on the chat template and unsafe-code consent (each
cell's few-shot count and generation settings are applied to its own tasks) are
evaluated by one `simple_evaluate` over all their tasks, as one lm-eval command with
several tasks is: one sorted pass over every request instead of one per task (fuller
batches, requests repeated across tasks answered once, prompt prefixes shared across
tasks), and evaluation set-up paid once. Each cell's tasks are loaded with its own plan
first, so the joint output splits back into exactly what the cell's own evaluation
returns (its tasks' and groups' samples, results, versions, few-shot counts); each cell is
then scored, recorded and committed on its own, with the fingerprint it has anyway, so
resuming is as exact as cell by cell.

Cells are evaluated together only when the LM is a plain lm-eval LM (a `HarnessLM` keeps
per-cell state), every task is scored by log-likelihood or greedy generation (sampling
would draw from torch's generator seeded once for all tasks instead of once per task), and
no two cells name the same lm-eval task or group. Everything else, and every cell of a
joint evaluation that raised, runs cell by cell as before, so a failing task never costs
the others their results.

The joint evaluation's inference work (tokens, passes, FLOPs) and wall time are split
over its cells in proportion to the size of their requests (characters of lm-eval's
request arguments), so a row's totals are what was spent; each such cell's timings say
how many cells shared the evaluation (`evaluated_with`). The build's work and time go to
the first cell recorded, as when cells run one by one. The records are saved together
before any is committed (and the file removed once all are), so a run killed between two
commits resumes to exactly the records the uninterrupted run commits
(tests/host/run/test_kill_points.py); one killed during the evaluation evaluates the same
cells together again, its answers (and their counted work) coming back from lm-eval's
response cache in the first cell's scratch folder.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

from harness.contract import Cell, CellOutcome, HarnessLM, PluginHost
from harness.errors import HarnessError, first_line
from harness.files import atomic_write_text, jsonl_text, remove_path
from harness.models import cost
from harness.results.records import CellRecord
from harness.results.store import Store, record_json
from harness.run import progress
from harness.run.cell import (BuildError, BuiltLM, SharedEvaluation, acquire_lm, build_context,
                              commit_evaluated, evaluate_cell, record_failure)
from harness.run.lm_eval_adapter import (answers_saved, evaluate_tasks, output_for,
                                         plan_task_manager, resolve_task_specs)


SAVED_RECORDS = "row-records.json"  # a joint evaluation's records, until all are committed


_Finished = tuple[Cell, CellRecord, list[dict[str, Any]]]  # a cell evaluated, to commit


@dataclass
class _Row:
    """What a job's cells share: the built LM, or why it could not be built."""

    built: BuiltLM | None = None
    build_error: tuple[str, str] | None = None


def run_cells(host: PluginHost, store: Store, cells: list[Cell], capture_logs: bool,
              force: bool = False) -> list[CellOutcome]:
    """Evaluate and record a job's claimed cells: together where sound, else one by one.
    A failing cell never stops the others. Unless `force`, records a killed run's joint
    evaluation saved are committed first."""
    row, keep = _Row(), len(cells) > 1
    outcomes = {} if force else _commit_saved(host, store, cells, capture_logs)
    remaining = [cell for cell in cells if id(cell) not in outcomes]
    for batch in _batches(remaining) if keep else [remaining]:
        if len(batch) > 1 and row.build_error is None:
            outcomes.update(_run_together(host, store, batch, capture_logs, row))
        for cell in batch:
            if id(cell) in outcomes:
                continue
            if row.build_error is not None:
                outcome = record_failure(store, cell, *row.build_error)
            else:
                host.hook.harness_cell_started(cell=cell)
                outcome, row.built, row.build_error = _run_cell(store, cell, capture_logs,
                                                               row.built, keep)
            host.hook.harness_cell_finished(cell=cell, outcome=outcome)
            outcomes[id(cell)] = outcome
    return [outcomes[id(cell)] for cell in cells]


def _run_cell(store: Store, cell: Cell, capture_logs: bool, built: BuiltLM | None = None,
             keep: bool = False
             ) -> tuple[CellOutcome, BuiltLM | None, tuple[str, str] | None]:
    """Evaluate and record one claimed cell. Returns its outcome, the LM to reuse for the
    job's next cells (with `keep`), and the build's error when the LM could not be built."""
    try:
        record, samples, built = _evaluated(store, cell, capture_logs, built, keep)
    except Exception as exc:  # a plugin bug must not take the matrix down
        outcome, build_error = _failed(store, cell, exc)
        return outcome, None, build_error
    log = store.log_path(cell.fingerprint)
    outcome = commit_evaluated(store, cell, record, samples, log if capture_logs else None)
    return outcome, built, None


def _evaluated(store: Store, cell: Cell, capture_logs: bool, built: BuiltLM | None,
               keep: bool = False, shared: SharedEvaluation | None = None
               ) -> tuple[CellRecord, list[dict[str, Any]], BuiltLM | None]:
    """`evaluate_cell` in the cell's scratch folder, what it prints in the cell's log."""
    with _captured(store, cell, capture_logs):
        return evaluate_cell(cell, store.workdir(cell.fingerprint), store, built, keep, shared)


def _captured(store: Store, cell: Cell, capture_logs: bool) -> ContextManager[None]:
    """With `capture_logs`, what the libraries print goes into the cell's log."""
    return progress.captured_output(store.log_path(cell.fingerprint) if capture_logs else None)


def _failed(store: Store, cell: Cell, exc: Exception
            ) -> tuple[CellOutcome, tuple[str, str] | None]:
    """The cell's failure recorded, and the build's error when it was the build that failed."""
    cause = exc.__cause__ if isinstance(exc, BuildError) and exc.__cause__ else exc
    message = (str(cause) if isinstance(cause, HarnessError)
               else f"{type(cause).__name__}: {first_line(cause)}")
    trace = traceback.format_exc()
    build_error = (message, trace) if isinstance(exc, BuildError) else None
    outcome = record_failure(store, cell, message, trace, store.log_path(cell.fingerprint))
    return outcome, build_error


def _batches(cells: list[Cell]) -> list[list[Cell]]:
    """The cells grouped by the lm-eval settings one evaluation shares, in first-seen order."""
    batches: dict[str, list[Cell]] = {}
    for cell in cells:
        plan, settings = cell.lm_eval_plan, cell.settings
        key = (json.dumps([plan.confirm_run_unsafe_code, plan.apply_chat_template,
                           settings.limit, settings.seed],
                          sort_keys=True, default=str) if plan is not None else str(id(cell)))
        batches.setdefault(key, []).append(cell)
    return list(batches.values())


@dataclass
class _CellTasks:
    """One cell's lm-eval tasks, loaded with its own plan."""

    cell: Cell
    items: list[Any]  # the top-level Task and Group objects
    names: set[str]  # every task and group name in them


def _load_tasks(cell: Cell) -> _CellTasks | None:
    """The cell's loaded tasks with its plan's few-shot count and generation settings
    applied, or None where a joint evaluation could change its numbers (a task that samples
    its generations)."""
    plan = cell.lm_eval_plan
    assert plan is not None
    manager = plan_task_manager(plan)
    loaded = manager.load(resolve_task_specs(manager, plan.tasks))
    for task in loaded["tasks"].values():
        # as simple_evaluate applies them, which the joint evaluation is then not given
        if plan.num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=plan.num_fewshot)
        if task.get_config("output_type") == "generate_until":
            if plan.gen_kwargs:
                task.set_config(key="generation_kwargs", value=plan.gen_kwargs, update=True)
            if (task.get_config("generation_kwargs") or {}).get("do_sample"):
                return None
    children = {name for names in loaded["group_map"].values() for name in names}
    everything = {**loaded["groups"], **loaded["tasks"]}
    return _CellTasks(cell, [item for name, item in everything.items() if name not in children],
                      set(everything))


def _joinable(cells: list[Cell]) -> list[_CellTasks]:
    """The cells that may share one evaluation (a cell whose tasks fail to load is left to
    fail on its own)."""
    joined: list[_CellTasks] = []
    names: set[str] = set()
    for cell in cells:
        try:
            tasks = _load_tasks(cell)
        except Exception:
            continue
        if tasks is not None and not tasks.names & names:
            joined.append(tasks)
            names |= tasks.names
    return joined


def _run_together(host: PluginHost, store: Store, cells: list[Cell], capture_logs: bool,
                  row: _Row) -> dict[int, CellOutcome]:
    """Outcomes of the cells evaluated and recorded together (keyed by id); the caller runs
    the others one by one."""
    first = cells[0]
    if row.built is None:
        try:
            with _captured(store, first, capture_logs):
                row.built = _build_unbilled(first, store.workdir(first.fingerprint))
        except BuildError as exc:
            host.hook.harness_cell_started(cell=first)
            outcome, row.build_error = _failed(store, first, exc)
            host.hook.harness_cell_finished(cell=first, outcome=outcome)
            return {id(first): outcome}
    lm = row.built.lm
    if isinstance(lm, HarnessLM):
        return {}
    with _captured(store, first, capture_logs):
        joined = _joinable(cells)
    if len(joined) < 2:
        return {}
    for tasks in joined:
        host.hook.harness_cell_started(cell=tasks.cell)
    lead = joined[0].cell
    workdir = store.workdir(lead.fingerprint)
    resumed = answers_saved(workdir)
    meter = cost.CostMeter()
    started = time.perf_counter()
    try:
        with _captured(store, lead, capture_logs), cost.metering(meter), cost.phase("inference"):
            output = evaluate_tasks(lead, lm, [i for t in joined for i in t.items], workdir,
                                    plan_applied=True)
    except Exception:  # each cell alone: the failing task fails by itself
        with open(store.log_path(lead.fingerprint), "a", encoding="utf-8") as out:
            out.write(f"[harness] the row's joint evaluation failed, so its cells run one by "
                      f"one:\n{traceback.format_exc()}")
        return {}
    seconds = time.perf_counter() - started
    parts = [output_for(output, tasks.names) for tasks in joined]
    weights = [_request_size(part) for part in parts]
    shares = cost.apportioned(meter.phase_cost("inference"), weights)
    if capture_logs:  # lm-eval's log of the joint evaluation, in each cell's own log
        _share_log(store, joined)
    outcomes: dict[int, CellOutcome] = {}
    finished: list[_Finished] = []
    whole = sum(weights)
    for tasks, part, weight, share in zip(joined, parts, weights, shares):
        # as cost.apportioned splits the work: by size, evenly when no request has any
        evaluate_s = seconds * (weight / whole if whole else 1 / len(weights))
        shared = SharedEvaluation(part, share, evaluate_s, len(joined), resumed)
        try:
            record, samples, _ = _evaluated(store, tasks.cell, capture_logs, row.built,
                                            shared=shared)
        except Exception as exc:  # its failure is its own
            outcome = _failed(store, tasks.cell, exc)[0]
            host.hook.harness_cell_finished(cell=tasks.cell, outcome=outcome)
            outcomes[id(tasks.cell)] = outcome
        else:
            finished.append((tasks.cell, record, samples))
    if not finished:
        return outcomes
    return outcomes | _commit(host, store, finished, capture_logs, _save_records(store, finished))


def _save_records(store: Store, finished: list[_Finished]) -> Path:
    """Every finished cell's record and samples in one file, in the scratch folder of the
    cell committed last (its path returned): a run killed while committing them commits the
    rest from it (`_commit_saved`), so every cell's record is the uninterrupted run's."""
    path = store.workdir(finished[-1][0].fingerprint) / SAVED_RECORDS
    atomic_write_text(path, json.dumps(
        {cell.fingerprint: {"record": record_json(record), "samples": jsonl_text(samples)}
         for cell, record, samples in finished}))
    return path


def _commit(host: PluginHost, store: Store, finished: list[_Finished], capture_logs: bool,
            saved: Path) -> dict[int, CellOutcome]:
    """Commit the finished cells in order, then remove the file that saved them
    (`_save_records`): the last cell's commit takes it with its scratch folder, but a last
    cell recorded failed keeps that folder, and its next run would commit the saved failure
    again instead of evaluating. Their outcomes keyed by id."""
    outcomes: dict[int, CellOutcome] = {}
    for cell, record, samples in finished:
        log = store.log_path(cell.fingerprint)
        outcome = commit_evaluated(store, cell, record, samples, log if capture_logs else None)
        host.hook.harness_cell_finished(cell=cell, outcome=outcome)
        outcomes[id(cell)] = outcome
    remove_path(saved)
    return outcomes


def _commit_saved(host: PluginHost, store: Store, cells: list[Cell], capture_logs: bool
                  ) -> dict[int, CellOutcome]:
    """Commit the cells whose records a killed run's joint evaluation saved (`_save_records`)
    in the scratch folder of one of `cells`, the cell holding the file last; their outcomes
    keyed by id."""
    by_fingerprint = {cell.fingerprint: cell for cell in cells}
    outcomes: dict[int, CellOutcome] = {}
    for holder in cells:
        if id(holder) in outcomes:
            continue
        path = store.workdir(holder.fingerprint) / SAVED_RECORDS
        if not path.is_file():
            continue
        saved = json.loads(path.read_text(encoding="utf-8"))
        order = sorted(saved, key=lambda fingerprint: fingerprint == holder.fingerprint)
        finished = [(by_fingerprint[fingerprint],
                     CellRecord.from_dict(json.loads(saved[fingerprint]["record"])),
                     [json.loads(line) for line in saved[fingerprint]["samples"].splitlines()])
                    for fingerprint in order if fingerprint in by_fingerprint
                    and id(by_fingerprint[fingerprint]) not in outcomes]
        outcomes.update(_commit(host, store, finished, capture_logs, path))
    return outcomes


def _build_unbilled(cell: Cell, workdir: Path) -> BuiltLM:
    """The row's LM, built before any cell records it: the first cell to use it is charged
    the build's work and time."""
    timings: dict[str, float] = {}
    meter = cost.CostMeter()
    with cost.metering(meter):
        built = acquire_lm(cell, build_context(cell, workdir), None, timings)
    built.unbilled = meter.phase_cost("build")
    return built


def _request_size(output: dict[str, Any]) -> int:
    """Characters of lm-eval's request arguments over a cell's samples: its share of the work."""
    return sum(len(json.dumps(sample.get("arguments"), default=str))
               for samples in output["samples"].values() for sample in samples)


def _share_log(store: Store, joined: list[_CellTasks]) -> None:
    """The log of the joint evaluation (the first cell's), added to every other cell's."""
    log = store.log_path(joined[0].cell.fingerprint)
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    names = ", ".join(t.cell.task for t in joined)
    for tasks in joined[1:]:
        with open(store.log_path(tasks.cell.fingerprint), "a", encoding="utf-8") as out:
            out.write(f"[harness] one lm-eval evaluation of the row's tasks {names}; its log:\n"
                      f"{text}")

