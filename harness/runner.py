"""Planning and running the method x task matrix, resumably.

A cell is (method row, task, run settings). Its fingerprint hashes everything that can
change its numbers: the method's name, version, providing distribution and options, model
identities (hub revision, local weight hashes or zoo recipe), the task's name, version,
distribution and options, the data files' hashes, limit, seed, few-shot and generation
settings, and library versions. A cell whose fingerprint already has a trustworthy result
is done and is never recomputed (unless --force).

Running a cell is five named steps: build the method's LM, evaluate it with lm-eval,
collect the per-sample log, score, and record.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import functools
import importlib.metadata as md
import itertools
import logging
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from harness import cost, progress
from harness.errors import DataError, HarnessError, MissingTool, UsageError, first_line
from harness.host import Host
from harness.models import ModelRef
from harness.records import CellRecord, CodeInfo, RowInfo, Score, TaskInfo, row_key
from harness.response_cache import metered_response_cache
from harness.settings import RunSettings
from harness.specs import (BuildContext, LmEvalPlan, MethodSpec, MetricValues, TaskContext,
                           TaskSpec, options_to_dict)
from harness.stats import mean_and_stderr
from harness.store import Store, file_sha256, fingerprint
from harness.training import untrainable_reason

# "unavailable": a system tool the cell needs is missing here and the run skips such cells;
# nothing is recorded, so the cell runs once the tool is installed.
State = Literal["done", "pending", "n/a", "error", "unavailable"]
IDENTITY_SCHEMA = 2
VERSIONED_LIBRARIES = ("harness", "lm_eval", "transformers", "torch", "peft", "datasets")


@dataclass(frozen=True)
class MethodRow:
    """A leaderboard row: a method with its base models and options."""

    spec: MethodSpec
    models: tuple[ModelRef, ...]
    options: Any
    label: str = ""  # empty: derived from the method, its non-default options and models
    only_tasks: tuple[str, ...] = ()  # a suite row restricted to some of the tasks

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", row_label(self.spec, self.models, self.options))

    @property
    def key(self) -> str:
        return row_key(self.spec.name, [dataclasses.asdict(m) for m in self.models],
                       options_to_dict(self.options))


@dataclass(frozen=True)
class TaskColumn:
    spec: TaskSpec
    options: Any


@dataclass
class Cell:
    row: MethodRow
    column: TaskColumn
    settings: RunSettings
    state: State = "pending"
    reason: str = ""
    fingerprint: str = ""
    lm_eval_plan: LmEvalPlan | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    code: dict[str, CodeInfo] = field(default_factory=dict)
    several_seeds: bool = False  # one of the run's seeds: titles name it

    @property
    def method(self) -> str:
        return self.row.spec.name

    @property
    def task(self) -> str:
        return self.column.spec.name

    @property
    def title(self) -> str:
        seed = f" (seed {self.settings.seed})" if self.several_seeds else ""
        return f"{self.row.label} × {self.task}{seed}"

    @property
    def documents(self) -> str:
        """How many documents the cell evaluates, as far as planning knows: `--limit`
        counts per lm-eval task, and a task such as MMLU runs one lm-eval task per subject."""
        subtasks = len(self.lm_eval_plan.tasks) if self.lm_eval_plan else 0
        limit = self.settings.limit
        if not subtasks:
            return ""
        if limit is None:
            return f"all documents of {subtasks} lm-eval task{'s' * (subtasks > 1)}"
        if subtasks == 1:
            return f"up to {limit} document{'s' * (limit > 1)}"
        return f"up to {limit * subtasks} documents ({limit} in each of {subtasks} lm-eval tasks)"


@dataclass
class Plan:
    cells: list[Cell]
    store: Store
    force: bool = False

    def count(self, state: State) -> int:
        return sum(c.state == state for c in self.cells)

    def shard(self, index: int, count: int) -> "Plan":
        """The cells of shard `index` (1-based) of `count`, split by fingerprint so every
        process of an array job computes the same partition without talking to the others."""
        if not 1 <= index <= count:
            raise UsageError(f"--shard {index}/{count}: need 1 <= K <= N")
        return Plan([c for c in self.cells if int(c.fingerprint, 16) % count == index - 1],
                    self.store, self.force)


@dataclass
class CellOutcome:
    cell: Cell
    status: Literal["ok", "n/a", "failed", "skipped", "busy", "shard", "unavailable"]
    path: Path | None = None
    headline: float | None = None
    error: str = ""


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _option_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_option_text(v) for v in value)
    return str(value)


def row_label(spec: MethodSpec, models: tuple[ModelRef, ...], options: Any = None) -> str:
    """`method[options that differ from the defaults] (model + model)`."""
    changed = []
    if options is not None and dataclasses.is_dataclass(options):
        defaults = options_to_dict(spec.options())
        changed = [f"{k}={_option_text(v)}" for k, v in options_to_dict(options).items()
                   if defaults.get(k) != v]
    options_text = f"[{', '.join(changed)}]" if changed else ""
    return f"{spec.name}{options_text} ({' + '.join(m.short_name for m in models)})"


def incompatibility(host: Host, method: MethodSpec, task: TaskSpec,
                    models: tuple[ModelRef, ...] = ()) -> str | None:
    missing = sorted(str(c) for c in task.requires - method.capabilities_for(models))
    if missing:
        return "needs " + ", ".join(missing)
    return host.hook.harness_cell_incompatibility(method=method, task=task)


def task_context(cell: Cell, workdir: Path, store: Store | None = None) -> TaskContext:
    return TaskContext(options=cell.column.options, data=cell.settings.data_source,
                       workdir=workdir, limit=cell.settings.limit, seed=cell.settings.seed,
                       store=store)


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
    from harness.models import is_vision_language

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
    cell.identity = _identity(cell, versions)
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


def _identity(cell: Cell, versions: dict[str, str]) -> dict[str, Any]:
    plan = cell.lm_eval_plan
    method_code, task_code = cell.code["method"], cell.code["task"]
    return {
        "schema": IDENTITY_SCHEMA,
        "method": {"name": cell.method, "options": options_to_dict(cell.row.options),
                   "models": [m.identity() for m in cell.row.models],
                   "version": method_code.version, "distribution": method_code.distribution},
        "task": {"name": cell.task, "options": options_to_dict(cell.column.options),
                 "version": task_code.version, "distribution": task_code.distribution},
        "data": {"source": cell.settings.data_source.kind,
                 "files": {f"{p.parent.name}/{p.name}": file_sha256(p) if p.is_file()
                           else "missing" for p in (plan.data_files if plan else [])},
                 "training_data": _training_data_digest(cell.row.options)},
        "lm_eval": None if plan is None else {
            "tasks": [config_identity(t) for t in plan.tasks],
            "yaml": {str(p.relative_to(root)): file_sha256(p) for root in plan.include_path
                     for p in sorted(Path(root).rglob("*.yaml"))},
            "num_fewshot": plan.num_fewshot, "gen_kwargs": plan.gen_kwargs,
            "apply_chat_template": plan.apply_chat_template,
            "confirm_run_unsafe_code": plan.confirm_run_unsafe_code},
        "limit": cell.settings.limit,
        "seed": cell.settings.seed,
        "versions": versions,
    }


def config_identity(value: Any) -> Any:
    """An lm-eval task config as fingerprint material: every prompt template and setting,
    with callables named by qualified name and file paths by file name (their contents are
    hashed separately, so moving a data folder keeps the fingerprint)."""
    if isinstance(value, dict):
        return {str(k): config_identity(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_identity(v) for v in value]
    if isinstance(value, functools.partial):
        return {"callable": config_identity(value.func),
                "args": config_identity(value.args), "keywords": config_identity(value.keywords)}
    if isinstance(value, Path):
        return value.name
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def _training_data_digest(options: Any) -> str | None:
    """A user-named training set enters the fingerprint by content, not by path."""
    path = getattr(options, "training_data", "")
    return file_sha256(Path(path)) if path and Path(path).is_file() else None


def plan_entries(plan: Plan) -> list[dict[str, Any]]:
    """The plan as `harness status` reads it back from plan.json."""
    return [{"fingerprint": c.fingerprint, "method": c.method, "task": c.task,
             "label": c.row.label, "row_key": c.row.key, "state": c.state, "reason": c.reason}
            for c in plan.cells]


# ----------------------------------------------------------------------------- execution


@dataclass
class Job:
    """Cells that share one built LM: every pending task of a row that does not train (its
    models load once, as lm-eval evaluates several tasks on one model); a training row's
    cells are jobs of their own (each task fits its own adapter)."""

    cells: list[Cell]
    shard: tuple[int, int] | None = None  # (index, count): one document shard of one cell

    @property
    def title(self) -> str:
        return f"{self.cells[0].row.label} × {', '.join(c.task for c in self.cells)}"


def make_jobs(cells: list[Cell], group: bool = True, doc_shards: int = 1) -> list[Job]:
    """Pending cells grouped into jobs (`group=False`: one cell per job); with
    `doc_shards` > 1, each cell's documents split over that many jobs (harness.shards)."""
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


