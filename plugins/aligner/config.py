"""Aligner's options: the module's shape plus the official SFT recipe as fit defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.api import TrainingOptions, option


@dataclass(frozen=True)
class AlignerOptions(TrainingOptions):
    """Aligner (Zhou et al., arXiv 2312.05503), defaults from the official code.

    `num_tokens` is N, the rows of the one global prefix P (the paper reports 1 and 10;
    the title's "one global token" is the default). `start_layer`: the official code
    adapts layers 2..L-1 although the paper says "every layer". Fit defaults are the
    official Alpaca SFT recipe: AdamW lr 9e-3, weight decay 0.02, effective batch 64 from
    micro-batches of 8, linear warm-up over 2 of 8 epochs then a constant rate, loss on
    prompt and response (`mask_inputs=False`), sequences cut at 512 tokens.
    """

    num_tokens: int = 1
    start_layer: int = 2
    checkpoint: str = option("", "an official Aligner checkpoint (a .pth of the authors' "
                                 "aligner_weights/) to evaluate instead of fitting; num_tokens "
                                 "and start_layer must match it")
    lr: float = 9e-3
    weight_decay: float = 0.02
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "constant_with_warmup"
    warmup_ratio: float = 0.25
    batch_size: int = 64
    micro_batch_size: int = 8
    epochs: float = 8.0
    max_seq_len: int = 512
    loss_on_prompt: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tokens < 1:
            raise ValueError("num_tokens must be at least 1")
        if self.start_layer < 0:
            raise ValueError("start_layer must be >= 0")
