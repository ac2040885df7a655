"""`adalink`: a residual bottleneck per input modality between the embeddings and the
transformer, which itself stays untouched.

Wang et al., "Non-Intrusive Adaptation: Input-Centric Parameter-efficient Fine-Tuning for
Versatile Multimodal Modeling" (arXiv 2310.12100). No public code: the equation
`h' = h + W_up act(W_down h)` with separate weights for text tokens and for image tokens
after the projector follows the paper's description; activation, bias and initialisation
are options (default: identity, no bias, W_up = 0 so step 0 equals the base model).
Trainable: 2*d*r per adapted modality (plus biases when enabled). On a vision-language
base model both links are fitted on image+caption pairs and the model answers image tasks
through lm-eval's HFMultimodalLM.
"""

from __future__ import annotations

from typing import Any

from harness.api import (BuildContext, MethodSpec, Training, fitted_lm, hookimpl,
                         vision_when_multimodal)

from .config import AdaLinkOptions


def adapt(model: Any, options: AdaLinkOptions) -> Any:
    """Freeze `model` and attach its AdaLinks in place."""
    from .model import inject_adalink

    inject_adalink(model, options)
    return model


def build(ctx: BuildContext) -> Any:
    return fitted_lm(ctx, "adalink", adapt)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="adalink",
        description="AdaLink: a residual bottleneck (d->r->d) on each modality's input "
                    "embeddings, the transformer untouched (2*d*r per modality).",
        build=build,
        options=AdaLinkOptions,
        model_capabilities=vision_when_multimodal,
        training=Training(description="AdamW lr 1e-3, batch 32, 3 epochs (the paper's "
                                      "optimiser settings are unpublished)"),
    )]
