"""Paired significance: McNemar, paired bootstrap and Holm against scipy/statsmodels/numpy
on fixed data; identical rows are never significant; task plugins' corpus statistics
reproduce their own corpus scores."""

from __future__ import annotations

import json

import numpy
import pytest
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from harness.contract import ScoreDetails
from harness.report.significance import (BOOTSTRAP, MCNEMAR, DocumentScores, bootstrap_differences,
                                         bootstrap_summary, compare, holm, mcnemar_p, pair_seed)

from support import commit_binary_cell

# 20 documents: A alone right on 7, B alone right on 2, both right on 6, both wrong on 5.
A = [1] * 7 + [0] * 2 + [1] * 6 + [0] * 5
B = [0] * 7 + [1] * 2 + [1] * 6 + [0] * 5


def _scores(values: list[float], value=None) -> DocumentScores:
    return DocumentScores({("t", i, ""): v for i, v in enumerate(values)}, value)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_documents() -> None:
    assert mcnemar_p(A, B) == pytest.approx(binomtest(7, 9, 0.5).pvalue, abs=1e-15)
    assert mcnemar_p(A, B) == mcnemar_p(B, A)
    assert mcnemar_p([1, 0, 1], [1, 0, 1]) == 1.0  # no discordant document


def test_binary_metrics_get_mcnemar_with_wins_losses_and_ties() -> None:
    result = compare("t", "acc", _scores(A), _scores(B), resamples=200, seed=3)
    assert result.test == MCNEMAR
    assert (result.n, result.wins, result.losses, result.ties) == (20, 7, 2, 11)
    assert result.difference == pytest.approx(0.25)
    assert result.p_value == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    assert result.ci_low <= result.difference <= result.ci_high


def test_lower_is_better_swaps_wins_and_losses() -> None:
    result = compare("t", "ppl", _scores(A), _scores(B), higher_is_better=False, resamples=10)
    assert (result.wins, result.losses) == (2, 7)


def test_bootstrap_matches_a_direct_numpy_computation_and_is_seeded() -> None:
    rng = numpy.random.default_rng(0)
    a, b = list(rng.normal(0.6, 0.2, 30)), list(rng.normal(0.5, 0.2, 30))
    seed = pair_seed(7, "task", "rowA", "rowB")
    result = compare("t", "score", _scores(a), _scores(b), resamples=500, seed=seed)
    assert result.test == BOOTSTRAP

    direct = numpy.random.default_rng(seed)
    xa, xb = numpy.array(a), numpy.array(b)
    diffs = []
    for _ in range(500):
        draw = direct.integers(0, 30, 30)
        diffs.append(xa[draw].mean() - xb[draw].mean())
    diffs = numpy.array(diffs)
    observed = xa.mean() - xb.mean()
    low, high = numpy.percentile(diffs, [2.5, 97.5])
    p = (1 + numpy.sum(numpy.abs(diffs - observed) >= abs(observed))) / 501
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert result.p_value == pytest.approx(p)
    assert result.difference == pytest.approx(observed)
    again = compare("t", "score", _scores(a), _scores(b), resamples=500, seed=seed)
    assert again == result
    other = compare("t", "score", _scores(a), _scores(b), resamples=500, seed=pair_seed(8, "x"))
    assert (other.ci_low, other.ci_high) != (result.ci_low, result.ci_high)


def test_a_corpus_reducer_is_resampled_on_both_rows_with_the_same_draw() -> None:
    def ratio(stats):  # a corpus metric: total matches over total length
        return sum(s[0] for s in stats) / sum(s[1] for s in stats)

    a = [(3, 4), (1, 5), (2, 2), (0, 3), (4, 6)]
    b = [(2, 4), (1, 5), (1, 2), (0, 3), (3, 6)]
    diffs = bootstrap_differences(a, b, ratio, 50, seed=1)
    rng = numpy.random.default_rng(1)
    expected = []
    for _ in range(50):
        draw = rng.integers(0, 5, 5)
        expected.append(ratio([a[i] for i in draw]) - ratio([b[i] for i in draw]))
    assert diffs == pytest.approx(expected)
    result = compare("t", "ratio", _scores(a, ratio), _scores(b, ratio), resamples=50, seed=1)
    assert result.test == BOOTSTRAP and result.difference == pytest.approx(ratio(a) - ratio(b))


