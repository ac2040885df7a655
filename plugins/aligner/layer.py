"""Aligner on one frozen attention layer: a gated side channel over the shared prefix.

For the layer's rotated queries q (RoPE applied, as for ordinary attention), the prefix
keys K_p = P W_K and values V_p = P W_V come from the layer's own frozen projections with
no RoPE and no input norm; a separate softmax over the N prefix slots gives
`g_h * softmax(q K_p^T * scaling) V_p`, which joins the head outputs before W_O. Because
W_O is linear and bias-free in Llama-family models, the term is added after the frozen
attention as `W_O(gated prefix attention)`, leaving the base attention untouched. GQA
layers repeat the prefix K/V to the query heads; gates stay per query head.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import UsageError

REQUIRED_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class AlignerLayer:
    """Hooks one attention module; the gate lives in `gates[index]` of the owning Aligner.

    A plain object, not an `nn.Module`, so the frozen attention it wraps is not registered
    a second time under the adapter.
    """

    # `attention` is a transformers attention module (q/k/v/o projections, head_dim,
    # scaling); typed Any because nn.Module's attribute lookup is untyped.
    def __init__(self, attention: Any, prefix: nn.Parameter, gate: nn.Parameter,
                 num_heads: int, num_kv_heads: int) -> None:
        missing = [p for p in REQUIRED_PROJECTIONS if not hasattr(attention, p)]
        if missing or not hasattr(attention, "head_dim"):
            raise UsageError(f"aligner needs Llama-style attention with "
                             f"{', '.join(REQUIRED_PROJECTIONS)}; {type(attention).__name__} "
                             f"lacks {', '.join(missing) or 'head_dim'}")
        if getattr(attention.o_proj, "bias", None) is not None:
            raise UsageError(f"aligner: {type(attention).__name__}.o_proj has a bias; adding the "
                             "prefix term after W_O would count it twice")
        self.attention = attention
        self.prefix = prefix
        self.gate = gate
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.rotate = _rotary_function(attention)
        self._query: torch.Tensor | None = None
        self._handles = [
            attention.q_proj.register_forward_hook(self._keep_query),
            attention.register_forward_hook(self._add_prefix_attention, with_kwargs=True),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _keep_query(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._query = output

    def _add_prefix_attention(self, module: nn.Module, args: Any, kwargs: dict[str, Any],
                              output: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, Any]:
        query, self._query = self._query, None
        if "position_embeddings" not in kwargs or query is None:
            raise RuntimeError("aligner: attention was called without position embeddings "
                               "or without its query projection")
        attn_output, *rest = output
        delta = self.prefix_term(query, kwargs["position_embeddings"])
        return (attn_output + delta.to(attn_output.dtype), *rest)

    def prefix_term(self, projected_query: torch.Tensor,
                    position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """W_O(g * softmax(q K_p^T * scaling) V_p) for queries from `q_proj`, (B, T, d)."""
        attention: Any = self.attention
        batch, length, _ = projected_query.shape
        head_dim = attention.head_dim
        query = projected_query.view(batch, length, self.num_heads, head_dim)
        if hasattr(attention, "q_norm"):  # Qwen3-style per-head query norm before RoPE
            query = attention.q_norm(query)
        query = query.transpose(1, 2)
        cos, sin = position_embeddings
        query, _ = self.rotate(query, query, cos, sin)

        prefix = self.prefix.to(attention.k_proj.weight.dtype)
        keys = attention.k_proj(prefix).view(1, -1, self.num_kv_heads, head_dim)
        if hasattr(attention, "k_norm"):
            keys = attention.k_norm(keys)
        values = attention.v_proj(prefix).view(1, -1, self.num_kv_heads, head_dim)
        repeats = self.num_heads // self.num_kv_heads
        keys = keys.transpose(1, 2).repeat_interleave(repeats, dim=1).expand(batch, -1, -1, -1)
        values = values.transpose(1, 2).repeat_interleave(repeats, dim=1).expand(batch, -1, -1, -1)
        mixed = F.scaled_dot_product_attention(query, keys.to(query.dtype), values.to(query.dtype),
                                               scale=attention.scaling)
        gated = self.gate.to(mixed.dtype) * mixed  # (B, H, T, head_dim)
        gated = gated.transpose(1, 2).reshape(batch, length, self.num_heads * head_dim)
        return F.linear(gated, attention.o_proj.weight.to(gated.dtype))


def _rotary_function(attention: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The model family's own `apply_rotary_pos_emb`, from the attention's module."""
    rotate = getattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", None)
    if rotate is None:
        raise UsageError(f"aligner: {type(attention).__module__} defines no apply_rotary_pos_emb; "
                         "only rotary (Llama-family) attention is supported")
    return rotate
