"""One cell's steps: build the method's LM, evaluate it with lm-eval (metered), collect the
per-sample log, score, and record."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.contract import (BuildContext, Cell, CellOutcome, HarnessLM, MethodReport, MethodRow,
                              MetricValues, TaskContext, options_to_dict)
from harness.errors import HarnessError, first_line
from harness.models import cost
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo
from harness.results.store import Store
from harness.run import progress
from harness.run.identity import git_commit, hardware
from harness.run.lm_eval_adapter import answers_saved, collect_samples, run_lm_eval
from harness.run.plan import task_context
from harness.stats import mean_and_stderr


@dataclass
class BuiltLM:
    """A method's LM built once for a job, with what its build reported."""

    lm: Any
    report: MethodReport
    seconds: float
    unbilled: Any = None  # the build's PhaseCost while no cell has recorded it (harness.run.row)


def base_record(cell: Cell, status: Literal["ok", "n/a", "failed"], reason: str = ""
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


class BuildError(HarnessError):
    """The method's LM could not be built: the job's other cells fail with the same
    reason instead of building again."""


@dataclass
class SharedEvaluation:
    """A cell's part of one lm-eval evaluation of several cells' tasks (harness.run.row)."""

    output: dict[str, Any]  # what lm-eval returned about the cell's own tasks
    inference: Any  # the cell's share of the evaluation's work (a PhaseCost)
    evaluate_s: float  # and of its wall time
    together: int  # how many cells shared the evaluation
    resumed: bool  # whether answers came back from a killed try's response cache


def evaluate_cell(cell: Cell, workdir: Path, store: Store | None = None,
                  built: BuiltLM | None = None, keep: bool = False,
                  shared: SharedEvaluation | None = None
                  ) -> tuple[CellRecord, list[dict[str, Any]], BuiltLM | None]:
    """Build the method's LM (or reuse `built`), evaluate it with lm-eval (or take its part
    of an evaluation `shared` with other cells), collect samples, score, record. Returns the
    record, the samples and, with `keep`, the LM for the job's next cell."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # answers a killed try saved come back with their work (harness.run.response_cache), unless
    # an older harness stored them
    resumed = shared.resumed if shared is not None else answers_saved(workdir)
    with cost.metering(cost.CostMeter()) as meter:
        record, samples, built = _evaluate_metered(cell, workdir, store, built, shared)
        record.cost = cost.cell_cost(meter, None, record.n_samples or 0, record.timings,
                                     record.method_report, cell.settings.torch_device,
                                     expect_model_calls=not resumed)
    return record, samples, built if keep else None


def _evaluate_metered(cell: Cell, workdir: Path, store: Store | None, built: BuiltLM | None,
                      shared: SharedEvaluation | None
                      ) -> tuple[CellRecord, list[dict[str, Any]], BuiltLM]:
    timings: dict[str, float] = {}
    context = build_context(cell, workdir)
    built = acquire_lm(cell, context, built, timings)
    if shared is None:
        with _timed(timings, "evaluate_s"), cost.phase("inference"):
            output = run_lm_eval(cell, built.lm, workdir)
    else:  # evaluated and metered with other cells: this cell's share is its own
        output = shared.output
        timings.update(evaluate_s=round(shared.evaluate_s, 3),
                       evaluated_with=float(shared.together))
        with cost.phase("inference"):
            cost.restore(shared.inference)
    samples = collect_samples(output, built.lm)
    task_ctx = task_context(cell, workdir, store)
    with _timed(timings, "score_s"), cost.phase("scoring"):
        progress.current().phase("score")
        metrics = score_samples(cell, samples, task_ctx)
    record = make_record(cell, metrics, samples, output, context, task_ctx, timings, built.lm)
    return record, samples, built


def acquire_lm(cell: Cell, context: BuildContext, built: BuiltLM | None,
               timings: dict[str, float]) -> BuiltLM:
    """The method's LM for `cell`: built now (its time in `timings`, its report in
    `context`), or `built` reused with the report its build gave."""
    if built is None:
        with _timed(timings, "build_s"), cost.phase("build"):
            progress.current().phase("load")
            try:
                lm = build_lm(cell, context)
            except Exception as exc:
                raise BuildError(first_line(exc)) from exc
        return BuiltLM(lm, copy.deepcopy(context.report), timings["build_s"])
    context.report = copy.deepcopy(built.report)
    timings["build_s"] = built.seconds
    if built.unbilled is None:
        timings["build_shared"] = 1.0
    else:  # built ahead of its first cell, which this is: its work counts here
        with cost.phase("build"):
            cost.restore(built.unbilled)
        built.unbilled = None
    if isinstance(built.lm, HarnessLM):  # the LM's per-cell state (records, report) starts afresh
        built.lm.begin_cell(context)
    return built


class _timed:
    """`with _timed(timings, "build_s"):` records the block's wall time."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self.key] = round(time.perf_counter() - self.started, 3)


