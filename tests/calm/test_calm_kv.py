"""CALM's key-value arithmetic claim (the paper's Table 1) in the kv world.

Fast: the world's design (one token per key, enough keys, disjoint key sets) and the
committed claim (`results/claims/calm_table1`, three training seeds). Slow
(HARNESS_SLOW_TESTS=1; builds both kv zoo models on first use, about 15 CPU-minutes on a
shared two-core machine): the gate before composition (the augmenting model's states at a
key's own position carry its value, at the layer CALM connects) and the whole experiment
rerun over three seeds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from calm.claim_support import (ANCHOR_ROW, AUGMENTING_ROW, CALM_ROW, CLAIM_FOLDER, Scores,
                                mean_by_seed, pooled_p, row_scores, seeds_of)

from harness.api import kv_examples
from harness.zoo import kv

SLOW = pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "builds both kv zoo models on first use (about 15 CPU-minutes on two shared cores); "
    "set HARNESS_SLOW_TESTS=1 to run it"))
CONNECTED_AUGMENTING_LAYERS = [1]  # harness/suites/calm_table1.yaml: connections "-1:1"


def test_every_key_is_one_token_and_the_key_sets_are_disjoint():
    world = kv.world()
    tokenizer = kv.kv_tokenizer()
    assert len(world.keys) >= 500 and len(world.composition_keys) >= 100
    assert all(len(tokenizer(key).input_ids) == 1 for key in world.keys)
    assert tokenizer.unk_token_id not in tokenizer("+".join(world.keys)).input_ids
    sets = [set(world.composition_keys), set(world.validation_keys), set(world.held_out_keys)]
    assert sum(map(len, sets)) == len(set().union(*sets)) == len(world.keys)
    for split, keys in zip(("composition", "validation", "test"), sets):
        for example in kv_examples("kv_arithmetic", split, 50):
            tokens = tokenizer.convert_ids_to_tokens(tokenizer(example["prompt"]).input_ids)
            assert {t for t in tokens if t in world.values} <= keys


def claim_rows(folder: Path) -> dict[str, Scores]:
    return {label: row_scores(folder, label, "kv_arithmetic")
            for label in (CALM_ROW, ANCHOR_ROW, AUGMENTING_ROW)}


def assert_calm_beats_both_components(folder: Path) -> None:
    rows = claim_rows(folder)
    calm, anchor, augmenting = (rows[label] for label in (CALM_ROW, ANCHOR_ROW, AUGMENTING_ROW))
    assert len(seeds_of(calm)) == 3 and seeds_of(anchor) == seeds_of(augmenting) == seeds_of(calm)
    for seed, score in mean_by_seed(calm).items():
        assert score >= 0.5 and score > max(mean_by_seed(anchor)[seed],
                                            mean_by_seed(augmenting)[seed])
    assert pooled_p(calm, anchor) < 0.05 and pooled_p(calm, augmenting) < 0.05


def test_the_committed_components_behave_as_in_the_paper():
    """m_A substitutes, m_B computes, neither does KV arithmetic: three seeds each."""
    def means(label: str, task: str) -> list[float]:
        return list(mean_by_seed(row_scores(CLAIM_FOLDER, label, task)).values())

    assert len(means(CALM_ROW, "kv_arithmetic")) == 3
    assert min(means(AUGMENTING_ROW, "kv_substitution")) >= 0.9
    assert min(means(ANCHOR_ROW, "numeric_arithmetic")) >= 0.75
    assert max(means(AUGMENTING_ROW, "kv_arithmetic") + means(ANCHOR_ROW, "kv_arithmetic")) < 0.2


@pytest.mark.xfail(strict=True, reason=(
    "issue 17, measured over 3 seeds (README): CALM's cross-attention stays uniform over the "
    "augmenting positions it may read, so held-out KV arithmetic stays near the anchor's"))
def test_the_committed_claim_calm_beats_both_components_over_three_seeds():
    assert_calm_beats_both_components(CLAIM_FOLDER)


@SLOW
def test_the_augmenting_model_carries_each_value_at_the_key_position():
    from harness.contract import ModelRef
    from harness.models.loading import load_causal_lm

    augmenting, tokenizer = load_causal_lm(ModelRef("harness-zoo/kv-augmenting", dtype="float32",
                                                    device="cpu"))
    accuracy = kv.probe_values(augmenting, tokenizer, CONNECTED_AUGMENTING_LAYERS)
    print(f"\nlinear probe on held-out keys, by augmenting layer: {accuracy}")
    assert min(accuracy.values()) >= 0.9


@SLOW
@pytest.mark.xfail(strict=False, reason="issue 17: see the committed claim's test")
def test_the_claim_rerun_from_scratch(tmp_path: Path):
    from support import run_cli

    for seed in (1, 2, 3):
        ran = run_cli("run", "--suite", "calm_table1", "--seed", str(seed), "--results",
                      str(tmp_path), timeout=3600)
        assert ran.returncode == 0, ran.stderr[-2000:]
    assert_calm_beats_both_components(tmp_path)
