"""Helpers shared by the test modules (importable thanks to pytest's `pythonpath`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HOST_FIXTURES = REPO / "tests" / "host" / "fixtures"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`harness ARGS` in a subprocess, as a user would type it."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


def commit_binary_cell(store: Any, label: str, method: str, models: list[str],
                       correct: list[int], task: str = "mmlu", seed: int | None = None) -> None:
    """A finished cell of a 0/1 metric (accuracy) whose samples say which documents were
    right, with a method fact per sample (leaderboard significance and explorer tests);
    `seed`: one seed's cell of a run over several."""
    samples = [{"task": task, "doc_id": i, "doc_hash": f"h{i}", "filter": "none",
                "metrics": ["acc"], "acc": float(c), "prompt": f"question {i}?",
                "target": "B", "response": [[["-1.0", "False"]]],
                "fusion": {"weights": [0.25, 0.75]}} for i, c in enumerate(correct)]
    _commit_accuracy_cell(store, label, method, models, task, seed, samples)


CHOICE_OPTIONS = ("Earth", "Jupiter", "Mars", "Venus")


def commit_choice_cell(store: Any, label: str, method: str, models: list[str],
                       picks: list[int], task: str = "mmlu") -> None:
    """A finished multiple-choice cell as lm-eval logs one: document i asks question i
    with the options CHOICE_OPTIONS, option i % 4 is correct, and the row's
    log-likelihoods put option `picks[i]` first."""
    samples = []
    for i, pick in enumerate(picks):
        scores = [-(4.0 + option) if option != pick else -1.5 for option in range(4)]
        samples.append({
            "task": task, "doc_id": i, "doc_hash": f"h{i}", "filter": "none", "metrics": ["acc"],
            "acc": float(pick == i % 4), "target": i % 4,
            "prompt": f"Question {i}: which planet?\nAnswer:",
            "doc": {"question": f"Question {i}: which planet?", "choices": list(CHOICE_OPTIONS),
                    "answer": i % 4},
            "filtered_resps": [[score, score == -1.5] for score in scores],
            "response": [[[score, score == -1.5]] for score in scores]})
    _commit_accuracy_cell(store, label, method, models, task, None, samples)


def _commit_accuracy_cell(store: Any, label: str, method: str, models: list[str], task: str,
                          seed: int | None, samples: list[dict[str, Any]]) -> None:
    from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key

    refs = [{"id": f"harness-zoo/{m}", "revision": "main", "dtype": "auto"} for m in models]
    key = row_key(method, refs, {"label": label})
    correct = [s["acc"] for s in samples]
    record = CellRecord(
        status="ok", fingerprint=f"{seed or ''}{key}{task}".ljust(32, "0"), seed=seed,
        row=RowInfo(key=key, method=method, label=label, options={}, models=refs),
        task=TaskInfo(name=task, options={}, headline_key="acc,none", headline_label="accuracy",
                      data="embedded"),
        identity={}, finished_at="2026-01-01T00:00:00+00:00", n_samples=len(correct),
        headline=Score(sum(correct) / len(correct), 0.01))
    store.commit_cell(record, samples)
