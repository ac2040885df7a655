"""`single`: one base model, evaluated as it is (the reference every method is compared to).

A text model runs through lm-eval's HFLM; a vision-language checkpoint (a config with a
`vision_config`, e.g. Llava or `harness-zoo/tiny-vlm`) through lm-eval's HFMultimodalLM
("hf-multimodal"), which also answers the text-only tasks.
"""

from __future__ import annotations

from typing import Any, Sequence

from harness.api import BuildContext, Capability, MethodSpec, ModelRef, hookimpl, is_vision_language


def build(ctx: BuildContext) -> Any:
    from harness.api import hf_lm, hf_multimodal_lm, load_causal_lm, load_vision_lm

    ref = ctx.models[0]
    if is_vision_language(ref):
        model = load_vision_lm(ref)
        lm = hf_multimodal_lm(model, ctx)
    else:
        model, tokenizer = load_causal_lm(ref)
        lm = hf_lm(model, tokenizer, ctx)
    total = sum(p.numel() for p in model.parameters())
    ctx.report.trainable_params, ctx.report.total_params = 0, total
    return lm


def vision_when_multimodal(models: Sequence[ModelRef]) -> frozenset[Capability]:
    return frozenset({Capability.VISION}) if is_vision_language(models[0]) else frozenset()


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="single",
        description="One frozen base model through lm-eval's HFLM (HFMultimodalLM for a "
                    "vision-language model): the reference baseline.",
        build=build,
        model_capabilities=vision_when_multimodal,
    )]
