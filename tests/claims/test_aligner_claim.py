"""Aligner's claim on `answer_form` (form) against `mixed_domains`' backward alphabet
(knowledge): one global token moves a base model's answer form without touching what it
knows, and cannot teach it a new map.

The default test is the reduced claim: `expert-forms` (built on first use: 600 pretraining
steps) answers in the bare form (exact match 0.0, content 1.0); a 1-token Aligner (72
parameters) fitted for 100 steps moves it to the asked form (measured 0.60 on 20
questions) and keeps the content. 33 s of CPU from an empty cache. The full comparison
(every adapter, both tasks, three fit seeds, pooled tests) runs with HARNESS_SLOW_TESTS=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from claims.claims_support import assert_suite_reproduces_the_committed_verdicts

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings

BASE = (ModelRef("harness-zoo/expert-forms"),)


def test_one_global_token_moves_the_form_and_keeps_the_content(tmp_path: Path) -> None:
    host = load_host()
    aligner = host.method("aligner")
    rows = [MethodRow(host.method("single"), BASE, host.method("single").options(), "base"),
            MethodRow(aligner, BASE, aligner.options(num_tokens=1, lr=0.03, max_steps=100,
                                                     batch_size=16, micro_batch_size=16,
                                                     loss_on_prompt=False), "aligner")]
    task = host.task("answer_form")
    store = Store(tmp_path / "out")
    plan = plan_cells(host, rows, [TaskColumn(task, task.options())],
                      RunSettings(data="embedded", limit=20, device="cpu", seed=1), store)
    outcomes = run_plan(host, plan)
    assert [o.status for o in outcomes] == ["ok"] * len(rows), [o.error for o in outcomes]
    scores = {r.row.label: {k.partition(",")[0]: v.value for k, v in r.metrics.items()}
              for r in store.results()}
    assert scores["base"]["exact_match"] <= 0.1 and scores["base"]["content"] >= 0.9
    assert scores["aligner"]["exact_match"] >= scores["base"]["exact_match"] + 0.3
    assert scores["aligner"]["content"] >= 0.9
    report = next(r for r in store.results() if r.row.label == "aligner").method_report
    assert report.trainable_params == 64 + (4 - 2) * 4  # N*d + (L-2)*H


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "fits 9 adapters on two tasks for three seeds (about 30 CPU-minutes on two cores); "
    "set HARNESS_SLOW_TESTS=1 to run it"))
def test_the_full_comparison_over_three_fit_seeds(tmp_path: Path) -> None:
    assert_suite_reproduces_the_committed_verdicts("aligner_claims", "aligner", tmp_path)
