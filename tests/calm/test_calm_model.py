"""CALM's exact properties on two tiny Llamas sharing a tokenizer (issue #9)."""

from __future__ import annotations

import pytest
import torch
from adapters.adapters_support import synthetic_task
from calm.calm_support import context, load_pair, randomise_outputs, refs

from harness.api import EarlyStopping
from harness.errors import UsageError
from harness.plugins.calm import build
from harness.plugins.calm.config import CalmOptions
from harness.plugins.calm.layer import linspace_connections, paper_connections
from harness.plugins.calm.model import compose
from harness.training import parameter_digests

PROMPT = "The cat sat on the mat and looked at the door"


def ids(tokenizer, text: str = PROMPT) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


def test_zero_initialised_composition_equals_the_anchor_exactly():
    anchor, augmenting, tokenizer = load_pair()
    tokens = ids(tokenizer)
    with torch.no_grad():
        alone = anchor(input_ids=tokens).logits
        compose(anchor, augmenting, CalmOptions(every=2))
        composed = anchor(input_ids=tokens).logits
    assert torch.equal(alone, composed)


def test_deepmind_initialisation_changes_the_anchor():
    anchor, augmenting, tokenizer = load_pair()
    tokens = ids(tokenizer)
    with torch.no_grad():
        alone = anchor(input_ids=tokens).logits
        compose(anchor, augmenting, CalmOptions(layout="deepmind"))
        assert not torch.allclose(alone, anchor(input_ids=tokens).logits)


@pytest.mark.parametrize("layout, leaks", [("causal", False), ("deepmind", True)])
def test_a_later_token_reaches_earlier_positions_only_without_the_mask(layout, leaks):
    anchor, augmenting, tokenizer = load_pair()
    calm = compose(anchor, augmenting, CalmOptions(layout=layout, every=2))
    randomise_outputs(calm)
    tokens = ids(tokenizer)
    changed = tokens.clone()
    t = tokens.shape[1] - 2
    changed[0, t + 1] = (tokens[0, t + 1] + 7) % len(tokenizer)
    with torch.no_grad():
        before, after = anchor(input_ids=tokens).logits, anchor(input_ids=changed).logits
    assert torch.equal(before[0, :t + 1], after[0, :t + 1]) != leaks
    assert not torch.equal(before[0, t + 1], after[0, t + 1])


def test_connection_rules():
    # the released code's own cases (google-deepmind/calm model/utils_test.py),
    # get_connections(n, N_anchor, N_augmenting)
    assert linspace_connections(2, 2, 2) == [(0, 0), (1, 1)]
    assert linspace_connections(1, 2, 2) == [(0, 0)]
    assert linspace_connections(2, 1, 2) == [(0, 0), (0, 1)]
    assert linspace_connections(2, 2, 1) == [(0, 0), (1, 0)]
    # and their gemma-2b case (18 layers, 2 connections)
    assert linspace_connections(2, 18, 18) == [(0, 0), (17, 17)]
    # the paper's N_A/n = 4: outputs of augmenting layers 3, 7, 11 into the anchor layers at
    # the same relative depths
    assert paper_connections(24, 12, 4) == [(7, 3), (15, 7), (23, 11)]
    assert paper_connections(8, 8, 4) == [(3, 3), (7, 7)]
    assert paper_connections(6, 2, 4) == [(5, 1)]


@pytest.mark.parametrize("layout", ["causal", "deepmind"])
def test_trainable_parameter_count_matches_the_formula(layout):
    anchor, augmenting, _ = load_pair()
    calm = compose(anchor, augmenting, CalmOptions(layout=layout, every=2))
    d_b = anchor.config.hidden_size
    d_a = augmenting.config.hidden_size
    per_connection = d_a * d_b + d_b + 4 * d_b * d_b + 4 * d_b + (d_b if layout == "deepmind" else 0)
    trainable = sum(p.numel() for p in anchor.parameters() if p.requires_grad)
    assert trainable == len(calm.pairs) * per_connection == 2 * per_connection
    assert all(n.startswith("calm.") for n, p in anchor.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in augmenting.parameters())


def test_only_the_connections_get_gradients_and_a_fit_leaves_both_models_untouched(tmp_path):
    anchor, augmenting, tokenizer = load_pair()
    options = CalmOptions(every=2, max_steps=3, batch_size=4, micro_batch_size=4, lr=1e-2)
    calm = compose(anchor, augmenting, options)
    randomise_outputs(calm)  # zero output weights would stop gradients to the rest
    tokens = ids(tokenizer)
    anchor(input_ids=tokens, labels=tokens).loss.backward()
    with_grad = {n for n, p in anchor.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in anchor.named_parameters() if n.startswith("calm.")}
    assert all(p.grad is None for p in augmenting.parameters())
    anchor.zero_grad(set_to_none=True)

    from harness.training import fit

    base = {n: d for n, d in parameter_digests(anchor).items() if not n.startswith("calm.")}
    augmenting_before = parameter_digests(augmenting)
    connections_before = {n: d for n, d in parameter_digests(anchor).items() if n.startswith("calm.")}
    train = [{"prompt": f"Question {i}:", "target": " the cat"} for i in range(8)]
    ctx = context(options, synthetic_task(train), tmp_path)
    fit(ctx, anchor, tokenizer, "calm")
    after = parameter_digests(anchor)
    assert {n: d for n, d in after.items() if not n.startswith("calm.")} == base
    assert parameter_digests(augmenting) == augmenting_before
    assert all(after[n] != d for n, d in connections_before.items())


