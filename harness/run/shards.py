"""Document shards: one cell's documents spread over several jobs, merged before scoring.

Every shard builds all of the cell's lm-eval requests (so prompts and few-shot draws are
exactly those of an unsharded run, whatever lm-eval's sampler) but asks the model only
those of its own documents (doc_id % N == k); the rest get placeholders that are never
kept. A shard's samples are saved in the cell's workdir. The shard that completes the
set merges every shard's samples in the unsharded order and scores them once, so corpus
metrics (BLEU, chrF++, CIDEr, pass@k, judge aggregates) are computed on all predictions,
never averaged over shards.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path
from typing import Any

from harness.contract import Cell, CellOutcome, Job, MethodReport, Plan, PluginHost
from harness.errors import HarnessError, first_line, redact
from harness.files import atomic_write_text
from harness.models import cost
from harness.results.records import phase_cost
from harness.run import progress
from harness.run.cell import (build_context, build_lm, make_record, numerics, record_failure,
                              score_samples)
from harness.run.lm_eval_adapter import collect_samples, run_lm_eval
from harness.run.plan import task_context

PLACEHOLDERS = {"loglikelihood": (0.0, False), "loglikelihood_rolling": 0.0, "generate_until": ""}


def document_shard_lm(lm: Any, index: int, count: int) -> Any:
    """`lm` answering only the requests of documents in shard `index` of `count`."""
    from lm_eval.api.model import LM

    class DocumentShard(LM):
        MULTIMODAL = getattr(lm, "MULTIMODAL", False)

        def __init__(self) -> None:
            super().__init__()
            self.inner = lm

        def set_cache_hook(self, cache_hook: Any) -> None:
            super().set_cache_hook(cache_hook)
            lm.set_cache_hook(cache_hook)

        def __getattr__(self, name: str) -> Any:  # chat templates, tokenizer name, ...
            return getattr(lm, name)

        def _answer(self, kind: str, requests: list[Any]) -> list[Any]:
            mine = [r for r in requests if (r.doc_id or 0) % count == index]
            answers = iter(getattr(lm, kind)(mine) if mine else [])
            return [next(answers) if (r.doc_id or 0) % count == index else PLACEHOLDERS[kind]
                    for r in requests]

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            return self._answer("loglikelihood", requests)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                                  ) -> list[Any]:
            return self._answer("loglikelihood_rolling", requests)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            return self._answer("generate_until", requests)

        def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
            return lm.apply_chat_template(*args, **kwargs)

        @property
        def tokenizer_name(self) -> str:
            return lm.tokenizer_name

    return DocumentShard()


def shard_path(plan: Plan, cell: Cell, index: int, count: int) -> Path:
    return plan.store.workdir(cell.fingerprint) / "shards" / f"{index}-of-{count}.json"


def run_shard(host: PluginHost, plan: Plan, job: Job, capture_logs: bool) -> list[CellOutcome]:
    """Evaluate one shard of one cell, then merge and record the cell if every shard is
    there. Returns the cell's outcome, or a "shard" outcome while shards are missing."""
    [cell] = job.cells
    index, count = job.shard  # type: ignore[misc]
    store = plan.store
    if not plan.force and store.is_done(cell.method, cell.task, cell.fingerprint):
        return [CellOutcome(cell, "skipped", store.cell_dir(cell.method, cell.task,
                                                            cell.fingerprint))]
    path = shard_path(plan, cell, index, count)
    with store.claim(cell.fingerprint, part=f"-{index}of{count}") as holder:
        if holder is not None:
            return [CellOutcome(cell, "busy", error=f"shard {index + 1}/{count} running in "
                                                    f"process {holder}")]
        if not path.exists():
            host.hook.harness_cell_started(cell=cell)
            try:
                with progress.captured_output(path.with_suffix(".log") if capture_logs else None):
                    _evaluate_shard(cell, path, index, count, store)
            except Exception as exc:  # a failing shard fails its cell, never the matrix
                message = (str(exc) if isinstance(exc, HarnessError)
                           else f"{type(exc).__name__}: {first_line(exc)}")
                outcome = record_failure(store, cell, f"shard {index + 1}/{count}: {message}",
                                         traceback.format_exc(), path.with_suffix(".log"))
                host.hook.harness_cell_finished(cell=cell, outcome=outcome)
                return [outcome]
    paths = [shard_path(plan, cell, k, count) for k in range(count)]
    if not all(p.exists() for p in paths):
        return [CellOutcome(cell, "shard")]
    with store.claim(cell.fingerprint) as holder:
        if holder is not None or store.is_done(cell.method, cell.task, cell.fingerprint):
            return [CellOutcome(cell, "skipped")]  # another shard's process merges it
        outcome = _merge(plan, cell, paths, capture_logs)
    host.hook.harness_cell_finished(cell=cell, outcome=outcome)
    return [outcome]


