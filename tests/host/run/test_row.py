"""A row's tasks in one lm-eval evaluation (harness.run.row): resuming, failures kept apart,
cost split. The equality of its records and samples with one evaluation per task, on a
real model, is test_matrix.py's `test_a_row_built_once_gives_the_per_cell_results`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.models import cost
from harness.results.records import ModelCost, PhaseCost
from harness.results.store import Store
from harness.run import cell as cell_module
from harness.run import row
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings

from support import HOST_FIXTURES

PLUGINS = HOST_FIXTURES / "plugins"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(PLUGINS))
    return load_host(["constant_plugin"])


def _run(host: Any, out: Path, *tasks: str) -> dict[str, Any]:
    """The `constant` row on `tasks` (embedded data, two documents): each task's record."""
    method = host.method("constant")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options(score=-2.0))]
    options = {"mmlu": {"subjects": ("astronomy",), "num_fewshot": 1},
               "nan_task": {"num_fewshot": 0}, "gsm8k": {"num_fewshot": 1, "max_gen_toks": 4}}
    columns = [TaskColumn(host.task(t), host.task(t).options(**options[t])) for t in tasks]
    store = Store(out)
    outcomes = run_plan(host, plan_cells(host, rows, columns,
                                         RunSettings(data="embedded", limit=2), store))
    records = {r.task.name: r for r in [*store.results(), *store.failures()]}
    return {o.cell.task: (o.status, records.get(o.cell.task)) for o in outcomes}


def test_a_row_resumes_with_only_its_unfinished_tasks_evaluated_together(host: Any,
                                                                         tmp_path: Path) -> None:
    alone = _run(host, tmp_path / "alone", "mmlu")
    first = _run(host, tmp_path / "row", "mmlu")
    resumed = _run(host, tmp_path / "row", "mmlu", "gsm8k", "nan_task")
    assert resumed["mmlu"][0] == "skipped"  # finished before: never evaluated again
    assert {t: s for t, (s, _) in resumed.items()} == {"mmlu": "skipped", "gsm8k": "ok",
                                                        "nan_task": "failed"}
    gsm8k, nan = resumed["gsm8k"][1], resumed["nan_task"][1]
    # gsm8k and nan_task (MMLU's lm-eval tasks, a scorer without a headline) shared one
    # evaluation; nan_task's failure is its own
    assert gsm8k.timings["evaluated_with"] == 2 and nan.timings["evaluated_with"] == 2
    assert nan.reason.startswith("no score")
    assert first["mmlu"][1].metrics == alone["mmlu"][1].metrics
    assert gsm8k.lm_eval["tasks"] == ["gsm8k"]
    assert all(name.startswith("mmlu") for name in nan.lm_eval["tasks"])


def test_a_jointly_evaluated_cell_that_failed_is_evaluated_again(
        host: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nan_task, the last cell of the joint evaluation, fails for want of a score: its
    scratch folder stays, but the records the row saved there for its commits do not, so
    the next run evaluates it again instead of committing the saved failure."""
    first = _run(host, tmp_path, "gsm8k", "nan_task")
    assert first["nan_task"][0] == "failed" and first["nan_task"][1].timings["evaluated_with"] == 2
    assert not list((tmp_path / "work").glob(f"*/{row.SAVED_RECORDS}"))
    evaluated: list[str] = []
    evaluate = cell_module.run_lm_eval
    monkeypatch.setattr(cell_module, "run_lm_eval",
                        lambda cell, *args: evaluated.append(cell.task) or evaluate(cell, *args))
    again = _run(host, tmp_path, "gsm8k", "nan_task")
    assert {t: s for t, (s, _) in again.items()} == {"gsm8k": "skipped", "nan_task": "failed"}
    assert evaluated == ["nan_task"]
    assert "evaluated_with" not in again["nan_task"][1].timings


def test_the_joint_work_is_split_over_the_cells_whole(host: Any, tmp_path: Path) -> None:
    """The `constant` LM counts a FLOP per prompt character: what the cells of a joint
    evaluation record adds up to what their evaluations one by one count."""
    joint = _run(host, tmp_path / "joint", "mmlu", "gsm8k")
    one_by_one = [_run(host, tmp_path / task, task)[task][1] for task in ("mmlu", "gsm8k")]
    assert joint["gsm8k"][1].timings["evaluated_with"] == 2
    total = sum(r.cost.inference.flops for _, r in joint.values())
    assert total == sum(r.cost.inference.flops for r in one_by_one) > 0
    assert all(r.cost.inference.flops > 0 for _, r in joint.values())


def test_a_joint_evaluation_that_fails_runs_the_cells_one_by_one(
        host: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("one task broke the joint evaluation")

    monkeypatch.setattr(row, "evaluate_tasks", fails)
    results = _run(host, tmp_path, "mmlu", "gsm8k")
    assert {t: s for t, (s, _) in results.items()} == {"mmlu": "ok", "gsm8k": "ok"}
    assert all("evaluated_with" not in r.timings for _, r in results.values())


def test_tasks_that_sample_are_never_evaluated_together(host: Any, tmp_path: Path) -> None:
    method, gsm8k = host.method("constant"), host.task("gsm8k")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options())]
    plan = plan_cells(host, rows, [TaskColumn(gsm8k, gsm8k.options(num_fewshot=0))],
                      RunSettings(data="embedded", limit=1), Store(tmp_path))
    [cell] = plan.cells
    assert row._load_tasks(cell) is not None  # greedy
    cell.lm_eval_plan.gen_kwargs = {"do_sample": True, "temperature": 0.7}
    assert row._load_tasks(cell) is None


def test_work_apportioned_keeps_every_count_whole() -> None:
    total = PhaseCost([ModelCost("m", 10, 101, 7, 5, 2160)], {"fusion": 9})
    parts = cost.apportioned(cost.combined([total]), [3, 1, 0, 2])
    assert [p.models[0].prompt_tokens for p in parts] == [50, 17, 0, 34]
    for field in ("prompt_tokens", "generated_tokens", "forward_passes", "flops"):
        assert sum(getattr(p.models[0], field) for p in parts) == getattr(total.models[0], field)
    assert sum(p.extra_flops["fusion"] for p in parts) == 9
    assert sum(p.flops for p in parts) == 2160 + 9