@pytest.mark.parametrize("values", [A, [0.3, 0.9, 0.1, 0.5], [7.0, 7.0, 7.0]])
def test_identical_rows_are_never_significant(values: list[float]) -> None:
    result = compare("t", "m", _scores(values), _scores(values), resamples=300, seed=5)
    assert result.p_value == 1.0 and result.difference == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    assert not result.significant()
    assert result.ties == len(values)


def test_holm_matches_statsmodels_and_skips_missing_p_values() -> None:
    p = [0.01, 0.04, 0.03, 0.2, 0.005]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    with_gap = holm([0.01, float("nan"), 0.04])
    assert with_gap[0] == pytest.approx(multipletests([0.01, 0.04], method="holm")[1][0])
    assert numpy.isnan(with_gap[1])


def test_only_shared_documents_are_paired_and_the_rest_counted() -> None:
    a = DocumentScores({("t", i, ""): 1.0 for i in range(6)})
    b = DocumentScores({("t", i, ""): 1.0 for i in range(2, 8)})
    result = compare("t", "acc", a, b, resamples=10)
    assert (result.n, result.only_a, result.only_b, result.docs_differ) == (4, 2, 2, True)


def test_bootstrap_summary_of_a_zero_difference() -> None:
    assert bootstrap_summary(0.0, [0.0] * 10) == (0.0, 0.0, 1.0)


def test_flores_sentence_statistics_reproduce_its_corpus_scores() -> None:
    from sacrebleu.metrics import BLEU, CHRF

    from harness.tasks.flores import CORPUS_METRICS

    samples = [{"task": f"flores_{d}", "doc_id": i, "response": [[hyp]], "doc": {"target": ref}}
               for d, pairs in (("a-b", [("the cat sat", "the cat sat down"),
                                         ("a dog ran", "the dog ran")]),
                                ("b-a", [("hello there", "hello world")]))
               for i, (hyp, ref) in enumerate(pairs)]
    for metric, scorer in zip(CORPUS_METRICS, (CHRF(word_order=2), BLEU())):
        stats = metric.statistics(samples, ScoreDetails())
        expected = []
        for direction in ("flores_a-b", "flores_b-a"):
            group = [s for s in samples if s["task"] == direction]
            expected.append(scorer.corpus_score([s["response"][0][0] for s in group],
                                                [[s["doc"]["target"] for s in group]]).score)
        scores = DocumentScores({(*k, ""): v for k, v in stats.items()}, metric.value, True)
        assert scores.metric(list(stats.values())) == pytest.approx(sum(expected) / 2)


# ----------------------------------------------------------------------------- leaderboard


@pytest.fixture
def scored_results(tmp_path):
    from harness.results.store import Store

    store = Store(tmp_path / "results")
    base = [1] * 5 + [0] * 25
    commit_binary_cell(store, "single (tiny-llama)", "single", ["tiny-llama"], base)
    commit_binary_cell(store, "single (tiny-gpt2)", "single", ["tiny-gpt2"], [0] * 30)
    pack = ["tiny-llama", "tiny-gpt2"]
    commit_binary_cell(store, "packllm (tiny-llama + tiny-gpt2)", "packllm", pack,
                       [1] * 25 + [0] * 5)
    commit_binary_cell(store, "ensemble (tiny-llama + tiny-gpt2)", "ensemble", pack, base)
    return store.root


def test_leaderboard_marks_rows_against_their_best_member(scored_results) -> None:
    from harness.report.board import build_board
    from harness.report.json_board import board_json
    from harness.report.markdown import markdown

    board = build_board(scored_results)
    cells = {row.label: row.cells["mmlu"] for row in board.rows}
    packllm, ensemble = cells["packllm (tiny-llama + tiny-gpt2)"], cells[
        "ensemble (tiny-llama + tiny-gpt2)"]
    assert packllm.comparison["reference"] == "single (tiny-llama)"  # the better member
    assert packllm.significant and packllm.comparison["test"] == MCNEMAR
    assert packllm.comparison["p_value"] == pytest.approx(binomtest(20, 20, 0.5).pvalue, abs=1e-6)
    # identical to its reference: never significant
    assert not ensemble.significant and ensemble.comparison["p_value"] == 1.0
    assert ensemble.comparison["ci95"] == [0.0, 0.0]
    assert cells["single (tiny-llama)"].comparison is None  # its own reference
    tested = [c.comparison for c in cells.values() if c.comparison and "p_value" in c.comparison]
    assert [c["p_holm"] for c in tested] == pytest.approx(
        list(multipletests([c["p_value"] for c in tested], method="holm")[1]), abs=1e-6)
    text = markdown(board)
    assert "0.833 ± 0.010 †" in text and "† : " not in text and "†: differs" in text
    payload = json.loads(board_json(board))
    row = next(r for r in payload["rows"] if r["label"].startswith("packllm"))
    assert set(row["cells"]["mmlu"]["comparison"]) >= {"difference", "ci95", "p_value", "p_holm"}
    assert payload["significance"]["comparisons"] == len(tested)


