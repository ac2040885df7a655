"""Training methods through the runner on the embedded gsm8k and mmlu samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.options import build_options
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings

METHODS = ("aligner", "adalink", "lora", "prompt_tuning", "llama_adapter", "full_ft")
SMOKE_BUDGET = {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4}
REPORT_KEYS = {"trainable_params", "total_params", "train_tokens", "train_seconds", "final_loss"}


def _run(methods: tuple[str, ...], tmp_path: Path, **options) -> list:
    host = load_host([*(f"harness.plugins.{m}" for m in methods)])
    rows = []
    for name in methods:
        spec = host.method(name)
        values = SMOKE_BUDGET | options | ({"num_virtual_tokens": 4} if name == "prompt_tuning" else {})
        rows.append(MethodRow(spec, (ModelRef("harness-zoo/tiny-llama"),),
                              build_options(spec.options, values, name), name))
    columns = [TaskColumn(host.task("gsm8k"), host.task("gsm8k").options(max_gen_toks=8, num_fewshot=1)),
               TaskColumn(host.task("mmlu"), host.task("mmlu").options(num_fewshot=1))]
    plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=1),
                      Store(tmp_path / "results"))
    outcomes = run_plan(host, plan)
    assert [o.status for o in outcomes] == ["ok"] * len(outcomes), [o.error for o in outcomes]
    return [json.loads((o.path / "result.json").read_text()) for o in outcomes]


def test_one_alpaca_fit_serves_several_tasks(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": f"Say {w}.", "input": "", "output": w}
                                  for w in ("yes", "no", "maybe", "four")]))
    gsm8k, mmlu = _run(("aligner",), tmp_path, training_data=str(alpaca))
    for record in (gsm8k, mmlu):
        assert record["row"]["trains"]
        assert REPORT_KEYS <= set(record["method_report"])
        assert record["method_report"]["train_data"] == f"alpaca-json:{alpaca}"
    assert not gsm8k["method_report"]["fit_cached"] and mmlu["method_report"]["fit_cached"]
    assert gsm8k["method_report"]["fit_fingerprint"] == mmlu["method_report"]["fit_fingerprint"]


@pytest.mark.slow
def test_every_training_method_on_gsm8k_and_mmlu(tmp_path):
    records = _run(METHODS, tmp_path)
    assert len(records) == 2 * len(METHODS)
    for record in records:
        report = record["method_report"]
        assert REPORT_KEYS <= set(report) and report["train_steps"] == 2
        assert report["train_data"].startswith(f"task-train:{record['task']['name']}")
