"""The FUSE methods in the harness: captioning rows side by side, prompt discovery as a
training method (cached, reported), refusals and bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks.coco_captioning import scoring

from support import run_cli

SMALL_SEARCH = {"steps": 2, "candidates": 8, "beam_width": 2}


def _row(host, method: str, label: str, **options) -> MethodRow:
    spec = host.method(method)
    return MethodRow(spec, tuple(ModelRef(m) for m in spec.default_models), spec.options(**options), label)


@pytest.mark.skipif(scoring.java_problem() is not None, reason="pycocoevalcap or Java missing")
def test_fuse_rows_side_by_side_and_prompt_discovery(tmp_path: Path) -> None:
    host = load_host()
    rows = [_row(host, "fuse", "fuse", **SMALL_SEARCH),
            _row(host, "fuse", "fuse-no-gradient", guidance="none", **SMALL_SEARCH),
            _row(host, "fuse_prompt", "fuse_prompt", train_examples=2, **SMALL_SEARCH)]
    columns = [TaskColumn(host.task(name), host.task(name).options())
               for name in ("coco_captioning", "mmlu", "gsm8k")]
    settings = RunSettings(data="embedded", limit=1)
    plan = plan_cells(host, rows, columns, settings, Store(tmp_path / "out"))
    by_cell = {(c.row.label, c.column.spec.name): c for c in plan.cells}
    assert by_cell["fuse", "gsm8k"].reason == "captions images only"
    assert by_cell["fuse", "mmlu"].state == "n/a"
    assert by_cell["fuse_prompt", "coco_captioning"].reason == "needs vision"
    plan.cells = [c for c in plan.cells if (c.row.label, c.column.spec.name) != ("fuse_prompt", "gsm8k")]
    outcomes = {(o.cell.row.label, o.cell.column.spec.name): o for o in run_plan(host, plan)}
    records = {key: json.loads((o.path / "result.json").read_text())
               for key, o in outcomes.items() if o.status == "ok"}
    assert set(records) == {("fuse", "coco_captioning"), ("fuse-no-gradient", "coco_captioning"),
                            ("fuse_prompt", "mmlu")}, {k: o.error for k, o in outcomes.items()}

    caption = records["fuse", "coco_captioning"]
    assert caption["method_report"]["adapter"]["words_per_subtoken_count"][0] > 0
    sample = json.loads((outcomes["fuse", "coco_captioning"].path / "samples.jsonl").read_text())
    assert sample["fuse"]["evaluations"] > 0 and len(sample["fuse"]["step_objectives"]) == 2
    assert sample["response"][0][0]  # a caption

    report = records["fuse_prompt", "mmlu"]["method_report"]
    assert report["prompt"] and report["prompt_ids"]  # fit_cached: True when the cache root is reused
    assert report["train_examples"] == 2 and report["loss_evaluations"] > 0
    assert report["final_loss"] <= min(report["step_losses"])

    # the discovered prompt is a fit: another results folder reuses it
    again = plan_cells(host, rows[2:], columns[1:2], settings, Store(tmp_path / "again"))
    (outcome,) = run_plan(host, again)
    cached = json.loads((outcome.path / "result.json").read_text())["method_report"]
    assert cached["fit_cached"] is True and cached["prompt"] == report["prompt"]


def test_fuse_plans_with_no_flag_but_the_task_and_data(tmp_path: Path) -> None:
    result = run_cli("run", "--method", "fuse", "--task", "coco_captioning", "--data", "embedded",
                     "--dry-run", "--results", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tiny-gpt2" in result.stdout and "tiny-clip" in result.stdout


@pytest.mark.parametrize("flag, message", [
    ("adjoint=transpose", "option 'adjoint': must be one of 'correct', 'official'"),
    ("guidance=gradient", "option 'guidance': must be one of 'fuse', 'none', 'random'"),
    ("steps=0", "steps must be at least 1"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, flag: str, message: str) -> None:
    result = run_cli("run", "--method", "fuse", "--task", "coco_captioning", "--data", "embedded",
                     "-o", flag, "--dry-run", "--results", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