def run_plan(host: Host, plan: Plan, capture_logs: bool = True,
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


@dataclass
class BuiltLM:
    """A method's LM built once for a job, with what its build reported."""

    lm: Any
    report: dict[str, Any]
    seconds: float


def run_job(host: Host, plan: Plan, job: Job, capture_logs: bool = True) -> list[CellOutcome]:
    """The job's cells in this process, its LM built at the first cell that needs it.

    Each cell is claimed before it runs, so jobs shared out to several processes compute
    every cell once.
    """
    if job.shard is not None:
        from harness.shards import run_shard

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


def _base_record(cell: Cell, status: Literal["ok", "n/a", "failed"], reason: str = ""
                 ) -> CellRecord:
    row, spec = cell.row, cell.column.spec
    return CellRecord(
        status=status, fingerprint=cell.fingerprint, reason=reason,
        row=RowInfo(key=row.key, method=cell.method, label=row.label,
                    options=options_to_dict(row.options),
                    models=[dataclasses.asdict(m) for m in row.models],
                    capabilities=sorted(str(c) for c in _capabilities(row)),
                    trains=row.spec.training is not None),
        task=TaskInfo(name=cell.task, options=options_to_dict(cell.column.options),
                      headline_key=spec.headline.key, headline_label=spec.headline.label,
                      higher_is_better=spec.headline.higher_is_better,
                      data=("generated" if spec.generated_data
                            else cell.settings.data_source.describe())),
        identity=cell.identity, code=dict(cell.code),
        finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seed=cell.settings.seed, limit=cell.settings.limit)


def _capabilities(row: MethodRow) -> frozenset[Any]:
    try:
        return row.spec.capabilities_for(row.models)
    except HarnessError:  # a row whose models cannot be read: its method's own
        return row.spec.capabilities


def _record_not_applicable(store: Store, cell: Cell) -> CellOutcome:
    path = store.commit_cell(_base_record(cell, "n/a", cell.reason), [])
    return CellOutcome(cell, "n/a", path)


def record_failure(store: Store, cell: Cell, error: str, trace: str,
                    log: Path | None = None) -> CellOutcome:
    record = _base_record(cell, "failed", error)
    record.traceback = trace
    store.record_failure(record, log)
    return CellOutcome(cell, "failed", error=error)


class BuildError(HarnessError):
    """The method's LM could not be built: the job's other cells fail with the same
    reason instead of building again."""


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
        reason = (record.score_details.get("headline_unavailable")
                  or f"no {record.task.headline_key} could be computed (NaN)")
        record.status, record.reason = "failed", f"no score: {reason}"
        store.record_failure(record, log, samples)
        return CellOutcome(cell, "failed", error=record.reason), built, None
    path = store.commit_cell(record, samples, log if capture_logs else None)
    headline = record.headline.value if record.headline else None
    return CellOutcome(cell, "ok", path, headline), built, None


def evaluate_cell(cell: Cell, workdir: Path, store: Store | None = None,
                  built: BuiltLM | None = None, keep: bool = False
                  ) -> tuple[CellRecord, list[dict[str, Any]], BuiltLM | None]:
    """Build the method's LM (or reuse `built`), evaluate it with lm-eval, collect
    samples, score, record. Returns the record, the samples and, with `keep`, the LM for
    the job's next cell."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # answers a killed try saved come back with their work (harness.response_cache), unless
    # an older harness stored them
    resumed = any(workdir.glob(f"{RESPONSES}*"))
    with cost.metering(cost.CostMeter()) as meter:
        record, samples, built = _evaluate_metered(cell, workdir, store, built)
        record.cost = cost.cell_cost(meter, None, record.n_samples or 0, record.timings,
                                     record.method_report, cell.settings.device or "cpu",
                                     expect_model_calls=not resumed)
    return record, samples, built if keep else None


def _evaluate_metered(cell: Cell, workdir: Path, store: Store | None, built: BuiltLM | None
                      ) -> tuple[CellRecord, list[dict[str, Any]], BuiltLM]:
    timings: dict[str, float] = {}
    context = build_context(cell, workdir)
    if built is None:
        with _timed(timings, "build_s"), cost.phase("build"):
            progress.current().phase("load")
            try:
                lm = build_lm(cell, context)
            except Exception as exc:
                raise BuildError(first_line(exc)) from exc
        built = BuiltLM(lm, copy.deepcopy(context.report), timings["build_s"])
    else:
        lm = built.lm
        context.report.update(copy.deepcopy(built.report))
        timings["build_s"], timings["build_shared"] = built.seconds, 1.0
        begin = getattr(lm, "begin_cell", None)
        if callable(begin):  # the LM's per-cell state (records, report) starts afresh
            begin(context)
    with _timed(timings, "evaluate_s"), cost.phase("inference"):
        output = run_lm_eval(cell, lm, workdir)
    samples = collect_samples(output, lm)
    task_ctx = task_context(cell, workdir, store)
    with _timed(timings, "score_s"), cost.phase("scoring"):
        progress.current().phase("score")
        metrics = score_samples(cell, samples, task_ctx)
    record = make_record(cell, metrics, samples, output, context, task_ctx, timings, lm)
    return record, samples, built


class _timed:
    """`with _timed(timings, "build_s"):` records the block's wall time."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self.key] = round(time.perf_counter() - self.started, 3)


def build_context(cell: Cell, workdir: Path) -> BuildContext:
    from harness.zoo import cache_root

    settings = cell.settings
    method_code = cell.code.get("method")
    return BuildContext(models=cell.row.models, options=cell.row.options, task=cell.column.spec,
                        task_options=cell.column.options, seed=settings.seed,
                        device=settings.device or "cpu", batch_size=settings.batch_size,
                        workdir=workdir, data=settings.data_source,
                        method_code={"version": method_code.version,
                                     "distribution": method_code.distribution}
                        if method_code else {},
                        cache_root=cache_root(), prefix_cache=settings.prefix_cache)


def build_lm(cell: Cell, context: BuildContext) -> Any:
    """Step 1: the method's lm-eval LM, built on the cell's models (training included)."""
    _seed_everything(cell.settings.seed)
    return cell.row.spec.build(context)


class _WithoutCustomDatasetAdvice(logging.Filter):
    """lm-eval warns, for every task whose documents come from a callable (`custom_dataset`),
    that such callables take keyword arguments from `--metadata`. The harness hands it every
    local and generated data set that way and never uses `--metadata`, so the advice is noise
    repeated in every cell's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


_LM_EVAL_TASK_LOG = logging.getLogger("lm_eval.api.task")
_LM_EVAL_TASK_LOG.addFilter(_WithoutCustomDatasetAdvice())


RESPONSES = "responses"  # lm-eval's response cache in a cell's workdir (a file name prefix)


def run_lm_eval(cell: Cell, lm: Any, workdir: Path) -> dict[str, Any]:
    """Step 2: lm-eval's evaluation of the task's plan on the LM, logging every sample."""
    import lm_eval

    settings, plan = cell.settings, cell.lm_eval_plan
    assert plan is not None
    manager = task_manager(tuple(str(p) for p in plan.include_path), plan.uses_stock_tasks)
    with progress.lm_eval_progress(), _without_environment_probe(), metered_response_cache():
        output = lm_eval.simple_evaluate(
            model=lm, tasks=resolve_task_specs(manager, plan.tasks),
            num_fewshot=plan.num_fewshot, limit=settings.limit,
            # lm-eval keys its response cache by request only (lm-eval #2715): a folder per
            # cell fingerprint keeps methods apart and lets a killed cell resume its requests,
            # their cost included (harness.response_cache)
            use_cache=str(workdir / RESPONSES),
            log_samples=True, bootstrap_iters=0, task_manager=manager,
            gen_kwargs=plan.gen_kwargs, confirm_run_unsafe_code=plan.confirm_run_unsafe_code,
            apply_chat_template=plan.apply_chat_template,
            random_seed=settings.seed, numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    if not output or "samples" not in output:
        raise HarnessError(f"lm-eval returned no results for task {cell.task!r}")
    return output


@contextlib.contextmanager
def _without_environment_probe() -> Iterator[None]:
    """lm-eval describes the environment after every evaluation through torch's
    `collect_env`, which shells out to pip (over a second per cell); the harness records
    versions in each cell's provenance, and nothing reads lm-eval's copy."""
    import lm_eval.evaluator

    probe = lm_eval.evaluator.add_env_info
    lm_eval.evaluator.add_env_info = lambda storage: None
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info = probe


def collect_samples(output: dict[str, Any], lm: Any) -> list[dict[str, Any]]:
    """Step 3: lm-eval's sample logs, compacted, each annotated with what the method
    recorded for that sample's own requests (e.g. PackLLM's weights)."""
    annotate = getattr(lm, "sample_annotations", None)
    samples = []
    for task_name in sorted(output["samples"]):
        for raw in output["samples"][task_name]:
            sample = _compact_sample(task_name, raw)
            if callable(annotate):
                sample.update(annotate(raw))
            samples.append(sample)
    return samples


def score_samples(cell: Cell, samples: list[dict[str, Any]], ctx: TaskContext) -> MetricValues:
    """Step 4: the task's corpus scorer, or the mean of lm-eval's per-sample metrics."""
    score = cell.column.spec.score
    metrics = dict(score(samples, ctx)) if score else mean_metrics(samples)
    headline_key = cell.column.spec.headline.key
    if headline_key not in metrics:
        raise HarnessError(f"task {cell.task!r} produced no headline metric {headline_key!r} "
                           f"(got {', '.join(sorted(metrics)) or 'none'})")
    return metrics


def make_record(cell: Cell, metrics: MetricValues, samples: list[dict[str, Any]],
                output: dict[str, Any], context: BuildContext, task_ctx: TaskContext,
                timings: dict[str, float], lm: Any = None) -> CellRecord:
    """Step 5: the cell's record, with its provenance."""
    record = _base_record(cell, "ok")
    value, stderr = metrics[cell.column.spec.headline.key]
    record.headline = Score(_number(value), stderr)
    record.metrics = {k: Score(_number(v), se) for k, (v, se) in sorted(metrics.items())}
    record.score_details = task_ctx.score_details
    record.n_samples = len({(s["task"], s["doc_id"]) for s in samples})
    record.lm_eval = {"tasks": sorted(output["samples"]), "n-shot": output.get("n-shot"),
                      "versions": output.get("versions"), "task_results": output.get("results")}
    record.method_report = context.report
    record.timings = timings
    record.hardware = hardware(cell.settings.device or "cpu")
    record.numerics = numerics(cell, lm)
    record.git_commit = git_commit()
    return record


