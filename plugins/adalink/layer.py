"""One AdaLink: a token-wise residual bottleneck `h + W_up act(W_down h)`."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU,
               "tanh": nn.Tanh}


class AdaLinkLayer(nn.Module):
    """Down-projection d -> r, activation, up-projection r -> d, identity skip.

    Computes in its own (float32) precision and returns the input's dtype, so a bf16 base
    model gets a float32 adapter. With W_up = 0 (and no up bias) the output is the input,
    bit for bit.
    """

    def __init__(self, hidden_size: int, rank: int, activation: str = "identity",
                 bias: bool = False, up_init_std: float = 0.0,
                 down_init_std: float | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, rank, bias=bias, device=device)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(rank, hidden_size, bias=bias, device=device)
        with torch.no_grad():
            self.down.weight.normal_(0.0, down_init_std or 1.0 / math.sqrt(hidden_size))
            if up_init_std:
                self.up.weight.normal_(0.0, up_init_std)
            else:
                self.up.weight.zero_()
            for linear in (self.down, self.up):
                if linear.bias is not None:
                    linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        link = self.up(self.activation(self.down(hidden.to(self.down.weight.dtype))))
        return hidden + link.to(hidden.dtype)
