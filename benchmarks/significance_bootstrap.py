"""Paired bootstrap of FLORES chrF++ at full size: grouped, weighted resampling
(`CorpusMetric.summed`, what the leaderboard uses) against copying each drawn sentence's
statistics and summing them per direction, side by side on the same draws.

    python benchmarks/significance_bootstrap.py [--directions 20] [--sentences 1012]
                                                [--resamples 100]

Synthetic translations (random words), since only the shapes matter: 20 directions x 1012
devtest sentences is the default FLORES-200 suite of the flores task.
"""

from __future__ import annotations

import argparse
import random
import time

from harness.report.significance import bootstrap_differences
from harness.tasks.flores import CORPUS_METRICS


def naive_value(value, rows):
    """Sum the drawn rows per direction in Python, then the metric."""
    totals: dict[int, list[int]] = {}
    for group, *counts in rows:
        total = totals.setdefault(group, [0] * len(counts))
        for index, count in enumerate(counts):
            total[index] += count
    return value([totals[g] for g in sorted(totals)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--directions", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=1012)
    parser.add_argument("--resamples", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(0)
    words = "the a cat dog sat ran home on mat rain falls today big small red".split()

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(12))

    rows = []
    for _ in range(2):
        samples = [{"task": f"flores_{d}", "doc_id": i, "response": [[sentence()]],
                    "doc": {"target": f"{d} {i}"}}
                   for d in range(args.directions) for i in range(args.sentences)]
        rows.append(list(CORPUS_METRICS[0].statistics(samples, {}).values()))
    value = CORPUS_METRICS[0].value
    started = time.perf_counter()
    fast = bootstrap_differences(rows[0], rows[1], value, args.resamples, 1, summed=True)
    grouped = time.perf_counter() - started
    started = time.perf_counter()
    slow = bootstrap_differences(rows[0], rows[1], lambda drawn: naive_value(value, drawn),
                                 args.resamples, 1)
    copied = time.perf_counter() - started
    largest = max(abs(x - y) for x, y in zip(fast, slow))
    print(f"{args.directions} directions x {args.sentences} sentences, {args.resamples} "
          f"resamples of chrF++")
    print(f"grouped weighted sums: {grouped:.2f} s   copy and sum each draw: {copied:.2f} s   "
          f"copy / grouped: {copied / grouped:.1f}x   largest difference {largest:.1e}")


if __name__ == "__main__":
    main()