@pytest.mark.parametrize("layout", ["causal", "deepmind"])
def test_cached_and_uncached_greedy_generation_agree(layout):
    anchor, augmenting, tokenizer = load_pair()
    calm = compose(anchor, augmenting, CalmOptions(layout=layout, every=2))
    randomise_outputs(calm)
    tokenizer.padding_side = "left"
    batch = tokenizer([PROMPT, "A dog"], return_tensors="pt", padding=True)
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        cached = anchor.generate(**batch, use_cache=True, **settings)
        uncached = anchor.generate(**batch, use_cache=False, **settings)
    assert torch.equal(cached, uncached)


def test_batched_and_one_at_a_time_loglikelihood_agree(tmp_path):
    from lm_eval.api.instance import Instance

    from harness.lm import hf_lm

    anchor, augmenting, tokenizer = load_pair()
    calm = compose(anchor, augmenting, CalmOptions(every=2))
    randomise_outputs(calm)
    pairs = [(PROMPT, " and slept"), ("A dog", " ran home to the mat"), ("The", " cat"),
             ("One two three four five six", " seven")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    scores = {}
    for size in (1, 4):
        ctx = context(CalmOptions(), synthetic_task([]), tmp_path)
        ctx.batch_size = size
        scores[size] = hf_lm(anchor, tokenizer, ctx).loglikelihood(requests, disable_tqdm=True)
    assert [g for _, g in scores[1]] == [g for _, g in scores[4]]
    assert torch.allclose(torch.tensor([s for s, _ in scores[1]]),
                          torch.tensor([s for s, _ in scores[4]]), atol=1e-5)


def test_different_tokenizers_are_refused_naming_both(tmp_path):
    ctx = context(CalmOptions(), synthetic_task([]), tmp_path,
                  models=refs("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2"))
    with pytest.raises(UsageError) as refused:
        build(ctx)
    message = str(refused.value)
    assert "\n" not in message
    assert "harness-zoo/tiny-llama" in message and "harness-zoo/tiny-gpt2" in message


def test_a_connection_into_the_embedding_output_starts_as_the_anchor_and_feeds_layer_zero():
    anchor, augmenting, tokenizer = load_pair()
    tokens = ids(tokenizer)
    with torch.no_grad():
        alone = anchor(input_ids=tokens).logits
        calm = compose(anchor, augmenting, CalmOptions(connections="-1:1"))
        assert calm.pairs == [(-1, 1)]
        assert torch.equal(alone, anchor(input_ids=tokens).logits)
        randomise_outputs(calm)
        changed = anchor(input_ids=tokens).logits
    assert not torch.allclose(alone[0, 0], changed[0, 0])


@pytest.mark.parametrize("connections", ["-2:1", "x:1", "1:-1"])
def test_malformed_connections_are_refused(connections):
    with pytest.raises(ValueError, match="connections"):
        CalmOptions(connections=connections)


def test_early_stopping_keeps_the_best_validated_connections(tmp_path):
    import dataclasses

    from harness.training import fit

    anchor, augmenting, tokenizer = load_pair()
    # trained towards " the cat", validated on " a dog": the validation loss soon stops falling
    options = CalmOptions(every=2, max_steps=40, batch_size=4, micro_batch_size=4, lr=0.3,
                          validate_every=1, patience=2)
    compose(anchor, augmenting, options)
    train = [{"prompt": f"Question {i}:", "target": " the cat"} for i in range(8)]
    held = [{"prompt": f"Query {i}:", "target": " a dog"} for i in range(4)]
    task = dataclasses.replace(synthetic_task(train), validation_examples=lambda ctx: held)
    report = fit(context(options, task, tmp_path), anchor, tokenizer, "calm",
                 early_stopping=EarlyStopping(options.validate_every, options.patience))
    losses = report["validation_losses"]
    assert report["stopped_early"] and report["train_steps"] == len(losses) < 40
    assert report["best_step"] == losses.index(min(losses)) + 1
    assert min(losses[-2:]) > min(losses)
    from harness.training import encode_examples
    from harness.training.loop import Validation, validation_loss

    encoded = encode_examples(tokenizer, held, options.max_seq_len, options.loss_on_prompt)
    kept = validation_loss(anchor, Validation(encoded, EarlyStopping(1, 1)), options,
                           tokenizer.pad_token_id, torch.device("cpu"))
    assert kept == pytest.approx(min(losses), rel=1e-5)
