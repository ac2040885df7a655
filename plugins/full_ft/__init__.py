"""`full_ft`: full fine-tuning of every weight, the upper bound for the adapters (meant for
small models: float32 weights plus two optimizer copies of every parameter). On a
vision-language model every weight but the vision tower's.

Defaults are the Stanford Alpaca recipe: AdamW lr 2e-5, no weight decay, effective batch
128, 3 epochs, 3% warm-up then cosine decay, loss on the response only, 512 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import (BuildContext, MethodSpec, Training, TrainingOptions, freeze, hookimpl,
                         is_multimodal, vision_tower, vision_when_multimodal)


@dataclass(frozen=True)
class FullFtOptions(TrainingOptions):
    lr: float = 2e-5
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03
    batch_size: int = 128
    micro_batch_size: int = 8
    epochs: float = 3.0


def adapt(model: Any, options: FullFtOptions) -> Any:
    """Every weight of `model` becomes trainable, held in float32; on a vision-language
    model every weight but the vision tower's (the projector and the language model, as in
    LLaVA's fine-tuning stage).

    bf16 weights would round updates of lr 2e-5 away (bf16 keeps ~3 significant digits);
    on GPU the fit still computes in bf16 through autocast.
    """
    model.float()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    tower = vision_tower(model) if is_multimodal(model) else None
    if tower is not None:
        freeze(tower)
    return model


def build(ctx: BuildContext) -> Any:
    from harness.api import fitted_lm

    return fitted_lm(ctx, "full_ft", adapt)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="full_ft",
        description="Full fine-tuning of all weights (small models; on a VLM all but the vision "
                    "tower's): the adapters' upper bound.",
        build=build,
        options=FullFtOptions,
        model_capabilities=vision_when_multimodal,
        training=Training(description="Stanford Alpaca recipe: AdamW lr 2e-5, batch 128, "
                                      "3 epochs, cosine"),
    )]
