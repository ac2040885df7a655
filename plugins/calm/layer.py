"""One CALM connection: project an augmenting layer's states to the anchor's width and let
the anchor layer's states attend to them, added as a residual."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm


def paper_connections(anchor_layers: int, augmenting_layers: int, every: int
                      ) -> list[tuple[int, int]]:
    """The paper's rule (N_A/n = every): augmenting outputs every-1, 2*every-1, ... and as
    many anchor outputs at the same relative depths; (anchor, augmenting), 0-indexed."""
    n = max(1, augmenting_layers // every)
    augmenting = [min(every * (k + 1), augmenting_layers) - 1 for k in range(n)]
    anchor = [(k + 1) * anchor_layers // n - 1 for k in range(n)]
    return list(zip(anchor, augmenting))


def linspace_connections(count: int, anchor_layers: int, augmenting_layers: int
                         ) -> list[tuple[int, int]]:
    """The released code's rule: `count` layers of each model spaced by linspace over
    [0, N-1] and truncated to integers (first and last layer included)."""
    return list(zip(_linspace(anchor_layers, count), _linspace(augmenting_layers, count)))


def _linspace(layers: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    # numpy's linspace: start + k * step, the last point exactly the end; int() truncates
    step = (layers - 1) / (count - 1)
    return [int(k * step) if k < count - 1 else layers - 1 for k in range(count)]


class CrossAttentionConnection(nn.Module):
    """`h_B + f_cross(h_B, f_proj(h_A))` for one (anchor, augmenting) layer pair.

    f_proj is a linear map D_A -> D_B (with bias); f_cross is multi-head attention with
    queries from the anchor states and keys/values from the projected augmenting states
    (torch's MultiheadAttention: 4*D_B^2 + 4*D_B parameters). `zero_output` zeroes the
    output projection so the connection adds exactly nothing at step 0; `post_norm` adds
    the released code's Gemma RMSNorm (scale 1 + w, w = 0) after the attention. Computes in
    its parameters' precision and returns the anchor states' dtype.
    """

    def __init__(self, anchor_width: int, augmenting_width: int, num_heads: int,
                 zero_output: bool, post_norm: bool, norm_eps: float = 1e-6,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(augmenting_width, anchor_width, device=device)
        self.cross_attention = nn.MultiheadAttention(anchor_width, num_heads, batch_first=True,
                                                     device=device)
        self.post_attention_layernorm = (GemmaRMSNorm(anchor_width, eps=norm_eps).to(device)
                                         if post_norm else None)
        if zero_output:
            with torch.no_grad():
                self.cross_attention.out_proj.weight.zero_()
                self.cross_attention.out_proj.bias.zero_()

    def forward(self, anchor: torch.Tensor, augmenting: torch.Tensor,
                allowed: torch.Tensor | None) -> torch.Tensor:
        """anchor (B, T, D_B), augmenting (B, S, D_A); `allowed` (B, T, S) bool says which
        augmenting positions each anchor position may read (None: all)."""
        dtype = self.proj.weight.dtype
        query = anchor.to(dtype)
        memory = self.proj(augmenting.to(dtype))
        mask = None
        if allowed is not None:
            # additive mask with a finite minimum: a row with nothing allowed (a padding
            # position) stays finite and is zeroed below instead of turning into NaN
            mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            mask = mask.repeat_interleave(self.cross_attention.num_heads, dim=0)
        attended, _ = self.cross_attention(query, memory, memory, attn_mask=mask,
                                           need_weights=False)
        if allowed is not None:
            attended = attended * allowed.any(dim=-1, keepdim=True).to(dtype)
        if self.post_attention_layernorm is not None:
            attended = self.post_attention_layernorm(attended)
        return anchor + attended.to(anchor.dtype)
