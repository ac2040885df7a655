"""Aligner checkpoints in the official Lit-LLaMA format (methods.md 2.2, 6.2 item 4): written
by hand as the official `adapter_state_from_state_dict` saves them, round-tripped, refused
with one-line errors, and evaluated through the method's `checkpoint` option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.errors import DataError, UsageError
from harness.plugins.aligner.checkpoint import load_official, official_state_dict
from harness.plugins.aligner.model import inject_aligner

PROMPT = "the cat sat on the mat and the dog ran to the park"
LAYERS, HEADS, WIDTH = 4, 4, 64  # tiny-llama


def _randomised(model: Any, num_tokens: int, seed: int = 0) -> Any:
    aligner = inject_aligner(model, num_tokens=num_tokens)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        aligner.prefix.copy_(torch.randn(aligner.prefix.shape, generator=generator))
        for gate in aligner.gates:
            gate.copy_(torch.randn(gate.shape, generator=generator))
    return aligner


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(tokenizer(PROMPT, return_tensors="pt").input_ids).logits


def _official_file(path: Path, prefix: torch.Tensor, gates: dict[int, torch.Tensor]) -> Path:
    """The key layout of the released `aligner_weights/*.pth`, bf16 as released."""
    state = {"global_value_embedding.weight": prefix.bfloat16()}
    for layer, gate in gates.items():
        state[f"transformer.h.{layer}.attn.gating_factor"] = gate.bfloat16()
        state[f"transformer.h.{layer}.attn.adapter_wte.weight"] = prefix.bfloat16()
    torch.save(state, path)
    return path


def test_a_checkpoint_in_the_official_layout_loads_key_by_key(load_tiny, tmp_path):
    model, _ = load_tiny()
    prefix = torch.randn(3, WIDTH)
    gates = {2: torch.randn(1, HEADS, 1, 1), 3: torch.tensor(0.25)}  # layer 3: an early single gate
    aligner = load_official(model, _official_file(tmp_path / "a.pth", prefix, gates), 3, 2)
    assert torch.equal(aligner.prefix, prefix.bfloat16().float())
    assert torch.equal(aligner.gates[0], gates[2].bfloat16().float())
    assert aligner.gates[1].flatten().tolist() == [0.25] * HEADS
    assert all(not p.requires_grad for n, p in model.named_parameters() if "aligner" not in n)


@pytest.mark.parametrize("num_tokens", [1, 3])
def test_round_trip_through_the_official_format_keeps_the_logits(load_tiny, tmp_path, num_tokens):
    trained, tokenizer = load_tiny()
    aligner = _randomised(trained, num_tokens)
    state = official_state_dict(aligner)
    assert set(state) == {"global_value_embedding.weight"} | {
        f"transformer.h.{i}.attn.{name}" for i in (2, 3)
        for name in ("gating_factor", "adapter_wte.weight")}
    torch.save(state, tmp_path / "ours.pth")
    fresh, _ = load_tiny()
    load_official(fresh, tmp_path / "ours.pth", num_tokens, 2)
    assert torch.equal(_logits(fresh, tokenizer), _logits(trained, tokenizer))


def test_mismatched_options_name_the_values_to_pass(load_tiny, tmp_path):
    model, _ = load_tiny()
    path = _official_file(tmp_path / "a.pth", torch.randn(10, WIDTH),
                          {2: torch.zeros(1, HEADS, 1, 1), 3: torch.zeros(1, HEADS, 1, 1)})
    with pytest.raises(UsageError, match="pass -o num_tokens=10 -o start_layer=2"):
        load_official(model, path, 1, 2)


@pytest.mark.parametrize("content, match", [
    ("json", "not a PyTorch checkpoint"),  # one released file is a JSON dataset under a .pth name
    ("per-layer", "differs from the global prefix"),
    ("wider", "fits a model of width 96"),
    ("no-prefix", "not an official Aligner checkpoint"),
])
def test_bad_checkpoints_are_refused_in_one_line(load_tiny, tmp_path, content, match):
    model, _ = load_tiny()
    path = tmp_path / "bad.pth"
    gates = {2: torch.zeros(1, HEADS, 1, 1), 3: torch.zeros(1, HEADS, 1, 1)}
    if content == "json":
        path.write_text(json.dumps({"question": "not weights"}))
    elif content == "per-layer":
        _official_file(path, torch.randn(1, WIDTH), gates)
        state = torch.load(path, weights_only=True)
        state["transformer.h.3.attn.adapter_wte.weight"] = torch.randn(1, WIDTH).bfloat16()
        torch.save(state, path)
    elif content == "wider":
        _official_file(path, torch.randn(1, 96), gates)
    else:
        torch.save({"transformer.h.2.attn.gating_factor": torch.zeros(1, HEADS, 1, 1)}, path)
    with pytest.raises(DataError, match=match):
        load_official(model, path, 1, 2)


def test_the_method_evaluates_a_checkpoint_without_fitting(load_tiny, tmp_path):
    from adapters.adapters_support import build_context, synthetic_task

    from harness.plugins.aligner import build
    from harness.plugins.aligner.config import AlignerOptions

    trained, tokenizer = load_tiny()
    torch.save(official_state_dict(_randomised(trained, 1)), tmp_path / "released.pth")
    options = AlignerOptions(checkpoint=str(tmp_path / "released.pth"))
    ctx = build_context(options, synthetic_task([]), tmp_path)
    lm = build(ctx)
    assert torch.equal(_logits(lm.model, tokenizer), _logits(trained, tokenizer))
    assert ctx.report.trainable_params == WIDTH + (LAYERS - 2) * HEADS
    assert len(ctx.report.facts["checkpoint_sha256"]) == 64
    assert "fit_fingerprint" not in ctx.report.facts
