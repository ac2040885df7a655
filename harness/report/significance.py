"""Paired significance between two leaderboard rows on one task.

Two rows are compared only on the documents both evaluated (matched by lm-eval task,
document id and document hash, so rows run on other data never pair up):

- a per-document 0/1 metric (accuracy, exact match, greedy pass@1) gets the exact McNemar
  test: under "no difference" the discordant documents split 50/50, so the count where
  A alone is right is Binomial(discordant, 1/2) (`scipy.stats.binomtest`);
- any other metric (a corpus metric such as chrF++ or CIDEr, a judge's rating) gets a
  paired bootstrap over documents: draw documents with replacement, recompute the metric
  on both rows from the same draw (`CorpusMetric.value`), and read the difference's 95%
  interval from the percentiles; its two-sided p-value is the share of resampled
  differences at least as far from the observed one as the observed one is from 0
  (the bootstrap distribution shifted to the null), counted with the +1 that keeps it
  above 0.

Every comparison also gets the bootstrap interval of its difference, drawn from a seed
derived from the run's seed and the pair's identity, so reports regenerate to the same
bytes. `holm` corrects a family of p-values (statsmodels' Holm step-down).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.contract.board import DEFAULT_ALPHA, DEFAULT_RESAMPLES
from harness.errors import DataError, HarnessError
from harness.results.records import CellRecord

MCNEMAR = "exact McNemar"
BOOTSTRAP = "paired bootstrap"

DocKey = tuple[str, Any, str]  # (lm-eval task, doc_id, doc_hash)
Reducer = Callable[[Sequence[Any]], float]


@dataclass(frozen=True)
class DocumentScores:
    """One cell's per-document statistics of its headline metric and how to turn any
    multiset of them into the metric (None: their mean)."""

    stats: dict[DocKey, Any]
    value: Reducer | None = None
    summed: bool = False  # CorpusMetric.summed: `value` takes per-group sums of the rows

    def metric(self, statistics: Sequence[Any]) -> float:
        if self.summed:
            assert self.value is not None
            return float(self.value(GroupedRows(statistics).totals()))
        if self.value is not None:
            return float(self.value(statistics))
        return math.fsum(statistics) / len(statistics) if statistics else math.nan

    @functools.cached_property
    def per_document(self) -> dict[DocKey, float]:
        """Each document's own metric (a sentence-level chrF, a problem's pass@1): what
        wins, losses and ties count and the explorer shows. Computed once per cell."""
        if self.value is None:
            return {key: float(stat) for key, stat in self.stats.items()}
        return {key: self.metric([stat]) for key, stat in self.stats.items()}


@dataclass(frozen=True)
class Comparison:
    """Row A against row B on one task: the difference is A - B, in the metric's units."""

    task: str
    metric: str
    test: str
    n: int  # documents both rows evaluated
    only_a: int  # documents only A evaluated (left out of the test)
    only_b: int
    score_a: float
    score_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    wins: int  # documents where A is better (per-document metric, higher_is_better aware)
    losses: int
    ties: int
    resamples: int
    p_holm: float | None = None

    def significant(self, alpha: float = DEFAULT_ALPHA) -> bool:
        p = self.p_value if self.p_holm is None else self.p_holm
        return p < alpha

    @property
    def docs_differ(self) -> bool:
        return bool(self.only_a or self.only_b)

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None or math.isnan(value) else round(value, 6)

        return {"test": self.test, "metric": self.metric, "n": self.n,
                "only_this_row": self.only_a, "only_reference": self.only_b,
                "score": rounded(self.score_a), "reference_score": rounded(self.score_b),
                "difference": rounded(self.difference),
                "ci95": [rounded(self.ci_low), rounded(self.ci_high)],
                "p_value": rounded(self.p_value), "p_holm": rounded(self.p_holm),
                "wins": self.wins, "losses": self.losses, "ties": self.ties,
                "resamples": self.resamples}


