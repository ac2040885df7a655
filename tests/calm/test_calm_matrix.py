"""CALM through the normal matrix: cells on flores, gsm8k and humaneval with two tiny zoo
Llamas as anchor and augmenting model (embedded data, two documents). FLORES ships no
training split, so the composition set is a small Alpaca-format file; one fit then serves
all three cells."""

from __future__ import annotations

import json
from pathlib import Path

from calm.calm_support import ANCHOR, AUGMENTING

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.options import build_options
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings

BUDGET = {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "every": 2}


def test_calm_cells_on_flores_gsm8k_and_humaneval(tmp_path: Path):
    alpaca = tmp_path / "composition.json"
    alpaca.write_text(json.dumps([{"instruction": f"Translate {w}.", "input": "", "output": w}
                                  for w in ("yes", "no", "maybe", "four")]))
    host = load_host(["harness.plugins.calm", "harness.tasks.flores", "harness.tasks.gsm8k",
                      "harness.tasks.humaneval"])
    spec = host.method("calm")
    row = MethodRow(spec, (ModelRef(ANCHOR), ModelRef(AUGMENTING)),
                    build_options(spec.options, BUDGET | {"training_data": str(alpaca)}, "calm"), "calm")
    tasks = {"flores": {"max_gen_toks": 8}, "gsm8k": {"max_gen_toks": 8, "num_fewshot": 1},
             "humaneval": {"max_gen_toks": 8, "allow_code_execution": True, "workers": 1}}
    columns = [TaskColumn(host.task(name), host.task(name).options(**options))
               for name, options in tasks.items()]
    plan = plan_cells(host, [row], columns, RunSettings(data="embedded", limit=2),
                      Store(tmp_path / "results"))
    outcomes = run_plan(host, plan)
    assert [o.status for o in outcomes] == ["ok"] * 3, [o.error for o in outcomes]
    reports = [json.loads((o.path / "result.json").read_text())["method_report"]
               for o in outcomes]
    assert [r["fit_cached"] for r in reports] == [False, True, True]
    for report in reports:
        assert report["connections"] == [{"anchor_layer": 1, "augmenting_layer": 1},
                                         {"anchor_layer": 3, "augmenting_layer": 3}]
        assert report["layout"] == "causal" and report["train_steps"] == 2
        assert report["trainable_params"] == 2 * (64 * 64 + 64 + 4 * 64 * 64 + 4 * 64)
        assert 0 < report["trainable_share_of_anchor"] < 1
