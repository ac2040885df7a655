"""What the Aligner parity tests and their fixtures share: a random LLaMA that Lit-LLaMA can
express, fixed ids, and decoding through the KV cache."""

from __future__ import annotations

from typing import Any

import torch
from parity.parity_support import seeded_

VOCAB, WIDTH, LAYERS, HEADS, CONTEXT = 32, 64, 4, 4, 64
# Lit-LLaMA computes RoPE in float32 whatever the model dtype, so float64 models agree to
# float32 rounding of the rotation, not to float64 rounding.
ATOL = {torch.float32: 2e-5, torch.float64: 1e-6}


def hf_llama(dtype: torch.dtype) -> Any:
    """A random LLaMA that Lit-LLaMA can express: no GQA, its MLP width, eps 1e-5."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         intermediate_size=256, rms_norm_eps=1e-5,
                         max_position_embeddings=CONTEXT, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(dtype).eval()
    # norms too: nothing is left at a special value (uniform, std 0.2)
    return seeded_(model, seed=0, scale=0.2 * 3 ** 0.5)


def fixed_ids(length: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(1))


def cached_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Our model fed one token at a time through a KV cache."""
    from transformers import DynamicCache

    cache, steps = DynamicCache(config=model.config), []
    for t in range(ids.shape[1]):
        steps.append(model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits)
    return torch.cat(steps, dim=1)
