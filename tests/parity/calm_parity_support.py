"""What the CALM fixtures share with the script that writes them: an anchor and an augmenting
model drawn by `seeded_` (the same on every machine), the connections and fixed ids."""

from __future__ import annotations

from typing import Any

import torch
from parity.parity_support import seeded_

VOCAB = 64
CONNECTIONS = [(1, 1), (3, 3)]  # (anchor layer, augmenting layer), the official order
HEADS = 2


def seeded_pair() -> tuple[Any, Any]:
    """(anchor, augmenting): two small random Llamas of different widths, one vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def llama(width: int, seed: int) -> Any:
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=4,
                             num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=2 * width, max_position_embeddings=64,
                             tie_word_embeddings=False)
        return seeded_(LlamaForCausalLM(config), seed, scale=0.3).eval()

    return llama(32, seed=1), llama(48, seed=2)


def fixed_tokens(length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, the same ids with the last token changed)."""
    ids = torch.randint(1, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, -1] = ids[:, -1] % (VOCAB - 1) + 1
    return ids, changed


def seeded_hook_(connection: Any, index: int) -> Any:
    """A connection's weights (projection, multi-head attention, post-attention RMSNorm) by
    `seeded_`: the official hook and our connection share parameter names, so both get the
    same numbers, none at its initial value."""
    return seeded_(connection, seed=100 + index, scale=0.3)
