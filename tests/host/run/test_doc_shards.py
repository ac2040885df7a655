"""Document shards merge before scoring: 1 shard and 4 shards give identical metrics and
samples for every built-in task (corpus metrics are computed once, on all predictions)."""

from __future__ import annotations

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.files import read_jsonl
from harness.host import load_host
from harness.results.store import Store
from harness.run.jobs import make_jobs, run_plan
from harness.run.plan import plan_cells
from harness.run.shards import merged_samples
from harness.settings import RunSettings

TASKS = {
    "mmlu": ("harness-zoo/tiny-llama", {"subjects": ["astronomy"], "num_fewshot": 2}),
    "gsm8k": ("harness-zoo/tiny-llama", {"num_fewshot": 2, "max_gen_toks": 8}),
    "flores": ("harness-zoo/tiny-llama", {"max_gen_toks": 8, "directions": ["swh_Latn-eng_Latn"]}),
    "humaneval": ("harness-zoo/tiny-llama", {"allow_code_execution": True, "max_gen_toks": 16,
                                             "allow_weak_isolation": True}),
    "coco_captioning": ("harness-zoo/tiny-vlm", {"max_gen_toks": 6}),
    # judged by a local zoo model: the judge's aggregate is computed on the merged answers
    "vicuna_bench": ("harness-zoo/tiny-llama", {"max_gen_toks": 8, "judge_max_tokens": 8}),
}


def _run(tmp_path, task: str, shards: int):
    from harness.options import build_options

    host = load_host()
    single, spec = host.method("single"), host.task(task)
    model, options = TASKS[task]
    rows = [MethodRow(single, (ModelRef(model),), single.options())]
    columns = [TaskColumn(spec, build_options(spec.options, options, task))]
    store = Store(tmp_path / f"{task}-{shards}")
    # without prefix caching: each shard would compute a shared few-shot prefix once, so the
    # shards' costs would not add up to the whole's (the metrics would not move)
    plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=4,
                                                       doc_shards=shards, prefix_cache=False),
                      store)
    assert len(make_jobs(plan.cells, doc_shards=shards)) == shards
    [outcome] = run_plan(host, plan)
    assert outcome.status == "ok", outcome.error
    [record] = store.results()
    samples = read_jsonl(store.cell_dir(record.row.method, task, record.fingerprint)
                         / "samples.jsonl")
    return record, samples


@pytest.mark.parametrize("task", sorted(TASKS))
def test_four_shards_give_the_unsharded_metrics(task, tmp_path) -> None:
    whole, whole_samples = _run(tmp_path, task, 1)
    sharded, sharded_samples = _run(tmp_path, task, 4)
    assert sharded.fingerprint == whole.fingerprint  # sharding is not part of a cell's identity
    assert sharded.metrics == whole.metrics
    assert sharded.method_report.doc_shards == 4
    # one request per forward pass (batch size 1): the shards' costs add up to the whole's
    counts = lambda record: [(m.model, m.prompt_tokens, m.generated_tokens, m.forward_passes)  # noqa: E731
                             for m in record.cost.inference.models]
    assert counts(sharded) == counts(whole) and counts(whole)
    strip = lambda samples: [{k: v for k, v in s.items() if k != "sandbox"} for s in samples]  # noqa: E731
    assert strip(sharded_samples) == strip(whole_samples)


def test_merge_restores_the_unsharded_order() -> None:
    def shard(k: int) -> list[dict]:
        return [{"task": t, "filter": f, "doc_id": d} for t in ("a", "b")
                for f in ("strict", "flexible") for d in range(8) if d % 2 == k]

    merged = merged_samples([shard(1), shard(0)])
    assert [(s["task"], s["filter"], s["doc_id"]) for s in merged] == [
        (t, f, d) for t in ("a", "b") for f in ("strict", "flexible") for d in range(8)]
