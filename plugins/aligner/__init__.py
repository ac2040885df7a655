"""`aligner`: one global learnable prefix shared by all layers, per-layer per-head gates.

Zhou, Wu, Zhu, Terzopoulos, "Aligner: One Global Token is Worth Millions of Parameters
When Aligning LLMs" (arXiv 2312.05503), as in the official code: a LLaMA-Adapter-style
side channel (separate softmax over the prefix, no positions) on layers 2 and up, with
one prefix matrix P for every layer and a zero-initialised gate per layer and head.
Trainable: N*d + (L-2)*H parameters (5,056 for LLaMA-2-7B with N=1).
"""

from __future__ import annotations

from typing import Any

from harness import hookimpl
from harness.specs import BuildContext, MethodSpec, Training

from .config import AlignerOptions


def adapt(model: Any, options: AlignerOptions) -> Any:
    """Freeze `model` and attach Aligner to it in place."""
    from .model import inject_aligner

    inject_aligner(model, options.num_tokens, options.start_layer)
    return model


def build(ctx: BuildContext) -> Any:
    from harness.training import fitted_lm

    return fitted_lm(ctx, "aligner", adapt)


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
