"""`TrainingOptions`: the fit settings every training method shares (torch-free, so
method plugins subclass it at import time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.contract import option

# Options that change how a fit is carried out but not what it computes.
NON_RESULT_OPTIONS = frozenset({"checkpoint_every"})


@dataclass(frozen=True)
class TrainingOptions:
    """Fit settings shared by every training method; each method's options subclass this
    with its paper's defaults.

    The budget is `epochs` passes over the data, or `max_steps` optimizer steps when set.
    `batch_size` is the effective batch (examples per optimizer step), reached by
    accumulating `batch_size / micro_batch_size` forward passes.
    """

    lr: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.0, "decoupled weight decay")
    optimizer: Literal["adamw", "adafactor"] = option("adamw", "optimizer")
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = option(
        "linear", "learning-rate schedule after the warm-up (transformers' get_scheduler)")
    warmup_ratio: float = option(0.0, "share of the optimizer steps spent warming up")
    batch_size: int = option(64, "effective batch: examples per optimizer step")
    micro_batch_size: int = option(8, "examples per forward pass (gradients accumulate)")
    epochs: float = option(1.0, "passes over the training data (ignored when max_steps is set)")
    max_steps: int | None = option(None, "optimizer steps; overrides epochs")
    max_seq_len: int = option(512, "training sequences are cut to this many tokens")
    loss_on_prompt: bool = option(False, "train on prompt and target tokens (else target only)")
    training_data: str = option("", "an Alpaca-format JSON file; empty: the task's training split")
    checkpoint_every: int = option(100, "optimizer steps between resumable checkpoints")

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of "
                             f"micro_batch_size ({self.micro_batch_size})")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("epochs must be positive (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must lie in [0, 1]")


@dataclass(frozen=True)
class EarlyStopping:
    """Validate every `every` optimizer steps (teacher-forced loss on the task's validation
    split) and stop after `patience` validations without a new best; the fit keeps the
    best validated parameters."""

    every: int
    patience: int

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < 1:
            raise ValueError("early stopping needs every >= 1 and patience >= 1")