def build_context(cell: Cell, workdir: Path) -> BuildContext:
    from harness.settings import cache_root

    settings = cell.settings
    method_code = cell.code.get("method")
    return BuildContext(models=cell.row.models, options=cell.row.options, task=cell.column.spec,
                        task_options=cell.column.options, seed=settings.seed,
                        device=settings.torch_device, batch_size=settings.batch_size,
                        workdir=workdir, data=settings.data_source,
                        method_code={"version": method_code.version,
                                     "distribution": method_code.distribution}
                        if method_code else {},
                        cache_root=cache_root(), prefix_cache=settings.prefix_cache)


def build_lm(cell: Cell, context: BuildContext) -> Any:
    """Step 1: the method's lm-eval LM, built on the cell's models (training included)."""
    _seed_everything(cell.settings.seed)
    return cell.row.spec.build(context)


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
    record = base_record(cell, "ok")
    value, stderr = metrics[cell.column.spec.headline.key]
    record.headline = Score(_number(value), stderr)
    record.metrics = {k: Score(_number(v), se) for k, (v, se) in sorted(metrics.items())}
    record.score_details = task_ctx.score_details
    record.n_samples = len({(s["task"], s["doc_id"]) for s in samples})
    record.lm_eval = {"tasks": sorted(output["samples"]), "n-shot": output.get("n-shot"),
                      "versions": output.get("versions"), "task_results": output.get("results")}
    record.method_report = context.report
    record.timings = timings
    record.hardware = hardware(cell.settings.torch_device)
    record.numerics = numerics(cell, lm)
    record.git_commit = git_commit()
    return record


def numerics(cell: Cell, lm: Any) -> dict[str, Any]:
    """The settings a cell's numbers depend on beyond its identity: the batch size asked
    for and the one used, the models' dtypes and attention implementations."""
    models = list(_transformers_models(lm)) if lm is not None else []
    return {"batch_size": cell.settings.batch_size,
            # lm-eval's HFLM keeps the sizes "auto" found per request length in batch_sizes
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


def commit_evaluated(store: Store, cell: Cell, record: CellRecord, samples: list[dict[str, Any]],
                     log: Path | None) -> CellOutcome:
    """Commit an evaluated cell (its log with it), or record it failed when its headline
    could not be computed."""
    if not record.has_score:  # kept whole (metrics, details, samples), but not done
        reason = (record.score_details.headline_unavailable
                  or f"no {record.task.headline_key} could be computed (NaN)")
        record.status, record.reason = "failed", f"no score: {reason}"
        store.record_failure(record, store.log_path(cell.fingerprint), samples)
        return CellOutcome(cell, "failed", error=record.reason)
    path = store.commit_cell(record, samples, log)
    headline = record.headline.value if record.headline else None
    return CellOutcome(cell, "ok", path, headline)


def record_failure(store: Store, cell: Cell, error: str, trace: str,
                    log: Path | None = None) -> CellOutcome:
    record = base_record(cell, "failed", error)
    record.traceback = trace
    store.record_failure(record, log)
    return CellOutcome(cell, "failed", error=error)
