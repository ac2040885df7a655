"""Planning and running the method x task matrix, resumably.

A cell is (method row, task, run settings). Its fingerprint hashes everything that can
change its numbers: method options, model identities (hub revision, local weight hashes or
zoo recipe), task options, the data files' hashes, limit, seed, few-shot and generation
settings, and library versions. A cell whose fingerprint already has a result directory
is done and is never recomputed (unless --force).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata as md
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError, UsageError, first_line
from harness.host import Host
from harness.models import ModelRef
from harness.specs import (BuildContext, DataSource, LmEvalPlan, MethodSpec, TaskContext,
                           TaskSpec, options_to_dict)
from harness.stats import mean_and_stderr
from harness.store import Store, file_sha256, fingerprint
from harness.training import untrainable_reason

State = Literal["done", "pending", "n/a", "error"]
SCHEMA_VERSION = 1
VERSIONED_LIBRARIES = ("harness", "lm_eval", "transformers", "torch", "peft", "datasets")


@dataclass(frozen=True)
class MethodRow:
    """A leaderboard row: a method with its base models and options."""

    spec: MethodSpec
    models: tuple[ModelRef, ...]
    options: Any
    label: str
    only_tasks: tuple[str, ...] = ()  # a suite row restricted to some of the tasks


@dataclass(frozen=True)
class TaskColumn:
    spec: TaskSpec
    options: Any


@dataclass(frozen=True)
class Settings:
    data: DataSource
    limit: int | None = None
    seed: int = 1234
    batch_size: int = 1
    device: str = "cpu"


@dataclass
class Cell:
    row: MethodRow
    column: TaskColumn
    settings: Settings
    state: State = "pending"
    reason: str = ""
    fingerprint: str = ""
    lm_eval_plan: LmEvalPlan | None = None
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.row.spec.name

    @property
    def task(self) -> str:
        return self.column.spec.name


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
    status: Literal["ok", "n/a", "failed", "skipped", "busy"]
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


def row_label(spec: MethodSpec, models: tuple[ModelRef, ...]) -> str:
    return f"{spec.name} ({' + '.join(m.short_name for m in models)})"


def incompatibility(host: Host, method: MethodSpec, task: TaskSpec,
                    models: tuple[ModelRef, ...] = ()) -> str | None:
    missing = sorted(str(c) for c in task.requires - method.capabilities_for(models))
    if missing:
        return "needs " + ", ".join(missing)
    return host.hook.harness_cell_incompatibility(method=method, task=task)


def task_context(cell: Cell, workdir: Path, results_root: Path | None = None) -> TaskContext:
    return TaskContext(options=cell.column.options, data=cell.settings.data, workdir=workdir,
                       limit=cell.settings.limit, seed=cell.settings.seed,
                       results_root=results_root)


def plan_cells(host: Host, rows: list[MethodRow], columns: list[TaskColumn], settings: Settings,
               store: Store, force: bool = False) -> Plan:
    cells = []
    versions = library_versions()
    for row in rows:
        if not row.spec.models.accepts(len(row.models)):
            raise UsageError(f"method {row.spec.name!r} takes {row.spec.models.describe()}, "
                             f"got {len(row.models)}")
        for column in columns:
            if row.only_tasks and column.spec.name not in row.only_tasks:
                continue
            cell = Cell(row, column, settings)
            reason = (incompatibility(host, row.spec, column.spec, row.models)
                      or untrainable_reason(row.spec, row.options, column.spec))
            if reason:
                cell.state, cell.reason = "n/a", reason
            else:
                try:
                    planning = task_context(cell, store.root, store.root)
                    cell.lm_eval_plan = column.spec.lm_eval(planning)
                    preflight = column.spec.preflight
                    problem = preflight(planning) if preflight else None
                    if problem:
                        raise HarnessError(problem)
                except HarnessError as exc:
                    if isinstance(exc, UsageError):
                        raise
                    cell.state, cell.reason = "error", str(exc)
            cell.identity = _identity(cell, versions)
            cell.fingerprint = fingerprint(cell.identity)
            if cell.state == "pending" and not force and store.is_done(cell.method, cell.task,
                                                                      cell.fingerprint):
                cell.state = "done"
            cells.append(cell)
    return Plan(cells, store, force)


def _identity(cell: Cell, versions: dict[str, str]) -> dict[str, Any]:
    plan = cell.lm_eval_plan
    return {
        "schema": SCHEMA_VERSION,
        "method": {"name": cell.method, "options": options_to_dict(cell.row.options),
                   "models": [m.identity() for m in cell.row.models]},
        "task": {"name": cell.task, "options": options_to_dict(cell.column.options)},
        "data": {"source": cell.settings.data.kind,
                 "files": {f"{p.parent.name}/{p.name}": file_sha256(p)
                           for p in (plan.data_files if plan else [])},
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


# ----------------------------------------------------------------------------- execution


def run_plan(host: Host, plan: Plan, progress: Any = None) -> list[CellOutcome]:
    """Run every pending cell; record n/a cells; a failing cell never stops the others."""
    host.hook.harness_run_started(plan=plan)
    outcomes = []
    for cell in plan.cells:
        if cell.state == "done":
            outcomes.append(CellOutcome(cell, "skipped",
                                        plan.store.cell_dir(cell.method, cell.task, cell.fingerprint)))
            continue
        if cell.state == "n/a":
            if plan.store.is_done(cell.method, cell.task, cell.fingerprint):
                continue  # recorded by an earlier run
            outcome = _record_not_applicable(plan.store, cell)
        elif cell.state == "error":
            outcome = _record_failure(plan.store, cell, cell.reason, "")
        else:
            with plan.store.claim(cell.fingerprint) as holder:
                if holder is not None:
                    outcome = CellOutcome(cell, "busy", error=f"running in process {holder}")
                elif not plan.force and plan.store.is_done(cell.method, cell.task, cell.fingerprint):
                    # another process finished it between our plan and our claim
                    outcome = CellOutcome(cell, "skipped",
                                          plan.store.cell_dir(cell.method, cell.task, cell.fingerprint))
                else:
                    host.hook.harness_cell_started(cell=cell)
                    outcome = _run_cell(plan.store, cell)
        host.hook.harness_cell_finished(cell=cell, outcome=outcome)
        outcomes.append(outcome)
        if progress is not None:
            progress()
    host.hook.harness_run_finished(plan=plan, outcomes=outcomes)
    return outcomes


def _base_record(cell: Cell) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "fingerprint": cell.fingerprint,
        "method": {"name": cell.method, "label": cell.row.label,
                   "options": options_to_dict(cell.row.options),
                   "models": [dataclasses.asdict(m) for m in cell.row.models],
                   "capabilities": sorted(str(c) for c in
                                          cell.row.spec.capabilities_for(cell.row.models)),
                   "trains": cell.row.spec.training is not None},
        "task": {"name": cell.task, "options": options_to_dict(cell.column.options),
                 "headline": dataclasses.asdict(cell.column.spec.headline),
                 "data": cell.settings.data.describe()},
        "identity": cell.identity,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _record_not_applicable(store: Store, cell: Cell) -> CellOutcome:
    record = _base_record(cell) | {"status": "n/a", "reason": cell.reason}
    path = store.commit_cell(cell.method, cell.task, cell.fingerprint, record, [])
    return CellOutcome(cell, "n/a", path)


def _record_failure(store: Store, cell: Cell, error: str, trace: str) -> CellOutcome:
    store.record_failure(cell.method, cell.task, cell.fingerprint, _base_record(cell) | {
        "status": "failed", "error": error, "traceback": trace})
    return CellOutcome(cell, "failed", error=error)


def _run_cell(store: Store, cell: Cell) -> CellOutcome:
    try:
        record, samples = evaluate_cell(cell, store.workdir(cell.fingerprint), store.root)
    except HarnessError as exc:
        return _record_failure(store, cell, str(exc), traceback.format_exc())
    except Exception as exc:  # a plugin bug must not take the matrix down
        message = f"{type(exc).__name__}: {first_line(exc)}"
        return _record_failure(store, cell, message, traceback.format_exc())
    path = store.commit_cell(cell.method, cell.task, cell.fingerprint, record, samples)
    return CellOutcome(cell, "ok", path, record["headline"]["value"])


def evaluate_cell(cell: Cell, workdir: Path,
                  results_root: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build the method's LM, run lm-eval on the task, score. Returns (record, samples)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import lm_eval

    settings, plan = cell.settings, cell.lm_eval_plan
    assert plan is not None
    context = BuildContext(models=cell.row.models, options=cell.row.options,
                           task=cell.column.spec, task_options=cell.column.options,
                           seed=settings.seed, device=settings.device,
                           batch_size=settings.batch_size, workdir=workdir, data=settings.data)
    started = time.time()
    _seed_everything(settings.seed)
    lm = cell.row.spec.build(context)
    built = time.time()
    manager = task_manager(tuple(str(p) for p in plan.include_path), plan.uses_stock_tasks)
    output = lm_eval.simple_evaluate(
        model=lm, tasks=resolve_task_specs(manager, plan.tasks), num_fewshot=plan.num_fewshot,
        limit=settings.limit,
        # lm-eval keys its response cache by request only (lm-eval #2715); a folder per
        # cell fingerprint keeps methods apart and lets a killed cell resume its requests
        use_cache=str(workdir / "responses"),
        log_samples=True, bootstrap_iters=0, task_manager=manager,
        gen_kwargs=plan.gen_kwargs, confirm_run_unsafe_code=plan.confirm_run_unsafe_code,
        apply_chat_template=plan.apply_chat_template,
        random_seed=settings.seed, numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    evaluated = time.time()
    samples = [_compact_sample(task_name, record)
               for task_name in sorted(output["samples"])
               for record in output["samples"][task_name]]
    annotate = getattr(lm, "sample_annotations", None)
    if callable(annotate):  # lm-eval's sample logs know nothing of the method's own choices
        records = [r for task_name in sorted(output["samples"]) for r in output["samples"][task_name]]
        for sample, raw in zip(samples, records):
            sample.update(annotate(raw))
    task_ctx = task_context(cell, workdir, results_root)
    score = cell.column.spec.score
    metrics = dict(score(samples, task_ctx)) if score else mean_metrics(samples)
    headline_key = cell.column.spec.headline.key
    if headline_key not in metrics:
        raise HarnessError(f"task {cell.task!r} produced no headline metric {headline_key!r} "
                           f"(got {', '.join(sorted(metrics)) or 'none'})")
    value, stderr = metrics[headline_key]
    record = _base_record(cell) | {
        "status": "ok",
        "headline": {"key": headline_key, "value": value, "stderr": stderr},
        "metrics": {k: {"value": v, "stderr": se} for k, (v, se) in sorted(metrics.items())},
        "score_details": task_ctx.score_details,
        "n_samples": len({(s["task"], s["doc_id"]) for s in samples}),
        "lm_eval": {"tasks": sorted(output["samples"]), "n-shot": output.get("n-shot"),
                    "versions": output.get("versions"),
                    "task_results": output.get("results")},
        "method_report": context.report,
        "timings": {"build_s": round(built - started, 3), "evaluate_s": round(evaluated - built, 3)},
        "hardware": hardware(settings.device),
        "seed": settings.seed,
        "limit": settings.limit,
        "git_commit": git_commit(),
    }
    return record, samples


@functools.lru_cache(maxsize=8)
def task_manager(include_path: tuple[str, ...], include_defaults: bool = True) -> Any:
    """lm-eval's task index (it scans thousands of YAML files: build it once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) or None, include_defaults=include_defaults)


def resolve_task_specs(manager: Any, specs: list[str | dict[str, Any]]) -> list[Any]:
    """Expand `{"task": registered_name, **overrides}` onto the registered YAML config.

    lm-eval treats a dict spec as a complete inline config; our task plugins mean "the
    stock task, with these fields replaced" (typically `custom_dataset` for local files).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    resolved = []
    for spec in specs:
        entry = manager.task_index.get(spec.get("task")) if isinstance(spec, dict) else None
        if entry is not None and entry.yaml_path:
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
        first = next(iter(arguments.values()), {})
        return first.get("arg_0") if isinstance(first, dict) else first
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


def git_commit() -> str | None:
    """The harness source commit, with '-dirty' when the tree has local changes."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")
