"""`llama_adapter`: LLaMA-Adapter v1 (Zhang et al., arXiv 2303.16199) through peft's
adaption prompt: learnable prompts of 10 tokens per adapted layer, zero-initialised gates.

Defaults follow the paper (prompts on the top 30 of LLaMA-7B's 32 layers, i.e. every
layer but the first two) and the Lit-LLaMA adapter recipe that Aligner's code derives
from: AdamW lr 9e-3, weight decay 0.02, effective batch 64, 5 epochs, 2 warm-up epochs,
then a constant rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import (BuildContext, MethodSpec, Training, TrainingOptions, UsageError, hookimpl,
                         option, peft_model)


@dataclass(frozen=True)
class LlamaAdapterOptions(TrainingOptions):
    adapter_len: int = option(10, "adaption-prompt tokens per adapted layer")
    adapter_layers: int | None = option(None, "top layers adapted; None: all but the first two")
    lr: float = 9e-3
    weight_decay: float = 0.02
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "constant_with_warmup"
    warmup_ratio: float = 0.4
    batch_size: int = 64
    micro_batch_size: int = 8
    epochs: float = 5.0


def adapt(model: Any, options: LlamaAdapterOptions) -> Any:
    """peft's adaption-prompt model around `model` (base frozen by peft)."""
    from peft import AdaptionPromptConfig

    depth = model.config.get_text_config().num_hidden_layers
    layers = options.adapter_layers if options.adapter_layers is not None else max(1, depth - 2)
    if not 1 <= layers <= depth:
        raise UsageError(f"llama_adapter: adapter_layers={layers} but the model has {depth} layers")
    config = AdaptionPromptConfig(adapter_len=options.adapter_len, adapter_layers=layers,
                                  task_type="CAUSAL_LM")
    try:
        return peft_model(model, config)
    except ValueError as exc:  # peft names the unsupported architecture
        raise UsageError(f"llama_adapter: {exc}") from None


def build(ctx: BuildContext) -> Any:
    from harness.api import fitted_lm

    return fitted_lm(ctx, "llama_adapter", adapt)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="llama_adapter",
        description="LLaMA-Adapter v1 through peft's adaption prompt: 10 gated prompt tokens "
                    "per layer on all but the first two layers.",
        build=build,
        options=LlamaAdapterOptions,
        training=Training(description="AdamW lr 9e-3, wd 0.02, batch 64, 5 epochs (Lit-LLaMA adapter)"),
    )]
