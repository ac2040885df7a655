"""`prompt_tuning`: prompt tuning (Lester et al., arXiv 2104.08691) through peft.

Defaults are the paper's: 100 soft-prompt vectors initialised from sampled vocabulary
embeddings, Adafactor with a fixed learning rate 0.3, weight decay 1e-5, beta2 decay 0.8,
no parameter scaling, batch 32, loss on the target only. The paper trains 30,000 steps
(`max_steps=30000`); the default budget here is 3 epochs like the other baselines.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import (BuildContext, MethodSpec, Training, TrainingOptions, hookimpl, option,
                         peft_model)


@dataclass(frozen=True)
class PromptTuningOptions(TrainingOptions):
    num_virtual_tokens: int = option(100, "soft-prompt vectors prepended to the input")
    init: Literal["sample_vocab", "random"] = option(
        "sample_vocab", "initialise from embeddings of sampled vocabulary tokens, or randomly")
    optimizer: Literal["adamw", "adafactor"] = "adafactor"
    lr: float = 0.3
    weight_decay: float = 1e-5
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "constant"
    batch_size: int = 32
    micro_batch_size: int = 8
    epochs: float = 3.0


def _drop_virtual_token_logits(num_virtual_tokens: int) -> Any:
    """peft returns logits for the soft prompt too; lm-eval indexes logits by input position."""
    def hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        inputs = kwargs.get("input_ids", args[0] if args else None)
        if inputs is not None and output.logits.shape[1] == inputs.shape[1] + num_virtual_tokens:
            output.logits = output.logits[:, num_virtual_tokens:]
        return output
    return hook


def _generate_without_cache(generate: Any) -> Any:
    """peft's prompt-tuning model ignores `position_ids`, so with a key-value cache every
    generated token after the first is decoded at the wrong position (greedy output drifts
    from full forwards; peft issue 1391). Decoding without the cache recomputes the soft
    prompt and the text each step: slower, and exactly the greedy argmax of the model.
    Without a cache every step runs the whole sequence, whose positions are implicit, so
    peft's warning that it ignores the `position_ids` generate passes says nothing here."""
    def without_cache(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Position ids are not supported", UserWarning)
            return generate(*args, **{**kwargs, "use_cache": False})
    return without_cache


def adapt(model: Any, options: PromptTuningOptions) -> Any:
    """peft's prompt-tuning model around `model`, returning logits for the input positions
    only and generating without a key-value cache."""
    from peft import PromptTuningConfig, PromptTuningInit

    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=options.num_virtual_tokens,
        prompt_tuning_init=(PromptTuningInit.SAMPLE_VOCAB if options.init == "sample_vocab"
                            else PromptTuningInit.RANDOM))
    tuned = peft_model(model, config)
    tuned.register_forward_hook(_drop_virtual_token_logits(options.num_virtual_tokens),
                                with_kwargs=True)
    tuned.generate = _generate_without_cache(tuned.generate)
    return tuned


def build(ctx: BuildContext) -> Any:
    from harness.api import fitted_lm

    return fitted_lm(ctx, "prompt_tuning", adapt)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="prompt_tuning",
        description="Prompt tuning through peft: 100 trainable soft-prompt vectors before the input.",
        build=build,
        options=PromptTuningOptions,
        training=Training(description="Adafactor lr 0.3, wd 1e-5, batch 32 (Lester et al.)"),
        version="2",  # 2: generation without peft's drifting key-value cache
    )]
