"""Reading a CALM claim's results folder (`harness run --suite calm_table1 --seed S`, once
per seed into one folder): per-row, per-task exact match by seed, and the paired test
between two rows with the documents of every seed pooled."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report.significance import mcnemar_p

ANCHOR_ROW = "m_B anchor (kv-anchor)"
AUGMENTING_ROW = "m_A augmenting (kv-augmenting)"
CALM_ROW = "CALM (kv-anchor + kv-augmenting)"
CLAIM_FOLDER = Path(__file__).resolve().parents[2] / "results" / "claims" / "calm_table1"

Scores = dict[tuple[int, int, str], float]  # (seed, doc_id, doc_hash) -> exact match


def row_scores(folder: Path, label: str, task: str) -> Scores:
    """Every evaluated document of row `label` on `task`, over all seeds in `folder`."""
    scores: Scores = {}
    for result in sorted((folder / "cells").glob(f"*/{task}/*/result.json")):
        record = json.loads(result.read_text())
        if record["row"]["label"] != label or record["status"] != "ok":
            continue
        for line in (result.parent / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            scores[(record["seed"], sample["doc_id"], sample["doc_hash"])] = sample["exact_match"]
    return scores


def seeds_of(scores: Scores) -> list[int]:
    return sorted({seed for seed, _, _ in scores})


def mean_by_seed(scores: Scores) -> dict[int, float]:
    return {seed: sum(v for (s, _, _), v in scores.items() if s == seed)
            / sum(1 for s, _, _ in scores if s == seed) for seed in seeds_of(scores)}


def pooled_p(a: Scores, b: Scores) -> float:
    """Exact McNemar over the documents both rows evaluated, every seed pooled."""
    shared = sorted(set(a) & set(b))
    return mcnemar_p([a[key] for key in shared], [b[key] for key in shared])
