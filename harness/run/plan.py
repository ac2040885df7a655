"""Planning: every row x task cell with its state (done, pending, n/a, error, unavailable)
and fingerprint. A cell whose fingerprint already has a trustworthy result is done and is
never recomputed (unless --force)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from harness.contract import (Cell, LmEvalPlan, MethodRow, MethodSpec, Plan, TaskColumn,
                              TaskContext, TaskSpec)
from harness.errors import DataError, HarnessError, MissingTool, UsageError
from harness.files import fingerprint
from harness.host import Host
from harness.models.loading import ModelRef
from harness.results.store import Store
from harness.run.identity import cell_identity, library_versions
from harness.settings import RunSettings
from harness.training import untrainable_reason


def incompatibility(host: Host, method: MethodSpec, task: TaskSpec,
                    models: tuple[ModelRef, ...] = ()) -> str | None:
    missing = sorted(str(c) for c in task.requires - method.capabilities_for(models))
    if missing:
        return "needs " + ", ".join(missing)
    return host.hook.harness_cell_incompatibility(method=method, task=task)


def task_context(cell: Cell, workdir: Path, store: Store | None = None) -> TaskContext:
    return TaskContext(options=cell.column.options, data=cell.settings.data_source,
                       workdir=workdir, limit=cell.settings.limit, seed=cell.settings.seed,
                       store=store, device=cell.settings.torch_device)


def check_rows(rows: list[MethodRow]) -> None:
    """One row per configuration, and one label per row: leaderboards are keyed by row
    and shown by label, so a repeat would silently hide a result."""
    seen_keys: dict[str, str] = {}
    seen_labels: dict[str, str] = {}
    for row in rows:
        if row.key in seen_keys:
            raise UsageError(f"row {row.label!r} repeats row {seen_keys[row.key]!r} (same "
                             f"method, models and options); remove one")
        if row.label in seen_labels:
            raise UsageError(f"two different rows are labelled {row.label!r}; give one of them "
                             f"its own label (suite key `label`)")
        seen_keys[row.key] = seen_labels[row.label] = row.label


def plan_cells(host: Host, rows: list[MethodRow], columns: list[TaskColumn],
               settings: RunSettings, store: Store, force: bool = False) -> Plan:
    settings = settings.resolved()
    check_rows(rows)
    task_names = {c.spec.name for c in columns}
    cells = []
    versions = library_versions()
    for row in rows:
        if not row.spec.models.accepts(len(row.models)):
            raise UsageError(f"method {row.spec.name!r} takes {row.spec.models.describe()}, "
                             f"got {len(row.models)}")
        absent = [t for t in row.only_tasks if t not in task_names]
        if absent:
            raise UsageError(f"row {row.label!r} is restricted to task(s) {', '.join(absent)} "
                             f"that the run does not include")
        problem = model_problem(row)
        for column, cell_settings in itertools.product(columns, settings.per_seed()):
            if row.only_tasks and column.spec.name not in row.only_tasks:
                continue
            cell = Cell(row, column, cell_settings, several_seeds=len(settings.seeds) > 1)
            if problem:  # a bad model fails its own row's cells, never the whole suite
                cell.code = {"method": host.code_of(row.spec), "task": host.code_of(column.spec)}
                cell.state, cell.reason = "error", problem
                cell.identity = {"row_error": problem, "method": row.spec.name,
                                 "models": [m.id for m in row.models], "task": column.spec.name}
                cell.fingerprint = fingerprint(cell.identity)
                cells.append(cell)
            else:
                cells.append(_plan_cell(host, cell, store, force, versions))
    return Plan(cells, store, force)


def model_problem(row: MethodRow) -> str | None:
    """Why a row's base models cannot be identified (an unknown zoo name, a local folder
    without weights), found at planning time."""
    from harness.models.loading import is_vision_language

    for ref in row.models:
        try:
            ref.identity()
            is_vision_language(ref)
        except HarnessError as exc:
            return f"model {ref.id!r}: {exc}"
    return None


def _plan_cell(host: Host, cell: Cell, store: Store, force: bool,
               versions: dict[str, str]) -> Cell:
    cell.code = {"method": host.code_of(cell.row.spec), "task": host.code_of(cell.column.spec)}
    reason = (incompatibility(host, cell.row.spec, cell.column.spec, cell.row.models)
              or untrainable_reason(cell.row.spec, cell.row.options, cell.column.spec))
    if reason:
        cell.state, cell.reason = "n/a", reason
    else:
        try:
            planning = task_context(cell, store.root, store)
            cell.lm_eval_plan = cell.column.spec.lm_eval(planning)
            _check_plan(cell)
            problem = data_problem(cell.column.spec, planning)
            if problem:
                raise HarnessError(problem)
        except HarnessError as exc:
            if isinstance(exc, UsageError):
                raise
            skip = isinstance(exc, MissingTool) and cell.settings.missing_tools == "skip"
            cell.state, cell.reason = ("unavailable" if skip else "error"), str(exc)
    cell.identity = cell_identity(cell, versions)
    cell.fingerprint = fingerprint(cell.identity)
    if cell.state == "pending" and not force and store.is_done(cell.method, cell.task,
                                                              cell.fingerprint):
        cell.state = "done"
    return cell


def _check_plan(cell: Cell) -> None:
    """A task plugin's plan, checked before anything runs on it."""
    plan, name = cell.lm_eval_plan, cell.column.spec.name
    if not isinstance(plan, LmEvalPlan):
        raise UsageError(f"task {name!r}: lm_eval must return an LmEvalPlan, got "
                         f"{type(plan).__name__}")
    if not isinstance(plan.tasks, list) or not plan.tasks:
        raise UsageError(f"task {name!r}: LmEvalPlan.tasks must be a non-empty list")
    for attribute in ("data_files", "include_path"):
        values = getattr(plan, attribute)
        if not isinstance(values, list) or not all(isinstance(v, Path) for v in values):
            raise UsageError(f"task {name!r}: LmEvalPlan.{attribute} must be a list of Paths")
    missing = [str(p) for p in plan.data_files if not p.is_file()]
    if missing:
        raise DataError(f"task {name!r}: missing data file(s) {', '.join(missing[:3])}")


def data_problem(task: TaskSpec, ctx: TaskContext) -> str | None:
    """Why the task's data cannot be read, found before any model loads: its preflight,
    then (for Hugging Face data) whether the hub or a local copy can be reached."""
    problem = task.preflight(ctx) if task.preflight else None
    if problem or ctx.data.kind != "hf" or not task.hf_dataset:
        return problem
    from harness.data import hub_dataset_problem

    return hub_dataset_problem(task.name, task.hf_dataset)


def plan_entries(plan: Plan) -> list[dict[str, Any]]:
    """The plan as `harness status` reads it back from plan.json."""
    return [{"fingerprint": c.fingerprint, "method": c.method, "task": c.task,
             "label": c.row.label, "row_key": c.row.key, "state": c.state, "reason": c.reason}
            for c in plan.cells]
