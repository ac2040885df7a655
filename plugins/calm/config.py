"""CALM's options: layout, connections, cross-attention heads, plus fit defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.api import TrainingOptions, option

LAYOUTS = ("causal", "deepmind")
EMBEDDING_OUTPUT = "-1"  # an anchor "layer" index: the embedding output, the first layer's input


@dataclass(frozen=True)
class CalmOptions(TrainingOptions):
    """CALM (Bansal et al., arXiv 2401.02412). The paper leaves initialisation, normalisation,
    masking and optimiser settings open; our defaults are recorded with every result.

    `layout` "causal" (default): anchor position t reads augmenting positions <= t and never
    padding, the cross-attention output projection starts at zero (the composed model equals
    the anchor at step 0), no extra normalisation. "deepmind": as the released code, i.e. no
    mask of any kind, a Gemma RMSNorm after the attention, PyTorch's default initialisation,
    connections spaced by linspace over both models (first and last layer included).

    Connections pair the *output* of anchor layer j with the *output* of augmenting layer i
    (0-indexed; anchor j = -1 is the embedding output, a departure from the paper).
    Default: every `every`-th augmenting layer (i = every-1, 2*every-1, ..., n = N_A // every
    of them, at least one) with n anchor layers at the same relative depths
    (j = (k+1)*N_B//n - 1). `connections` overrides both rules with explicit pairs.
    `validate_every` > 0 validates on the task's validation split and stops early.
    """

    layout: Literal["causal", "deepmind"] = option(
        "causal", "causal: masked, zero-initialised (default); deepmind: the released code's layout")
    every: int = option(4, "connect every n-th augmenting layer (the paper's N_A/n = 4)")
    connections: str = option(
        "", "explicit ANCHOR:AUGMENTING layer pairs (0-indexed layer outputs; anchor -1: the "
            "embedding output), e.g. '-1:1,3:7'")
    num_heads: int = option(0, "cross-attention heads; 0: as many as the anchor's self-attention")
    lr: float = option(1e-3, "peak learning rate (the paper gives none)")
    batch_size: int = option(32, "effective batch: examples per optimizer step")
    micro_batch_size: int = option(32, "examples per forward pass (gradients accumulate)")
    epochs: float = option(3.0, "passes over the composition set (ignored when max_steps is set)")
    warmup_ratio: float = option(0.05, "share of the optimizer steps spent warming up")
    validate_every: int = option(
        0, "optimizer steps between validation losses on the task's validation split, keeping "
           "the best parameters (0: no validation)")
    patience: int = option(4, "validations without a new best before the fit stops early")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every < 1:
            raise ValueError("every must be at least 1")
        if self.validate_every < 0 or self.patience < 1:
            raise ValueError("validate_every must be >= 0 and patience >= 1")
        if self.num_heads < 0:
            raise ValueError("num_heads must be 0 (the anchor's) or positive")
        parse_connections(self.connections)  # refuse malformed pairs at planning time


def parse_connections(text: str) -> list[tuple[int, int]]:
    """'-1:1,3:7' -> [(-1, 1), (3, 7)] as (anchor layer, augmenting layer); anchor layer -1
    is the anchor's embedding output (the first layer's input)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        anchor, sep, augmenting = (part.strip() for part in item.partition(":"))
        if (not sep or not (anchor.isdigit() or anchor == EMBEDDING_OUTPUT)
                or not augmenting.isdigit()):
            raise ValueError(f"connections: expected ANCHOR:AUGMENTING layer indices (ANCHOR may "
                             f"be {EMBEDDING_OUTPUT}, the embedding output), got {item!r}")
        pairs.append((int(anchor), int(augmenting)))
    return pairs
