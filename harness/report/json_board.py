"""The board as JSON with each cell's provenance, cost and paired test (leaderboard.json),
and the digest plots carry of it."""

from __future__ import annotations

import hashlib
import json

from harness.contract.board import Board


def board_json(board: Board) -> str:
    payload = {
        "warning": board.smoke_warning() or None,
        "significance": {"resamples": board.options.resamples, "seed": board.options.seed,
                         "alpha": board.options.alpha, "correction": "holm",
                         "comparisons": board.comparisons},
        "tasks": [{"name": t.name, "metric": t.metric_key, "label": t.metric_label,
                   "higher_is_better": t.higher_is_better, "data": t.data} for t in board.tasks],
        "rows": [{"key": r.key, "label": r.label, "method": r.method, "models": r.models,
                  "trainable_params": r.trainable_params, "total_params": r.total_params,
                  "mean_win_rate": r.mean_win_rate,
                  "inference_flops_per_document": r.flops_per_document,
                  "cells": {name: {"status": c.status, "value": c.value, "stderr": c.stderr,
                                   "seed_spread": c.seed_spread,
                                   "reason": c.reason, "flags": c.flags,
                                   "provenance": c.provenance, "cost": c.cost,
                                   "comparison": c.comparison}
                            for name, c in r.cells.items()}}
                 for r in board.rows],
    }
    if board.problems:
        payload["untrusted"] = {"warning": board.untrusted_warning(),
                                "files": [{"path": str(p.path), "reason": p.reason}
                                          for p in board.problems]}
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def board_digest(board: Board) -> str:
    return hashlib.sha256(board_json(board).encode()).hexdigest()