def test_significance_is_deterministic_and_resamples_are_an_option(scored_results) -> None:
    from harness.contract.board import BoardOptions
    from harness.report.board import build_board
    from harness.report.json_board import board_json

    assert board_json(build_board(scored_results)) == board_json(build_board(scored_results))
    few = json.loads(board_json(build_board(scored_results, BoardOptions(resamples=20))))
    assert few["significance"]["resamples"] == 20


def test_differing_document_sets_are_paired_on_the_shared_ones_and_said(tmp_path) -> None:
    from harness.report.board import build_board
    from harness.results.store import Store

    store = Store(tmp_path)
    commit_binary_cell(store, "single (tiny-llama)", "single", ["tiny-llama"], [1, 0, 1, 0])
    commit_binary_cell(store, "lora (tiny-llama)", "lora", ["tiny-llama"], [1, 1, 1, 1, 1, 1])
    lora = next(r for r in build_board(tmp_path).rows if r.method == "lora").cells["mmlu"]
    assert lora.comparison["n"] == 4 and lora.comparison["only_this_row"] == 2
    assert any("4 documents both evaluated" in flag for flag in lora.flags)


def test_task_plugins_per_document_statistics() -> None:
    from harness.tasks.coco_captioning import image_cider
    from harness.tasks.humaneval import problem_pass_at_1
    from harness.tasks.vicuna_bench import judge_ratings

    problems = [{"task": "humaneval", "doc_id": i, "doc": {"task_id": f"P/{i}"}}
                for i in range(3)]
    executions = {"P/0": ["passed"], "P/1": ["failed: AssertionError"],
                  "P/2": ["passed", "timed out"]}
    assert problem_pass_at_1(problems, ScoreDetails(facts={"executions": executions})) == {
        ("humaneval", 0): 1.0, ("humaneval", 1): 0.0, ("humaneval", 2): 0.5}
    answers = [{"task": "vicuna_bench", "doc_id": i, "judgment": {"single": {"rating": r}}}
               for i, r in enumerate([7, None, 3])]
    assert judge_ratings(answers, ScoreDetails()) == {("vicuna_bench", 0): 7.0, ("vicuna_bench", 2): 3.0}
    captions = [{"task": "coco", "doc_id": 0, "cider": 1.25}, {"task": "coco", "doc_id": 1}]
    assert image_cider(captions, ScoreDetails()) == {("coco", 0): 1.25}


def test_summed_statistics_resample_like_recomputing_each_draw() -> None:
    """Weighting grouped rows by how often a draw took them gives the same differences as
    summing the drawn rows one by one (groups never drawn left out)."""
    def value(totals):  # a corpus metric per group, averaged over groups
        return float(numpy.mean([row[0] / row[1] for row in totals]))

    rows_a = [[0, 3, 4], [0, 1, 5], [1, 2, 2], [2, 0, 3], [1, 4, 6]]
    rows_b = [[0, 2, 4], [0, 1, 5], [1, 1, 2], [2, 0, 3], [1, 3, 6]]
    fast = bootstrap_differences(rows_a, rows_b, value, 40, seed=2, summed=True)

    def naive(rows):
        totals = {}
        for group, *counts in rows:
            totals[group] = [x + y for x, y in zip(totals.get(group, [0, 0]), counts)]
        return value([totals[g] for g in sorted(totals)])

    rng = numpy.random.default_rng(2)
    expected = []
    for _ in range(40):
        draw = rng.integers(0, 5, 5)
        expected.append(naive([rows_a[i] for i in draw]) - naive([rows_b[i] for i in draw]))
    assert fast == pytest.approx(expected)
