"""Helpers shared by the CALM tests: two tiny zoo models with one tokenizer, composed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.contract import BuildContext, DataSource, ModelRef, NoOptions, TaskSpec
from harness.models.loading import load_causal_lm

ANCHOR = "harness-zoo/tiny-llama"
AUGMENTING = "harness-zoo/tiny-llama-b"
TEST_DEVICE = os.environ.get("HARNESS_TEST_DEVICE", "cpu")


def refs(anchor: str = ANCHOR, augmenting: str = AUGMENTING) -> list[ModelRef]:
    return [ModelRef(anchor, dtype="float32", device=TEST_DEVICE),
            ModelRef(augmenting, dtype="float32", device=TEST_DEVICE)]


def load_pair() -> tuple[Any, Any, Any]:
    """(anchor, augmenting, tokenizer), fresh from the zoo."""
    anchor_ref, augmenting_ref = refs()
    anchor, tokenizer = load_causal_lm(anchor_ref)
    augmenting, _ = load_causal_lm(augmenting_ref)
    return anchor, augmenting, tokenizer


def randomise_outputs(calm: Any, seed: int = 0) -> None:
    """Give every zero-initialised output projection random weights, so the connections
    change the anchor (as after training)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for connection in calm.connections:
            out = connection.cross_attention.out_proj
            out.weight.copy_(torch.randn(out.weight.shape, generator=generator) * 0.5)
            out.bias.copy_(torch.randn(out.bias.shape, generator=generator) * 0.1)


def context(options: Any, task: TaskSpec, tmp_path: Path, models: list[ModelRef] | None = None
            ) -> BuildContext:
    return BuildContext(models=models or refs(), options=options, task=task,
                        task_options=NoOptions(), seed=1234, device=TEST_DEVICE, batch_size=4,
                        workdir=tmp_path / "work", data=DataSource("embedded"),
                        cache_root=tmp_path / "cache")
