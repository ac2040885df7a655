"""`harness rescore`: a finished cell's metrics recomputed from its stored samples.

No model is loaded: the task's own scorer (`TaskSpec.score`, or the mean of lm-eval's
per-sample metrics) runs again on the samples the cell stored, with the task options the
cell ran with and any the user overrides (a new judge, a metric option), under the task
code installed now (a fixed scorer). An override that would change what the model was
asked (the task's lm-eval configs) is refused: those numbers need a new run.

The rescored cell is a new record in another results root: its identity is the original's
with the new task options, task code and a `rescored_from` entry, so its fingerprint
never collides with a cell a real run computes; the record's `rescored_from` field names
the cell it came from. It is committed like any cell (checksums included).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.contract import DataSource, TaskContext, TaskSpec, options_to_dict
from harness.errors import DataError, HarnessError, UsageError
from harness.files import fingerprint
from harness.host import Host
from harness.options import build_options
from harness.results.records import CellRecord, Score, TaskInfo
from harness.results.store import Store


@dataclass(frozen=True)
class Rescored:
    record: CellRecord
    path: Path
    changed: dict[str, tuple[float | None, float | None]]  # metric -> (before, after)


def data_source(description: str) -> DataSource:
    """A record's `task.data` ("embedded", "hf", "local:/path") as a DataSource."""
    kind, _, path = description.partition(":")
    if kind not in ("hf", "local", "embedded"):
        raise DataError(f"unknown data source {description!r} in a cell record")
    return DataSource(kind, Path(path) if path else None)  # type: ignore[arg-type]


def _plan_identity(spec: TaskSpec, ctx: TaskContext) -> Any:
    from harness.run.identity import config_identity

    plan = spec.lm_eval(ctx)
    return {"tasks": config_identity(plan.tasks), "num_fewshot": plan.num_fewshot,
            "gen_kwargs": plan.gen_kwargs, "apply_chat_template": plan.apply_chat_template}


def rescore_cell(host: Host, source: Store, target: Store, record: CellRecord,
                 overrides: Mapping[str, Any], workdir: Path) -> Rescored:
    from harness.run.cell import mean_metrics

    spec = host.task(record.task.name)
    options = build_options(spec.options, {**record.task.options, **overrides},
                            f"task {spec.name!r}")
    context = TaskContext(options=options, data=data_source(record.task.data), workdir=workdir,
                          limit=record.limit, seed=record.seed or 0, store=source)
    if overrides:
        before = build_options(spec.options, record.task.options, f"task {spec.name!r}")
        if _plan_identity(spec, dataclasses.replace(context, options=before)) != \
                _plan_identity(spec, context):
            raise UsageError(f"task option(s) {', '.join(sorted(overrides))} change what the "
                             f"model is asked on {spec.name}; rescoring cannot answer that, "
                             f"run the cells again")
    samples = source.samples_of(record)
    if not samples:
        raise DataError(f"{record.row.label} × {record.task.name}: no stored samples to rescore")
    samples = copy.deepcopy(samples)
    metrics = dict(spec.score(samples, context)) if spec.score else mean_metrics(samples)
    headline_key = spec.headline.key
    if headline_key not in metrics:
        raise HarnessError(f"task {spec.name!r} produced no headline metric {headline_key!r}")
    code = host.code_of(spec)
    new = copy.deepcopy(record)
    new.task = TaskInfo(**{**dataclasses.asdict(record.task),
                           "options": options_to_dict(options)})
    value, stderr = metrics[headline_key]
    new.headline = Score(None if value is None else float(value), stderr)
    new.metrics = {k: Score(None if v is None else float(v), se)
                   for k, (v, se) in sorted(metrics.items())}
    new.score_details = context.score_details
    new.code = {**record.code, "task": code}
    new.rescored_from = {"fingerprint": record.fingerprint, "results": str(source.root),
                         "finished_at": record.finished_at, "task_options": record.task.options,
                         "task_code": (dataclasses.asdict(record.code["task"])
                                       if "task" in record.code else None)}
    new.identity = {**record.identity,
                    "task": {**record.identity.get("task", {}),
                             "options": options_to_dict(options), "version": code.version,
                             "distribution": code.distribution},
                    "rescored_from": record.fingerprint}
    new.fingerprint = fingerprint(new.identity)
    new.finished_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if not new.has_score:
        why = new.score_details.headline_unavailable or "NaN"
        raise HarnessError(f"{record.row.label} × {record.task.name}: rescoring gave no "
                           f"{headline_key} ({why})")
    path = target.commit_cell(new, samples)
    changed = {k: (record.metrics[k].value if k in record.metrics else None, s.value)
               for k, s in new.metrics.items()
               if k not in record.metrics or record.metrics[k].value != s.value}
    return Rescored(new, path, changed)


def rescore(host: Host, results: Path, out: Path, tasks: Sequence[str] = (),
            overrides: Mapping[str, Any] | None = None) -> list[Rescored]:
    """Rescore every finished cell of `results` (of `tasks`, when named) into `out`."""
    source, target = Store(results), Store(out)
    if Path(out).resolve() == Path(results).resolve():
        raise UsageError("rescore writes beside the original cells: --out must name another "
                         "results root")
    for name in tasks:
        host.task(name)  # unknown names fail here, with a suggestion
    records = [r for r in source.results()
               if r.status == "ok" and (not tasks or r.task.name in tasks)]
    if not records:
        raise UsageError(f"{results}: no finished cells"
                         + (f" of task(s) {', '.join(tasks)}" if tasks else ""))
    done = []
    with tempfile.TemporaryDirectory(prefix="harness-rescore-") as scratch:
        for record in records:
            done.append(rescore_cell(host, source, target, record, overrides or {},
                                     Path(scratch)))
    return done
