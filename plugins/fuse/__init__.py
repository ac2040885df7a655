"""`fuse`: zero-shot image captioning across tokenizers (Williams & Kolter, COLM 2024).

A causal LM writes the caption, a CLIP model with its own tokenizer judges it, and FUSE
carries CLIP's gradient back to the LM's tokens: the caption grows left to right (AutoDAN),
each step's candidates ranked by -FUSE gradient + LM logits, their exact objective
`1 * NLL_LM + 22 * (1 - cos(CLIP text, CLIP image))` deciding a beam of 4 (the released
code's defaults: 16 steps, 256 candidates, prefix "An image of"). `-o guidance=none` (LM
logits only) and `-o guidance=random` are the no-gradient baselines at the same budget;
`-o adjoint=official` replays the released code's backward. Models: the LM, then the CLIP
model (default: the tiny zoo pair; `gpt2-medium,openai/clip-vit-base-patch32` is the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api import BuildContext, Capability, MethodSpec, ModelSlots, TaskSpec, hookimpl, option
from harness.fuse import FuseOptions

LM_AND_CLIP = ModelSlots("pack", 2, 2)


@dataclass(frozen=True)
class FuseCaptionOptions(FuseOptions):
    prefix: str = option("An image of", "text before the caption, given to both models")
    lm_weight: float = option(1.0, "weight of the LM's negative log-likelihood in the objective")
    clip_weight: float = option(22.0, "weight of CLIP's 1 - cosine(text, image) in the objective")


def build(ctx: BuildContext) -> Any:
    from harness.api import freeze, load_causal_lm, load_clip, model_identity
    from harness.fuse import CaptionWeights, ClipText, PrimaryLM, Side

    from .lm import FuseCaptioner

    options: FuseCaptionOptions = ctx.options
    lm, tokenizer = load_causal_lm(ctx.models[0])
    clip, clip_tokenizer, images = load_clip(ctx.models[1])
    for model in (lm, clip):  # gradients flow to the one-hot tokens only
        freeze(model)
    primary = PrimaryLM.with_text_prefix(lm, tokenizer, options.prefix)
    clip_text = ClipText(clip, clip_tokenizer, options.prefix)
    bridge, adapter_report = options.connect(
        Side(model_identity(ctx.models[0]), tokenizer, primary.embeddings),
        Side(model_identity(ctx.models[1]), clip_tokenizer, clip_text.embeddings), ctx)
    ctx.report.trainable_params = 0
    ctx.report.total_params = sum(p.numel() for m in (lm, clip) for p in m.parameters())
    ctx.report.facts["adapter"] = adapter_report
    return FuseCaptioner(primary, clip_text, images, bridge, options.search_config(),
                         CaptionWeights(options.lm_weight, options.clip_weight), ctx.seed)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="fuse",
        description="FUSE zero-shot captioning: LM + CLIP with different tokenizers, AutoDAN "
                    "beam search guided by gradients carried across tokenizers.",
        build=build,
        capabilities=frozenset({Capability.VISION, Capability.GENERATION}),
        models=LM_AND_CLIP,
        options=FuseCaptionOptions,
        default_models=("harness-zoo/tiny-gpt2", "harness-zoo/tiny-clip"),
        version="1",
    )]


@hookimpl
def harness_cell_incompatibility(method: MethodSpec, task: TaskSpec) -> str | None:
    if method.name == "fuse" and Capability.VISION not in task.requires:
        return "captions images only"
    return None