def mcnemar_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided McNemar p-value of two paired 0/1 sequences (1.0 when no document
    is discordant: nothing tells the rows apart)."""
    from scipy.stats import binomtest

    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


class GroupedRows:
    """Numeric rows `[group, *counts]` (CorpusMetric.summed) and their per-group sums,
    weighted by how often a resample drew each row: one multiply and one `reduceat` per
    resample instead of copying 20,000 rows."""

    def __init__(self, rows: Sequence[Any]) -> None:
        import numpy

        matrix = numpy.asarray(rows, dtype=numpy.int64).reshape(len(rows), -1)
        self.order = numpy.argsort(matrix[:, 0], kind="stable")
        ordered = matrix[self.order]
        self.counts = ordered[:, 1:]
        self.starts = numpy.flatnonzero(numpy.r_[True, ordered[1:, 0] != ordered[:-1, 0]])

    def totals(self, weights: Any = None) -> Any:
        """Each group's summed counts (rows drawn `weights` times; groups drawn at least
        once), groups in ascending order."""
        import numpy

        if weights is None:
            return numpy.add.reduceat(self.counts, self.starts, axis=0)
        drawn = numpy.asarray(weights)[self.order]
        sums = numpy.add.reduceat(self.counts * drawn[:, None], self.starts, axis=0)
        return sums[numpy.add.reduceat(drawn, self.starts) > 0]


def bootstrap_differences(a: Sequence[Any], b: Sequence[Any], value: Reducer | None,
                          resamples: int, seed: Sequence[int] | int,
                          summed: bool = False) -> list[float]:
    """value(A) - value(B) on `resamples` draws of the paired documents with replacement
    (the same draw for both rows), each draw `rng.integers(0, n, n)` from
    `numpy.random.default_rng(seed)`; `value` None: the mean of numbers; `summed`: `value`
    of the drawn rows' per-group sums (GroupedRows)."""
    import numpy

    rng = numpy.random.default_rng(seed)
    n = len(a)
    differences = []
    if value is None:  # vectorised: MMLU has 14,042 documents
        array_a, array_b = numpy.asarray(a, dtype=float), numpy.asarray(b, dtype=float)
        for _ in range(resamples):
            draw = rng.integers(0, n, n)
            differences.append(float(array_a[draw].mean() - array_b[draw].mean()))
        return differences
    if summed:
        grouped_a, grouped_b = GroupedRows(a), GroupedRows(b)
        for _ in range(resamples):
            drawn = numpy.bincount(rng.integers(0, n, n), minlength=n)
            differences.append(float(value(grouped_a.totals(drawn)))
                               - float(value(grouped_b.totals(drawn))))
        return differences
    for _ in range(resamples):
        draw = rng.integers(0, n, n)
        differences.append(float(value([a[i] for i in draw])) - float(value([b[i] for i in draw])))
    return differences


