"""A reduced key-value arithmetic experiment (CALM's Table 1): composed through CALM, the
kv zoo models solve held-out key-value arithmetic that neither solves alone.

The two zoo models are trained on first use (minutes on two cores, then cached); the
composition trains on KV arithmetic over the composition keys only and is scored, like both
components, by greedy exact match on expressions over the held-out keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.api import kv_examples
from harness.methods.calm.config import CalmOptions
from harness.methods.calm.model import compose
from harness.models import ModelRef, load_causal_lm
from harness.training import fit

from adapters.adapters_support import synthetic_task
from calm.calm_support import TEST_DEVICE, context

ANCHOR, AUGMENTING = "harness-zoo/kv-anchor", "harness-zoo/kv-augmenting"
HELD_OUT = 100
BUDGET = CalmOptions(max_steps=300, batch_size=32, micro_batch_size=32, lr=1e-3)


def greedy_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, str]]) -> float:
    tokenizer.padding_side = "left"
    batch = tokenizer([row["prompt"] for row in rows], return_tensors="pt",
                      padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    answers = tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    return sum(a.strip() == row["target"] for a, row in zip(answers, rows)) / len(rows)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "builds both kv zoo models on first use (about 10 CPU-minutes on two cores) for an "
    "experiment that does not reproduce yet; set HARNESS_SLOW_TESTS=1 to run it"))
@pytest.mark.xfail(strict=False, reason=(
    "issue #9: measured on the kv zoo models, CALM stays within a few points of its "
    "components (held-out KV arithmetic: anchor 3.5%, augmenting 0%, CALM 8% after 1,500 "
    "steps, 2.5% after 189; see the README)"))
def test_calm_beats_both_components_on_held_out_keys(tmp_path: Path):
    refs = [ModelRef(ANCHOR, dtype="float32", device=TEST_DEVICE),
            ModelRef(AUGMENTING, dtype="float32", device=TEST_DEVICE)]
    anchor, tokenizer = load_causal_lm(refs[0])
    augmenting, _ = load_causal_lm(refs[1])
    held_out = kv_examples("kv_arithmetic", "test", HELD_OUT)
    alone = {"anchor": greedy_accuracy(anchor, tokenizer, held_out),
             "augmenting": greedy_accuracy(augmenting, tokenizer, held_out)}
    compose(anchor, augmenting, BUDGET)
    train = kv_examples("kv_arithmetic", "composition", 2000)
    fit(context(BUDGET, synthetic_task(train), tmp_path, models=refs), anchor, tokenizer, "calm")
    composed = greedy_accuracy(anchor, tokenizer, held_out)
    print(f"\nheld-out KV arithmetic exact match: anchor {alone['anchor']:.2f}, augmenting "
          f"{alone['augmenting']:.2f}, CALM {composed:.2f}")
    assert composed >= max(alone.values()) + 0.2