def numerics(cell: Cell, lm: Any) -> dict[str, Any]:
    """The settings a cell's numbers depend on beyond its identity: the batch size asked
    for and the one used, the models' dtypes and attention implementations."""
    models = list(_transformers_models(lm)) if lm is not None else []
    return {"batch_size": cell.settings.batch_size,
            "batch_size_used": (getattr(lm, "batch_sizes", None) or getattr(lm, "batch_size", None)
                                if lm is not None else None),
            "dtypes": sorted({str(m.dtype).removeprefix("torch.") for m in models}),
            "attention": sorted({str(getattr(m.config, "_attn_implementation", None))
                                 for m in models}),
            "device": cell.settings.device, "prefix_cache": cell.settings.prefix_cache}


def _transformers_models(value: Any, depth: int = 0) -> Any:
    """The transformers models an LM holds (its own attributes, members of a pack)."""
    if depth > 5 or value is None:
        return
    if hasattr(value, "config") and hasattr(value, "dtype") and hasattr(value, "parameters"):
        yield value
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _transformers_models(item, depth + 1)
        return
    for name, item in vars(value).items() if hasattr(value, "__dict__") else ():
        if not name.startswith("__") and not isinstance(item, (str, int, float, bool, dict)):
            yield from _transformers_models(item, depth + 1)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@functools.lru_cache(maxsize=8)
