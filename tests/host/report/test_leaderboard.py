"""Leaderboards: golden output, mean win rate, n/a footnotes, --check, torch-free."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.contract import MethodReport
from harness.report.board import build_board
from harness.report.html import html_page, page_template
from harness.report.json_board import board_json
from harness.report.markdown import markdown
from harness.report.samples import _gold
from harness.results.records import (CellCost, CellRecord, ModelCost, PhaseCost, RowInfo, Score,
                                     TaskInfo, row_key)
from harness.results.store import Store

from support import CHOICE_OPTIONS, HOST_FIXTURES, commit_binary_cell, commit_choice_cell, run_cli

GOLDEN = HOST_FIXTURES / "golden"


def _record(label: str, method: str, task: str, status: str, value: float | None = None,
            stderr: float | None = None, reason: str = "", trainable: int = 0,
            higher_is_better: bool = True, limit: int = 10, flops: int | None = None
            ) -> CellRecord:
    metric = {"mmlu": ("acc,none", "accuracy"), "gsm8k": ("exact_match,strict-match", "exact match"),
              "coco": ("CIDEr", "CIDEr")}[task]
    models = [{"id": "harness-zoo/tiny-llama", "revision": "main", "dtype": "auto"}]
    record = CellRecord(
        status=status, fingerprint=f"{label}-{task}".ljust(16, "0"),
        row=RowInfo(key=row_key(method, models, {"label": label}), method=method, label=label,
                    options={}, models=models),
        task=TaskInfo(name=task, options={}, headline_key=metric[0], headline_label=metric[1],
                      higher_is_better=higher_is_better, data="embedded"),
        identity={"versions": {"harness": "0.2.0"}}, finished_at="2026-01-01T00:00:00+00:00",
        n_samples=10, limit=limit, seed=1, git_commit="abc", reason=reason)
    if status == "ok":
        record.headline = Score(value, stderr)
        record.method_report = MethodReport(trainable_params=trainable, total_params=1000)
    if flops is not None:
        inference = PhaseCost([ModelCost("harness-zoo/tiny-llama", 1000, flops // 2000, 0, 10,
                                         flops)], {}, flops)
        record.cost = CellCost(inference=inference, build=PhaseCost(), scoring=PhaseCost(),
                               documents=10, inference_flops_per_document=flops // 10,
                               wall_s={"evaluate": 1.0}, peak_memory_bytes=None,
                               peak_memory_kind="process_max_rss")
    return record


@pytest.fixture
def results(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    records = [
        _record("single (tiny-llama)", "single", "mmlu", "ok", 0.25, 0.05, flops=2_000_000),
        _record("single (tiny-llama)", "single", "gsm8k", "ok", 0.10, 0.03, flops=6_000_000),
        _record("single (tiny-llama)", "single", "coco", "n/a", reason="needs vision"),
        _record("lora (tiny-llama)", "lora", "mmlu", "ok", 0.40, 0.05, trainable=4096),
        _record("lora (tiny-llama)", "lora", "gsm8k", "ok", 0.10, 0.03, trainable=4096),
        _record("lora (tiny-llama)", "lora", "coco", "n/a", reason="needs vision"),
        _record("vlm (tiny-vlm)", "vlm", "coco", "ok", 0.5, None),
    ]
    for record in records:
        store.commit_cell(record, [])
    return tmp_path


def test_markdown_matches_golden(results: Path) -> None:
    board = build_board(results)
    assert markdown(board) == (GOLDEN / "leaderboard.md").read_text()


def test_mean_win_rate_and_ordering(results: Path) -> None:
    board = build_board(results)
    rates = {row.label: row.mean_win_rate for row in board.rows}
    # mmlu: lora beats single; gsm8k: a tie (half a win each); coco has one scored row only.
    assert rates == {"lora (tiny-llama)": 0.75, "single (tiny-llama)": 0.25, "vlm (tiny-vlm)": None}
    assert [row.label for row in board.rows][0] == "lora (tiny-llama)"


def test_lower_is_better_metrics_invert_wins(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for label, value in (("a", 1.0), ("b", 2.0)):
        record = _record(label, label, "mmlu", "ok", value, None, higher_is_better=False)
        store.commit_cell(record, [])
    rates = {row.label: row.mean_win_rate for row in build_board(tmp_path).rows}
    assert rates == {"a": 1.0, "b": 0.0}


def test_json_and_html_carry_provenance_and_are_self_contained(results: Path) -> None:
    board = build_board(results)
    payload = json.loads(board_json(board))
    cell = payload["rows"][0]["cells"]["mmlu"]
    assert cell["provenance"]["fingerprint"] and cell["status"] == "ok"
    page = html_page(board)
    assert "<script>" in page and "http" not in page.split("<body>")[1].split("<script type")[0]
    table = page.split('<table id="board">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + len(board.rows)


def test_check_mode_detects_stale_tables(results: Path) -> None:
    assert run_cli("leaderboard", "--results", str(results)).returncode == 0
    assert run_cli("leaderboard", "--results", str(results), "--check").returncode == 0
    md = results / "leaderboard.md"
    md.write_text(md.read_text().replace("0.400", "0.999"))
    stale = run_cli("leaderboard", "--results", str(results), "--check")
    assert stale.returncode == 1 and "leaderboard out of date" in stale.stderr
    # a short diff of what changed, not the whole table
    diff = [line for line in stale.stderr.splitlines() if line[:1] in "+-"]
    assert any("0.999" in line for line in diff if line.startswith("-")) and len(diff) <= 20


def test_check_mode_detects_a_plot_drawn_from_other_results(results: Path) -> None:
    assert run_cli("leaderboard", "--results", str(results)).returncode == 0
    plot = results / "leaderboard-cost.png"
    other = Store(results)
    other.commit_cell(_record("quick (tiny-llama)", "quick", "mmlu", "ok", 0.3, 0.1), [])
    before = plot.read_bytes()
    assert run_cli("leaderboard", "--results", str(results)).returncode == 0
    stale = plot.read_bytes()
    plot.write_bytes(before)  # a plot of the results as they were
    check = run_cli("leaderboard", "--results", str(results), "--check")
    assert check.returncode == 1 and "leaderboard-cost.png" in check.stderr
    plot.write_bytes(stale)
    assert run_cli("leaderboard", "--results", str(results), "--check").returncode == 0


def test_output_is_deterministic(results: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    copy = tmp_path_factory.mktemp("copy") / "results"
    shutil.copytree(results, copy)
    assert markdown(build_board(results)) == markdown(build_board(copy))
    assert html_page(build_board(results)) == html_page(build_board(copy))


def test_columns_mixing_data_sources_or_limits_say_so(results: Path) -> None:
    store = Store(results)
    store.commit_cell(_record("quick (tiny-llama)", "quick", "mmlu", "ok", 0.3, 0.1, limit=2), [])
    assert "mmlu: mixed: embedded (limit 10); embedded (limit 2)" in markdown(build_board(results))


def test_failures_of_two_rows_of_one_method_are_both_kept(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for label in ("single (a)", "single (b)"):
        record = _record(label, "single", "mmlu", "failed", reason=f"broken {label}")
        store.record_failure(record)
    board = build_board(tmp_path)
    assert sorted(row.cells["mmlu"].reason for row in board.rows) == [
        "broken single (a)", "broken single (b)"]


def test_a_cells_caveats_are_shown_on_it(tmp_path: Path) -> None:
    record = _record("single (tiny-llama)", "single", "mmlu", "ok", 0.25, 0.05)
    record.score_details.caveats = ["generated code ran with weak isolation (no bubblewrap)"]
    Store(tmp_path).commit_cell(record, [])
    board = build_board(tmp_path)
    text = markdown(board)
    assert "0.250 ± 0.050 [1]" in text
    assert "[1] generated code ran with weak isolation (no bubblewrap)" in text
    assert "weak isolation" in html_page(board)


def test_the_explorer_shows_a_multiple_choice_as_question_options_and_picks(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit_choice_cell(store, "single (tiny-llama)", "single", ["tiny-llama"], [0, 0, 2])
    board = build_board(tmp_path)
    document = board.documents["mmlu"]["mmlu/1"]
    assert document["question"] == "Question 1: which planet?"
    assert document["options"] == list(CHOICE_OPTIONS) and document["gold"] == [1]
    entries = board.rows[0].cells["mmlu"].samples
    assert [(e["choice"], e["correct"]) for e in entries] == [(0, True), (0, False), (2, True)]
    assert entries[1]["loglikelihoods"] == [-1.5, -5.0, -6.0, -7.0]
    assert "response" not in entries[1]  # a log-likelihood is no response to read
    page = html_page(board)
    assert '"options": ["Earth", "Jupiter", "Mars", "Venus"]' in page


@pytest.mark.parametrize(("target", "gold"), [
    (2, [2]), ("2", [2]), ("Mars", [2]), ("C", [2]), ([0, 3], [0, 3]), (7, None), ("Pluto", None),
])
def test_the_correct_option_is_read_from_lm_evals_target(target: object,
                                                        gold: list[int] | None) -> None:
    assert _gold(target, list(CHOICE_OPTIONS), 4) == gold


def test_a_generation_shows_its_response_and_a_0_1_metric_as_right_or_wrong(
        tmp_path: Path) -> None:
    commit_binary_cell(Store(tmp_path), "single (tiny-llama)", "single", ["tiny-llama"], [1, 0])
    board = build_board(tmp_path)
    entries = board.rows[0].cells["mmlu"].samples
    assert [(e["response"], e["metric"], e["correct"]) for e in entries] == [
        ("-1.0", 1.0, True), ("-1.0", 0.0, False)]
    assert board.documents["mmlu"]["mmlu/0"] == {"prompt": "question 0?", "reference": "B"}


def test_the_page_is_filled_from_its_template_in_one_pass(results: Path) -> None:
    record = _record("tricky @DATA@ @BODY@ label", "tricky", "mmlu", "ok", 0.3, 0.1)
    Store(results).commit_cell(record, [])
    board = build_board(results)
    page = html_page(board)
    assert page.startswith("<!doctype html>") and "@DATA@ @BODY@ label" in page
    assert "@HEAD@" not in page and page.count('<script type="application/json" id="data">') == 1
    assert 'data-status="n/a"' in page  # statuses pass through as data, styled by the template
    assert page_template().count("@BODY@") == 1


def test_untrusted_cells_are_shown_in_every_format_and_fail_check(results: Path, capsys) -> None:
    import io

    from rich.console import Console

    from harness import cli
    from harness.report.terminal import rich_tables

    store = Store(results)
    lora = _record("lora (tiny-llama)", "lora", "mmlu", "ok", 0.40, 0.05, trainable=4096)
    store.write_plan([{"fingerprint": lora.fingerprint, "method": "lora", "task": "mmlu",
                       "label": lora.row.label, "row_key": lora.row.key}])
    assert cli.main(["leaderboard", "--results", str(results)]) == 0
    damaged = store.cell_dir("lora", "mmlu", lora.fingerprint) / "result.json"
    damaged.write_text(damaged.read_text()[:200])  # truncated

    board = build_board(results)
    [row] = [r for r in board.rows if r.key == lora.row.key]
    assert row.cells["mmlu"].status == "untrusted" and row.cells["mmlu"].value is None
    terminal = io.StringIO()
    console = Console(file=terminal, width=500)
    for table in rich_tables(board, 500):
        console.print(table)
    verify = f"harness verify --results {results}"
    for name, text in {"markdown": markdown(board), "html": html_page(board),
                       "json": board_json(board), "terminal": terminal.getvalue()}.items():
        assert str(damaged) in text and verify in text and "untrusted" in text, name
    assert "untrusted [2]" in markdown(board)  # [1] is the n/a footnote
    assert json.loads(board_json(board))["untrusted"]["files"][0]["path"] == str(damaged.parent)

    capsys.readouterr()
    assert cli.main(["leaderboard", "--results", str(results), "--check"]) == 1
    assert "cannot be trusted" in capsys.readouterr().err
