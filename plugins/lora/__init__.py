"""`lora`: LoRA (Hu et al., arXiv 2106.09685) through peft, trained on the shared path.

Defaults are the alpaca-lora recipe, the LoRA baseline of instruction-tuning comparisons
such as Aligner's: rank 8, alpha 16, dropout 0.05 on q_proj and v_proj; AdamW lr 3e-4,
effective batch 128 from micro-batches of 4, 3 epochs, linear decay after ~100 warm-up
steps (8% of a 3-epoch Alpaca run), loss on prompt and response. On a vision-language
model the named modules are the language model's only (a CLIP vision tower has q_proj too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api import (BuildContext, MethodSpec, Training, TrainingOptions, at_least, hookimpl,
                         language_model_targets, option, peft_model, vision_when_multimodal)


@dataclass(frozen=True)
class LoraOptions(TrainingOptions):
    r: int = option(8, "rank of the low-rank update")
    alpha: int = option(16, "scaling numerator: the update is scaled by alpha / r")
    dropout: float = option(0.05, "dropout on the LoRA branch's input")
    target_modules: tuple[str, ...] = option(("q_proj", "v_proj"), "modules given a LoRA update")
    lr: float = 3e-4
    batch_size: int = 128
    micro_batch_size: int = 4
    epochs: float = 3.0
    warmup_ratio: float = 0.08
    max_seq_len: int = 256
    loss_on_prompt: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, r=1, alpha=1)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


def adapt(model: Any, options: LoraOptions) -> Any:
    """peft's LoRA model around `model` (base frozen by peft). On a vision-language model
    the targets are the language model's modules of those names (not the vision tower's)."""
    from peft import LoraConfig

    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=language_model_targets(model, options.target_modules),
                        task_type="CAUSAL_LM")
    return peft_model(model, config)


def build(ctx: BuildContext) -> Any:
    from harness.api import fitted_lm

    return fitted_lm(ctx, "lora", adapt)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="lora",
        description="LoRA through peft: low-rank updates of q_proj and v_proj (r=8, alpha=16).",
        build=build,
        options=LoraOptions,
        model_capabilities=vision_when_multimodal,
        training=Training(description="alpaca-lora recipe: AdamW lr 3e-4, batch 128, 3 epochs"),
    )]
