"""AdaLink's options: the link's shape and initialisation, plus fit defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.api import TrainingOptions

MODALITIES = ("text", "image")


@dataclass(frozen=True)
class AdaLinkOptions(TrainingOptions):
    """AdaLink (Wang et al., arXiv 2310.12100); no public code, so the unpublished details
    are options and their defaults are recorded with every result.

    Each modality gets its own residual bottleneck `h + W_up act(W_down h)` of rank
    `rank`. `up_init_std` 0 makes W_up zero, so the adapted model equals the base model at
    step 0; W_down is drawn from N(0, down_init_std^2), 1/sqrt(d) when unset. `modalities`
    lists the streams to adapt; "image" applies only to models with an image projector
    (`image_projector` names that module; empty: found by its usual names). The fit
    defaults (AdamW lr 1e-3, batch 32, 3 epochs, linear decay) are ours: the paper's
    optimiser settings are not public.
    """

    rank: int = 64
    activation: Literal["identity", "relu", "gelu", "silu", "tanh"] = "identity"
    bias: bool = False
    up_init_std: float = 0.0
    down_init_std: float | None = None
    modalities: tuple[str, ...] = MODALITIES
    image_projector: str = ""
    lr: float = 1e-3
    batch_size: int = 32
    micro_batch_size: int = 8
    epochs: float = 3.0
    warmup_ratio: float = 0.03

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError("rank must be at least 1")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, "
                             f"got {self.modalities}")
        if self.up_init_std < 0 or (self.down_init_std is not None and self.down_init_std <= 0):
            raise ValueError("init standard deviations must be positive (up_init_std may be 0)")