def _evaluate_shard(cell: Cell, path: Path, index: int, count: int, store: Any) -> None:
    workdir = path.parent / f"{index}-of-{count}"
    context = build_context(cell, workdir)
    started = time.perf_counter()
    with cost.metering(cost.CostMeter()) as meter:
        with cost.phase("build"):
            progress.current().phase("load")
            lm = build_lm(cell, context)
        built = time.perf_counter()
        with cost.phase("inference"):
            output = run_lm_eval(cell, document_shard_lm(lm, index, count), workdir)
    samples = [s for s in collect_samples(output, lm) if (s.get("doc_id") or 0) % count == index]
    atomic_write_text(path, redact(json.dumps({
        "samples": samples, "report": context.report.to_dict(),
        "lm_eval": {"tasks": sorted(output["samples"]), "n-shot": output.get("n-shot"),
                    "versions": output.get("versions")},
        "numerics": numerics(cell, lm),
        "cost": {name: dataclasses.asdict(meter.phase_cost(name)) for name in ("build", "inference")},
        "timings": {"build_s": round(built - started, 3),
                    "evaluate_s": round(time.perf_counter() - built, 3)}}, default=str)))


def merged_samples(shards: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every shard's samples in the order of an unsharded run: by task, then by filter
    (in lm-eval's order of first appearance), then by document."""
    samples = [s for shard in shards for s in shard]
    filters: dict[tuple[str, Any], int] = {}
    for shard in shards:
        for sample in shard:
            filters.setdefault((sample["task"], sample.get("filter")), len(filters))
    return sorted(samples, key=lambda s: (s["task"], filters[s["task"], s.get("filter")],
                                          s.get("doc_id") or 0))


def _merge(plan: Plan, cell: Cell, paths: list[Path], capture_logs: bool) -> CellOutcome:
    shards = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    samples = merged_samples([s["samples"] for s in shards])
    workdir = plan.store.workdir(cell.fingerprint)
    log = plan.store.log_path(cell.fingerprint)
    log.write_text("".join(p.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
                           for p in paths if p.with_suffix(".log").exists()), encoding="utf-8")
    context = build_context(cell, workdir)
    context.report = MethodReport.from_dict(shards[0]["report"])
    context.report.doc_shards = len(paths)
    task_ctx = task_context(cell, workdir, plan.store)
    meter = cost.CostMeter()
    try:
        started = time.perf_counter()
        with cost.metering(meter), cost.phase("scoring"):
            metrics = score_samples(cell, samples, task_ctx)
        score_s = round(time.perf_counter() - started, 3)
    except Exception as exc:
        message = (str(exc) if isinstance(exc, HarnessError)
                   else f"{type(exc).__name__}: {first_line(exc)}")
        return record_failure(plan.store, cell, message, traceback.format_exc(), log)
    output = {"samples": {task: [] for task in shards[0]["lm_eval"]["tasks"]},
              "n-shot": shards[0]["lm_eval"]["n-shot"],
              "versions": shards[0]["lm_eval"]["versions"], "results": None}
    timings = {key: round(sum(s["timings"][key] for s in shards), 3)
               for key in ("build_s", "evaluate_s")} | {"score_s": score_s}
    record = make_record(cell, metrics, samples, output, context, task_ctx, timings)
    # every shard built the method and evaluated its share: the cell cost their sum
    phases = {name: cost.combined([phase_cost(s["cost"][name]) for s in shards if "cost" in s])
              for name in ("build", "inference")} | {"scoring": meter.phase_cost("scoring")}
    record.cost = cost.cell_cost(None, phases, record.n_samples or 0, timings,
                                 record.method_report, cell.settings.torch_device)
    record.numerics = shards[0]["numerics"]
    if not record.has_score:
        record.status = "failed"
        record.reason = "no score: " + (record.score_details.headline_unavailable or "NaN")
        plan.store.record_failure(record, log, samples)
        return CellOutcome(cell, "failed", error=record.reason)
    path = plan.store.commit_cell(record, samples, log if capture_logs else None)
    return CellOutcome(cell, "ok", path, record.headline.value if record.headline else None)