def bootstrap_summary(observed: float, differences: Sequence[float]) -> tuple[float, float, float]:
    """(ci_low, ci_high, p): the 2.5/97.5 percentiles of the resampled differences and the
    two-sided p-value of "no difference" from the shifted bootstrap distribution."""
    import numpy

    values = numpy.asarray([d for d in differences if not math.isnan(d)], dtype=float)
    if not len(values) or math.isnan(observed):
        return math.nan, math.nan, math.nan
    low, high = numpy.percentile(values, [2.5, 97.5])
    tolerance = 1e-12 * max(1.0, abs(observed))  # identical rows differ by float noise only
    extreme = int(numpy.sum(numpy.abs(values - observed) >= abs(observed) - tolerance))
    return float(low), float(high), (1 + extreme) / (1 + len(values))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-corrected p-values (statsmodels' `multipletests(method="holm")`); NaN stays NaN
    and does not count as a comparison."""
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    corrected = [math.nan] * len(p_values)
    if finite:  # statsmodels takes seconds to import: a board without comparisons skips it
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests([p_values[i] for i in finite], method="holm")[1]
        for i, p in zip(finite, adjusted):
            corrected[i] = float(p)
    return corrected


def pair_seed(seed: int, *parts: str) -> list[int]:
    """A seed for one comparison: the run's seed and a stable hash of the pair, so each
    comparison draws its own resamples and regenerates to the same numbers."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return [seed, int.from_bytes(digest[:8], "big")]


def _document_order(key: DocKey) -> tuple[str, int, str, str]:
    """Documents in lm-eval's order: by subtask, then numeric document id."""
    task, doc_id, doc_hash = key
    number = doc_id if isinstance(doc_id, int) else -1
    return str(task), number, str(doc_id), str(doc_hash)


def compare(task: str, metric: str, a: DocumentScores, b: DocumentScores,
            higher_is_better: bool = True, resamples: int = DEFAULT_RESAMPLES,
            seed: Sequence[int] | int = 0) -> Comparison:
    """The paired test of A against B over the documents both have."""
    shared = sorted(set(a.stats) & set(b.stats), key=_document_order)
    only_a, only_b = len(set(a.stats) - set(b.stats)), len(set(b.stats) - set(a.stats))
    if not shared:
        raise DataError(f"{task}: the two rows share no documents (only_a={only_a}, "
                        f"only_b={only_b})")
    stats_a, stats_b = [a.stats[k] for k in shared], [b.stats[k] for k in shared]
    score_a, score_b = a.metric(stats_a), b.metric(stats_b)
    observed = score_a - score_b
    per_doc_a = [a.per_document[k] for k in shared]
    per_doc_b = [b.per_document[k] for k in shared]
    sign = 1 if higher_is_better else -1
    wins = sum(sign * (x - y) > 0 for x, y in zip(per_doc_a, per_doc_b))
    losses = sum(sign * (x - y) < 0 for x, y in zip(per_doc_a, per_doc_b))
    differences = bootstrap_differences(stats_a, stats_b, a.value, resamples, seed, a.summed)
    low, high, p = bootstrap_summary(observed, differences)
    binary = a.value is None and all(v in (0, 1) for v in (*stats_a, *stats_b))
    if binary:
        p = mcnemar_p(stats_a, stats_b)
    return Comparison(task, metric, MCNEMAR if binary else BOOTSTRAP, len(shared), only_a,
                      only_b, score_a, score_b, observed, low, high, p, wins, losses,
                      len(shared) - wins - losses, resamples)


def document_scores(record: CellRecord, samples: list[dict[str, Any]],
                    corpus_metrics: Sequence[Any] = ()) -> DocumentScores | str:
    """The per-document statistics of a cell's headline metric, or why there are none.

    A metric the host averaged from lm-eval's per-sample values (key `name,filter`) is read
    from the samples of that filter; a metric a task's `score` computed needs the task's
    `CorpusMetric` of that key.
    """
    key = record.task.headline_key
    metric = next((m for m in corpus_metrics if m.key == key), None)
    if metric is not None:
        try:
            stats = metric.statistics(samples, record.score_details)
        except HarnessError as exc:
            return f"per-document statistics of {key} unavailable: {exc}"
        if not stats:
            return (f"no per-document statistics of {key} in the stored samples (scored "
                    f"before the task stored them; `harness rescore` adds them)")
        hashes = {(s.get("task"), s.get("doc_id")): s.get("doc_hash", "") for s in samples}
        return DocumentScores({(task, doc, hashes.get((task, doc), "")): value
                               for (task, doc), value in stats.items()}, metric.value,
                              metric.summed)
    name, _, filter_name = key.partition(",")
    stats = {}
    for sample in samples:
        value = sample.get(name)  # bool included: lm-eval logs acc as True/False
        if sample.get("filter", "none") != (filter_name or "none") \
                or not isinstance(value, (int, float)):
            continue
        stats[sample.get("task"), sample.get("doc_id"), sample.get("doc_hash", "")] = float(value)
    if not stats:
        return f"no per-document values of {key} in the samples (the task has no paired test)"
    return DocumentScores(stats)

