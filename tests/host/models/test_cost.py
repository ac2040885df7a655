"""Cost accounting: exact token and forward counts, K-fold cost of a pack, training budget,
old records without cost, the cost column and the score-vs-FLOPs plot with its Pareto front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.files import read_jsonl
from harness.host import load_host
from harness.models import cost
from harness.models.loading import load_causal_lm, load_tokenizer
from harness.report.board import build_board
from harness.report.json_board import board_json
from harness.report.markdown import markdown
from harness.report.plots import pareto_front, plot_cost_png
from harness.results.records import CellRecord
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings

from support import HOST_FIXTURES

TINY = ModelRef("harness-zoo/tiny-llama")
V1_RESULTS = HOST_FIXTURES / "v1_results"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """single, packllm over the same model twice, and a short LoRA fit, on two gsm8k
    documents with batch size 1 (no padding, so positions are exactly token counts)."""
    host = load_host()
    single, packllm, lora, gsm8k = (host.method("single"), host.method("packllm"),
                                    host.method("lora"), host.task("gsm8k"))
    rows = [MethodRow(single, (TINY,), single.options()),
            MethodRow(packllm, (TINY, TINY), packllm.options()),
            MethodRow(lora, (TINY,), lora.options(max_steps=2, batch_size=2,
                                                  micro_batch_size=2))]
    columns = [TaskColumn(gsm8k, gsm8k.options(num_fewshot=0, max_gen_toks=4))]
    store = Store(tmp_path_factory.mktemp("cost"))
    plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=2, batch_size=1),
                      store)
    assert [o.status for o in run_plan(host, plan)] == ["ok", "ok", "ok"]
    return store


def _record(store: Store, method: str) -> CellRecord:
    [record] = [r for r in store.results() if r.row.method == method]
    assert record.cost is not None
    return record


def test_single_counts_every_prompt_token_and_decoding_step(runs: Store) -> None:
    record = _record(runs, "single")
    samples = read_jsonl(runs.cell_dir("single", "gsm8k", record.fingerprint) / "samples.jsonl")
    prompts = {s["doc_id"]: s["prompt"] for s in samples}  # one request per document
    tokenizer = load_tokenizer(TINY)
    [model] = record.cost.inference.models
    assert model.model == TINY.id
    assert model.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts.values())
    # one prefill per document, then one single-position forward per decoding step
    assert model.forward_passes == len(prompts) + model.generated_tokens
    assert 0 < model.generated_tokens <= 3 * len(prompts)
    assert model.parameters == cost.matmul_parameters(load_causal_lm(TINY)[0])
    assert model.flops == 2 * model.parameters * model.tokens == record.cost.inference.flops
    assert record.cost.documents == 2
    assert record.cost.inference_flops_per_document == model.flops // 2
    assert record.cost.build.models == [] and record.cost.scoring.flops == 0
    assert set(record.cost.wall_s) == {"build", "evaluate", "score"}
    assert record.cost.peak_memory_bytes and record.cost.peak_memory_kind == "process_max_rss"


def test_a_pack_of_two_costs_twice_a_single_plus_its_fusion(runs: Store) -> None:
    single, pack = _record(runs, "single").cost, _record(runs, "packllm").cost
    assert [m.model for m in pack.inference.models] == [TINY.id, f"{TINY.id}#2"]
    for member in pack.inference.models:  # same prompts, same decoding budget
        assert member.prompt_tokens == single.inference.models[0].prompt_tokens
    member_flops = sum(m.flops for m in pack.inference.models)
    assert pack.inference.extra_flops["fusion"] > 0
    assert pack.inference.flops == member_flops + pack.inference.extra_flops["fusion"]
    assert 1.9 < pack.inference.flops / single.inference.flops < 2.1


def test_a_fit_records_its_trainable_parameters_and_training_tokens(runs: Store) -> None:
    record = _record(runs, "lora")
    spent = record.cost
    assert spent.trainable_parameters == record.method_report.trainable_params > 0
    assert spent.training_tokens == record.method_report.train_tokens > 0
    parameters = cost.matmul_parameters(load_causal_lm(TINY)[0]) + spent.trainable_parameters
    assert spent.training_flops == ((4 * parameters + 2 * spent.trainable_parameters)
                                    * spent.training_tokens)
    if spent.fit_cached:  # a warm HARNESS_TEST_CACHE: the fit was loaded, not computed
        assert spent.build.models == []
        return
    [trained] = spent.build.models  # the fit's forward passes, counted in the build phase
    assert trained.parameters == parameters and spent.wall_s["fit"] > 0
    assert trained.forward_passes == 2 and trained.prompt_tokens >= spent.training_tokens


def test_cost_survives_the_json_round_trip(runs: Store) -> None:
    record = _record(runs, "packllm")
    again = CellRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.cost == record.cost


def test_meter_counts_prompt_and_cached_positions_per_phase() -> None:
    import torch

    model, _ = load_causal_lm(TINY)
    meter = cost.CostMeter()
    with cost.metering(meter):
        with cost.phase("inference"), torch.no_grad():
            out = model(input_ids=torch.ones((2, 5), dtype=torch.long), use_cache=True)
            model(input_ids=torch.ones((2, 1), dtype=torch.long), cache=out.cache, use_cache=True)
        with cost.phase("scoring"), torch.no_grad():
            model(torch.ones((1, 7), dtype=torch.long))
    model(torch.ones((1, 3), dtype=torch.long))  # no cell running: not counted
    [inference] = meter.phase_cost("inference").models
    assert (inference.prompt_tokens, inference.generated_tokens, inference.forward_passes) == (10, 2, 2)
    [scoring] = meter.phase_cost("scoring").models
    assert (scoring.prompt_tokens, scoring.forward_passes) == (7, 1)
    assert meter.phase_cost("build").models == []


def test_pareto_front() -> None:
    points = [(1.0, 0.2), (2.0, 0.5), (2.0, 0.4), (3.0, 0.5), (4.0, 0.9), (0.5, 0.1)]
    assert pareto_front(points) == [5, 0, 1, 4]
    assert pareto_front(points, higher_is_better=False) == [5]
    assert pareto_front([]) == []


def test_board_shows_cost_and_plots_score_against_flops(runs: Store, tmp_path: Path) -> None:
    board = build_board(runs.root)
    by_method = {row.method: row for row in board.rows}
    single = _record(runs, "single").cost
    assert by_method["single"].flops_per_document == single.inference_flops_per_document
    assert "inference FLOPs/doc" in markdown(board)
    payload = json.loads(board_json(board))
    [row] = [r for r in payload["rows"] if r["method"] == "packllm"]
    assert row["cells"]["gsm8k"]["cost"]["inference"]["models"][1]["model"] == f"{TINY.id}#2"
    assert board_json(build_board(runs.root)) == board_json(board)  # deterministic
    target = tmp_path / "leaderboard-cost.png"
    plot_cost_png(board, target)
    assert target.stat().st_size > 1000


def test_old_records_without_cost_still_load_and_render(tmp_path: Path) -> None:
    shutil.copytree(V1_RESULTS, tmp_path / "results")
    records = list(Store(tmp_path / "results").results())
    assert records and all(r.cost is None for r in records)
    board = build_board(tmp_path / "results")
    assert all(row.flops_per_document is None for row in board.rows)
    assert "| — |" in markdown(board)
    plot_cost_png(board, tmp_path / "cost.png")  # panels say no cost was recorded
    assert (tmp_path / "cost.png").is_file()
