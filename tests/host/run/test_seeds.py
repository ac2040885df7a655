"""A run over several seeds: one cell per seed (its own fingerprint, job and title), and a
leaderboard cell that shows their mean and spread, with paired tests that pool the
documents of every seed."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.host import load_host
from harness.report.board import build_board
from harness.report.compare import compare_rows
from harness.results.store import Store
from harness.run.jobs import make_jobs
from harness.run.plan import plan_cells
from harness.settings import RunSettings

from support import commit_binary_cell, run_cli


def test_every_cell_is_planned_once_per_seed(tmp_path: Path) -> None:
    host = load_host()
    single, task = host.method("single"), host.task("mixed_domains")
    rows = [MethodRow(single, (ModelRef("harness-zoo/tiny-llama"),), single.options(), "a")]
    plan = plan_cells(host, rows, [TaskColumn(task, task.options())],
                      RunSettings(data="embedded", seeds=(1, 2, 3), device="cpu"), Store(tmp_path))
    assert [c.settings.seed for c in plan.cells] == [1, 2, 3]
    assert len({c.fingerprint for c in plan.cells}) == 3
    assert [c.title for c in plan.cells][0] == "a × mixed_domains (seed 1)"
    # a frozen row shares one job per seed: a job's cells share its settings
    assert [[c.settings.seed for c in job.cells] for job in make_jobs(plan.cells)] == [
        [1], [2], [3]]


def test_seeds_are_distinct_and_parsed_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        RunSettings(seeds=(1, 1))
    result = run_cli("run", "-m", "single", "-t", "mixed_domains", "--data", "embedded",
                     "--seeds", "1,2", "--dry-run", "--results", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "2 pending" in result.stdout and "(seed 2)" in result.stdout


def test_the_board_shows_mean_and_spread_and_pools_documents_over_seeds(tmp_path: Path) -> None:
    store = Store(tmp_path)
    base = [1, 0] * 10
    better = {1: [1, 1] * 10, 2: [1, 1] * 9 + [1, 0], 3: [1, 1] * 8 + [1, 0] * 2}
    for seed in (1, 2, 3):
        commit_binary_cell(store, "single (m)", "single", ["m"], base, seed=seed)
        commit_binary_cell(store, "adapted (m)", "lora", ["m"], better[seed], seed=seed)
    board = build_board(tmp_path)
    cells = {row.label: row.cells["mmlu"] for row in board.rows}
    values = [sum(better[s]) / 20 for s in (1, 2, 3)]
    adapted = cells["adapted (m)"]
    assert adapted.value == pytest.approx(statistics.fmean(values))
    assert adapted.seed_spread == pytest.approx(statistics.stdev(values))
    assert adapted.text() == f"{statistics.fmean(values):.3f} ± " \
                             f"{statistics.stdev(values):.3f} (3 seeds)"
    assert adapted.provenance["seeds"] == {"1": 1.0, "2": 0.95, "3": 0.9}
    # the test pairs (seed, document): 60 pairs, the adapter wins 27 and never loses
    assert adapted.comparison is not None and adapted.comparison["n"] == 60
    assert adapted.comparison["wins"] == 27 and adapted.comparison["losses"] == 0
    assert adapted.significant
    _, _, [comparison] = compare_rows(tmp_path, "adapted (m)", "single (m)")
    assert comparison.result is not None and comparison.result.n == 60
