"""Aligner against what the official Lit-LLaMA code computed (fixtures/aligner.safetensors,
written by regenerate_fixtures.py from a checkout of mytemporalaccount/Aligner), on the
random LLaMA of aligner_support: the base logits, the checkpoint the official code writes
read by our loader, the adapted logits full and through the KV cache, and our writer giving
that checkpoint back. Runs without a checkout; test_aligner.py runs live when one is named."""

from __future__ import annotations

import pytest
import torch
from parity.aligner_support import ATOL, cached_logits, fixed_ids, hf_llama
from parity.parity_support import load_fixture

from harness.plugins.aligner.checkpoint import load_official, official_state_dict
from harness.plugins.aligner.model import inject_aligner


@pytest.fixture(scope="module")
def fixture() -> dict[str, torch.Tensor]:
    tensors, meta = load_fixture("aligner")
    assert meta["ids"] == fixed_ids().tolist()
    return tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_tokens", [1, 3])
def test_official_checkpoint_reproduces_the_official_logits(fixture, tmp_path, dtype, num_tokens):
    case = f"{str(dtype).removeprefix('torch.')}/{num_tokens}"
    stored = {key.removeprefix(case + "/"): value for key, value in fixture.items()
              if key.startswith(case + "/")}
    checkpoint = {key.removeprefix("checkpoint/"): value for key, value in stored.items()
                  if key.startswith("checkpoint/")}
    hf, ids = hf_llama(dtype), fixed_ids()
    with torch.no_grad():
        base = hf(ids).logits
        torch.testing.assert_close(base, stored["base"], atol=ATOL[dtype], rtol=0)
        inject_aligner(hf, num_tokens=num_tokens)  # zero gates: still the base model
        torch.testing.assert_close(hf(ids).logits, base, atol=0, rtol=0)
        hf.aligner.remove()
        path = tmp_path / "official.pth"
        torch.save(checkpoint, path)  # the file the official code saves
        aligner = load_official(hf, path, num_tokens, 2)
        ours = hf(ids).logits
        assert (ours - base).abs().max() > 0.1  # the adapter does change the output
        torch.testing.assert_close(ours, stored["adapted"], atol=ATOL[dtype], rtol=0)
        torch.testing.assert_close(cached_logits(hf, ids), stored["cached"], atol=ATOL[dtype],
                                   rtol=0)
    written = official_state_dict(aligner)  # our writer: the official file back, key for key
    assert sorted(written) == sorted(checkpoint)
    for key, value in checkpoint.items():
        torch.testing.assert_close(written[key].to(value.dtype), value, atol=0, rtol=0)
