"""`harness.report.claims`: documents pooled over seeds (expert seeds in row labels, run seeds in
the records), the oracle router as the per-document best of single rows, claims judged
by the pooled paired test, and the committed tables regenerate. No model runs (< 1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
from claims.claims_support import CLAIMS_RESULTS, committed_verdicts

from harness.errors import DataError
from harness.report.claims import (CLAIMS, ORACLE, Claim, evaluate, main, oracle, pooled_scores,
                                   seeds_of, table)
from harness.report.significance import DocumentScores
from harness.results.store import Store

from support import commit_binary_cell


def test_rows_pool_the_documents_of_every_seed_label(tmp_path: Path) -> None:
    store = Store(tmp_path / "pack")
    for seed in (0, 1):
        commit_binary_cell(store, f"fused (seed {seed})", "packllm", ["a", "b"], [1, 1, 0, 1])
        commit_binary_cell(store, f"routed (seed {seed})", "top1_ppl", ["a", "b"], [1, 0, 0, 0])
    rows = pooled_scores(tmp_path / "pack", "mmlu")
    assert set(rows) == {"fused", "routed"}
    assert len(rows["fused"].stats) == 8  # 4 documents x 2 seeds, paired seed by seed
    claim = Claim("M", "fused beats routed", "-", "pack", "mmlu", "fused", "routed")
    comparison, seeds = evaluate(claim, tmp_path)
    assert seeds == 2 and comparison.n == 8
    assert comparison.difference == pytest.approx(0.5) and comparison.wins == 4
    assert not claim.holds(comparison)  # 4 of 4 discordant: exact McNemar p = 0.125


def test_run_seeds_are_pooled_like_expert_seeds(tmp_path: Path) -> None:
    store = Store(tmp_path / "fits")
    for seed in (1, 2, 3):
        commit_binary_cell(store, "adapter", "aligner", ["a"], [1] * 6 + [0] * 2, seed=seed)
    pooled = pooled_scores(tmp_path / "fits", "mmlu")["adapter"]
    assert len(pooled.stats) == 24 and seeds_of(pooled) == 3


def test_the_oracle_router_takes_each_documents_best_member() -> None:
    a = DocumentScores({("t", 0, "h"): 1.0, ("t", 1, "h"): 0.0, ("t", 2, "h"): 0.0})
    b = DocumentScores({("t", 0, "h"): 0.0, ("t", 1, "h"): 1.0, ("t", 2, "h"): 0.0})
    assert oracle([a, b]).stats == {("t", 0, "h"): 1.0, ("t", 1, "h"): 1.0, ("t", 2, "h"): 0.0}


def test_a_missing_row_is_one_line_naming_it(tmp_path: Path) -> None:
    commit_binary_cell(Store(tmp_path / "pack"), "fused", "packllm", ["a"], [1, 0])
    claim = Claim("M", "-", "-", "pack", "mmlu", "fused", ORACLE, oracle_of=("single",))
    with pytest.raises(DataError, match="no mmlu results of row 'single'"):
        evaluate(claim, tmp_path)
    assert main(["--results", str(tmp_path / "nowhere")]) == 1


def test_the_committed_table_is_what_the_committed_results_give() -> None:
    assert (CLAIMS_RESULTS / "claims.md").read_text() == table(CLAIMS_RESULTS)
    assert set(committed_verdicts()) == {claim.statement for claim in CLAIMS}
