"""Aligner against the official code (mytemporalaccount/Aligner, Lit-LLaMA `lit_llama/aligner.py`)
on a tiny random LLaMA (methods.md 6.2): logits with and without the KV cache, zero gates,
adapters exchanged through the official checkpoint format in both directions, and every
released checkpoint read by our loader. Run with HARNESS_PARITY_ALIGNER=/path/to/Aligner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from parity.aligner_support import (ATOL, CONTEXT, HEADS, LAYERS, VOCAB, WIDTH, cached_logits,
                                    fixed_ids, hf_llama)
from parity.parity_support import import_official, official_checkout

CHECKOUT = official_checkout("HARNESS_PARITY_ALIGNER", "mytemporalaccount/Aligner",
                             "lit_llama/aligner.py")

from harness.plugins.aligner.checkpoint import (load_official, official_state_dict,  # noqa: E402
                                                read_official)
from harness.plugins.aligner.model import inject_aligner  # noqa: E402


@pytest.fixture(scope="module")
def official() -> Any:
    return load_official_aligner()


def load_official_aligner() -> Any:
    [aligner] = import_official(CHECKOUT, ["lit_llama.aligner"], {
        # lit_llama.utils imports Lightning strategies for its sharded-checkpoint helpers
        "lightning": {}, "lightning.fabric": {},
        "lightning.fabric.strategies": {"DeepSpeedStrategy": object, "FSDPStrategy": object},
        "dataclasses_json": {"dataclass_json": lambda cls: cls},
    })
    return aligner


def _lit_from_hf(official: Any, hf: Any, num_tokens: int) -> Any:
    """The official model with the HF weights, mapped as `scripts/convert_hf_checkpoint.py`
    maps them: q/k rows permuted back to Lit's interleaved RoPE layout, q, k, v stacked."""
    config = official.LLaMAConfig(block_size=CONTEXT, vocab_size=VOCAB, n_layer=LAYERS,
                                  n_head=HEADS, n_embd=WIDTH, adapter_prompt_length=num_tokens,
                                  adapter_start_layer=2)
    lit = official.LLaMA(config).to(next(hf.parameters()).dtype).eval()

    def interleaved(weight: torch.Tensor) -> torch.Tensor:
        return weight.view(HEADS, 2, WIDTH // HEADS // 2, WIDTH).transpose(1, 2).reshape(WIDTH, WIDTH)

    state = {"transformer.wte.weight": hf.model.embed_tokens.weight,
             "transformer.ln_f.scale": hf.model.norm.weight, "lm_head.weight": hf.lm_head.weight}
    for i, layer in enumerate(hf.model.layers):
        attention, mlp, prefix = layer.self_attn, layer.mlp, f"transformer.h.{i}"
        state[f"{prefix}.attn.c_attn.weight"] = torch.cat([
            interleaved(attention.q_proj.weight), interleaved(attention.k_proj.weight),
            attention.v_proj.weight])
        state |= {f"{prefix}.attn.c_proj.weight": attention.o_proj.weight,
                  f"{prefix}.mlp.c_fc1.weight": mlp.gate_proj.weight,
                  f"{prefix}.mlp.c_fc2.weight": mlp.up_proj.weight,
                  f"{prefix}.mlp.c_proj.weight": mlp.down_proj.weight,
                  f"{prefix}.rms_1.scale": layer.input_layernorm.weight,
                  f"{prefix}.rms_2.scale": layer.post_attention_layernorm.weight}
    missing, unexpected = lit.load_state_dict({k: v.detach() for k, v in state.items()},
                                              strict=False)
    assert not unexpected and all("adapter" in k or "gating" in k or "global" in k for k in missing)
    return lit


def _randomise_official_adapter(lit: Any, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embedding = lit.global_value_embedding.weight
        embedding.copy_(torch.randn(embedding.shape, generator=generator))
        for block in lit.transformer.h[2:]:
            gate = block.attn.gating_factor
            gate.copy_(torch.randn(gate.shape, generator=generator))


def _official_cached_logits(lit: Any, ids: torch.Tensor) -> torch.Tensor:
    """Theirs through `input_pos`, one token at a time (their generate loop)."""
    lit.reset_cache()
    return torch.cat([lit(ids[:, t:t + 1], max_seq_length=ids.shape[1],
                          input_pos=torch.tensor([t])) for t in range(ids.shape[1])], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_tokens", [1, 3])
def test_logits_match_the_official_model_full_and_cached(official, tmp_path, dtype, num_tokens):
    hf = hf_llama(dtype)
    lit = _lit_from_hf(official, hf, num_tokens)
    ids = fixed_ids()
    with torch.no_grad():
        base = hf(ids).logits
        inject_aligner(hf, num_tokens=num_tokens)  # zero gates: still the base model
        torch.testing.assert_close(lit(ids), hf(ids).logits, atol=ATOL[dtype], rtol=0)
        torch.testing.assert_close(hf(ids).logits, base, atol=0, rtol=0)

        _randomise_official_adapter(lit, seed=num_tokens)
        path = tmp_path / "official.pth"
        torch.save(official.adapter_state_from_state_dict(lit.state_dict()), path)
        hf.aligner.remove()
        load_official(hf, path, num_tokens, 2)
        theirs, ours = lit(ids), hf(ids).logits
        assert (ours - base).abs().max() > 0.1  # the adapter does change the output
        torch.testing.assert_close(ours, theirs, atol=ATOL[dtype], rtol=0)
        torch.testing.assert_close(cached_logits(hf, ids), _official_cached_logits(lit, ids),
                                   atol=ATOL[dtype], rtol=0)


def test_our_adapter_in_the_official_format_drives_the_official_model(official):
    hf = hf_llama(torch.float32)
    lit = _lit_from_hf(official, hf, num_tokens=3)
    aligner = inject_aligner(hf, num_tokens=3)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        aligner.prefix.copy_(torch.randn(aligner.prefix.shape, generator=generator))
        for gate in aligner.gates:
            gate.copy_(torch.randn(gate.shape, generator=generator))
        missing, unexpected = lit.load_state_dict(official_state_dict(aligner), strict=False)
        assert not unexpected and not any("gating" in k or "global" in k for k in missing)
        torch.testing.assert_close(lit(fixed_ids()), hf(fixed_ids()).logits, atol=ATOL[torch.float32], rtol=0)


def _released() -> list[Path]:
    return sorted((CHECKOUT / "aligner_weights").rglob("*.pth"))


def test_released_checkpoints_read_with_the_papers_shapes():
    """Every released file that is a checkpoint (one, the 10-token 7B Alpaca adapter, is a
    JSON dataset under a .pth name) has P of width 4096/5120, per-head gates on layers
    2..L-1, and N*d + (L-2)*H parameters (5,056 for 7B with N=1)."""
    from harness.errors import DataError

    shapes = {4096: (32, 32), 5120: (40, 40)}  # LLaMA-2-7B, -13B: (layers, heads)
    readable = 0
    for path in _released():
        try:
            checkpoint = read_official(path)
        except DataError as error:
            assert "not a PyTorch checkpoint" in str(error) and path.read_bytes()[:1] == b"{"
            continue
        readable += 1
        layers, heads = shapes[checkpoint.prefix.shape[1]]
        assert sorted(checkpoint.gates) == list(range(2, layers))
        assert all(g.shape == (1, heads, 1, 1) for g in checkpoint.gates.values())
        count = checkpoint.prefix.numel() + sum(g.numel() for g in checkpoint.gates.values())
        assert count == checkpoint.num_tokens * checkpoint.prefix.shape[1] + (layers - 2) * heads
        if "1Token-llama2-7B" in path.name:
            assert count == 5_056
    assert readable >= 9