def task_manager(include_path: tuple[str, ...], include_defaults: bool = True) -> Any:
    """lm-eval's task manager. Its index of lm-eval's ~14,700 task files takes seconds to
    build, so it is kept on disk (harness.lm_eval_index) and built once per lm-eval
    version and set of task folders, not once per process."""
    from harness.lm_eval_index import cached_task_manager

    return cached_task_manager(list(include_path), include_defaults)


def resolve_task_specs(manager: Any, specs: list[str | dict[str, Any]]) -> list[Any]:
    """Expand `{"task": registered_name, **overrides}` onto the registered YAML config.

    lm-eval treats a dict spec as a complete inline config; our task plugins mean "the
    stock task, with these fields replaced" (typically `custom_dataset` for local files).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    resolved: list[str | dict[str, Any]] = []
    for spec in specs:
        entry = manager.task_index.get(spec.get("task")) if isinstance(spec, dict) else None
        if isinstance(spec, dict) and entry is not None and entry.yaml_path:
            spec = {**load_yaml(entry.yaml_path, resolve_func=True), **spec}
        resolved.append(spec)
    return resolved


def _compact_sample(task_name: str, record: dict[str, Any]) -> dict[str, Any]:
    compact = {k: v for k, v in record.items() if k not in {"doc", "arguments", "resps"}}
    compact["doc"] = json_safe(record.get("doc"))
    compact["task"] = task_name
    compact["prompt"] = _first_argument(record.get("arguments"))
    compact["response"] = record.get("resps")
    return compact


def _first_argument(arguments: Any) -> Any:
    if isinstance(arguments, dict):  # lm-eval >= 0.4.5 logs {"gen_args_0": {"arg_0": ...}}
        generation: Any = next(iter(arguments.values()), {})
        return generation.get("arg_0") if isinstance(generation, dict) else generation
    if isinstance(arguments, (list, tuple)) and arguments:
        first = arguments[0]
        return first[0] if isinstance(first, (list, tuple)) else first
    return arguments


def json_safe(value: Any) -> Any:
    """The value with anything JSON cannot hold (images, tensors, bytes) replaced by a tag."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"


def mean_metrics(samples: list[dict[str, Any]]) -> dict[str, tuple[float, float | None]]:
    """Micro-average of every per-sample metric, keyed `metric,filter` as lm-eval does.

    Over several lm-eval subtasks (MMLU's subjects) this equals lm-eval's size-weighted
    group mean. Standard error: sample standard deviation / sqrt(n).
    """
    values: dict[str, list[float]] = {}
    for sample in samples:
        for name in sample.get("metrics", []):
            value = sample.get(name)
            if isinstance(value, (int, float)):  # bool included: lm-eval logs acc as True/False
                values.setdefault(f"{name},{sample.get('filter', 'none')}", []).append(float(value))
    return {key: mean_and_stderr(vals) for key, vals in values.items()}


def _seed_everything(seed: int) -> None:
    import random

    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "device": device}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The harness source commit, with '-dirty' when the tree has local changes; None
    outside a git checkout (an installed harness)."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"],
                               check=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")
