"""Aligner on a whole model: one global prefix P shared by every adapted layer.

`inject_aligner` freezes the base model, creates P (N x d, `nn.Embedding`'s N(0, 1)
init as in the official code) and one zero-initialised gate of shape (1, H, 1, 1) per
adapted layer, hooks layers `start_layer..L-1`, and registers the adapter on the model
as the `aligner` submodule. The model object stays the transformers model (same class,
same base parameter names), so lm-eval, `generate` and the KV cache work unchanged:
the prefix keys/values do not depend on the input and are recomputed from P for each
call, while the base attention caches its own keys and values as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.api import UsageError, freeze

from .layer import AlignerLayer


class Aligner(nn.Module):
    """The trainable part: `prefix` (N x d) and `gates[i]` for adapted layer start_layer + i."""

    def __init__(self, num_tokens: int, hidden_size: int, num_heads: int, adapted: int,
                 start_layer: int, device: Any = None) -> None:
        super().__init__()
        self.start_layer = start_layer
        self.prefix = nn.Parameter(torch.randn(num_tokens, hidden_size, device=device))
        self.gates = nn.ParameterList(
            nn.Parameter(torch.zeros(1, num_heads, 1, 1, device=device)) for _ in range(adapted))
        self.layers: list[AlignerLayer] = []

    def remove(self) -> None:
        for layer in self.layers:
            layer.remove()
        self.layers = []


def inject_aligner(model: Any, num_tokens: int = 1, start_layer: int = 2) -> Aligner:
    """Freeze `model`, attach Aligner to layers `start_layer..L-1`, return the adapter."""
    config = model.config.get_text_config()
    decoder_layers = model.get_decoder().layers
    if not 0 <= start_layer < len(decoder_layers):
        raise UsageError(f"aligner: start_layer={start_layer} but the model has "
                         f"{len(decoder_layers)} layers")
    freeze(model)
    device = next(model.parameters()).device
    num_heads = config.num_attention_heads
    num_kv_heads = getattr(config, "num_key_value_heads", None) or num_heads
    adapted = decoder_layers[start_layer:]
    aligner = Aligner(num_tokens, config.hidden_size, num_heads, len(adapted), start_layer,
                      device)
    aligner.layers = [AlignerLayer(layer.self_attn, aligner.prefix, gate, num_heads, num_kv_heads)
                      for layer, gate in zip(adapted, aligner.gates)]
    model.add_module("aligner", aligner)
    return aligner
