"""Small statistics shared by the runner and task scorers (no heavy imports)."""

from __future__ import annotations

import math


def mean_and_stderr(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample standard deviation / sqrt(n)).

    No values give NaN, an unknown score that leaderboards show as such, never 0; a single
    value has no standard error.
    """
    n = len(values)
    if n == 0:
        return math.nan, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)
