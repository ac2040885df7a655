"""`aligner`: one global learnable prefix shared by all layers, per-layer per-head gates.

Zhou, Wu, Zhu, Terzopoulos, "Aligner: One Global Token is Worth Millions of Parameters
When Aligning LLMs" (arXiv 2312.05503), as in the official code: a LLaMA-Adapter-style
side channel (separate softmax over the prefix, no positions) on layers 2 and up, with
one prefix matrix P for every layer and a zero-initialised gate per layer and head.
Trainable: N*d + (L-2)*H parameters (5,056 for LLaMA-2-7B with N=1).
`-o checkpoint=FILE.pth` evaluates a released adapter (the authors' `aligner_weights/`,
Lit-LLaMA key layout) on its base model instead of fitting one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.api import BuildContext, MethodSpec, Training, hookimpl

from .config import AlignerOptions


def adapt(model: Any, options: AlignerOptions) -> Any:
    """Freeze `model` and attach Aligner to it in place."""
    from .model import inject_aligner

    inject_aligner(model, options.num_tokens, options.start_layer)
    return model


def build(ctx: BuildContext) -> Any:
    from harness.api import fitted_lm

    options: AlignerOptions = ctx.options
    if options.checkpoint:
        return published_lm(ctx, Path(options.checkpoint).expanduser())
    return fitted_lm(ctx, "aligner", adapt)


def published_lm(ctx: BuildContext, checkpoint: Path) -> Any:
    """The base model with a released (official-format) Aligner loaded instead of fitted."""
    import hashlib

    from harness.api import count_parameters, hf_lm, load_causal_lm

    from .checkpoint import load_official

    model, tokenizer = load_causal_lm(ctx.models[0])
    load_official(model, checkpoint, ctx.options.num_tokens, ctx.options.start_layer)
    trainable, total = count_parameters(model)
    ctx.report.trainable_params, ctx.report.total_params = trainable, total
    ctx.report.facts.update(checkpoint=str(checkpoint),
                            checkpoint_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    return hf_lm(model.eval(), tokenizer, ctx)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="aligner",
        description="Aligner: one global prefix of N tokens shared by all layers, gated per "
                    "layer and head (N*d + (L-2)*H trainable parameters).",
        build=build,
        options=AlignerOptions,
        training=Training(description="AdamW lr 9e-3, wd 0.02, batch 64, 2 warm-up epochs "
                                      "of 8, loss on prompt and response (official SFT)"),
    )]
