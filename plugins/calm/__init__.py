"""`calm`: compose a frozen anchor and a frozen augmenting model through cross-attention.

Bansal et al., "LLM Augmented LLMs: Expanding Capabilities through Composition" (CALM,
arXiv 2401.02412); released code google-deepmind/calm. `--models ANCHOR,AUGMENTING`: the
first model is the anchor m_B (it produces the tokens), the second the augmenting m_A.
Per connection a linear map from an augmenting layer's output to the anchor's width and
multi-head cross-attention (queries from the anchor layer's output) added as a residual to
that output. Both base models stay frozen; only the connections train, on the task's
training split (the composition set), through the shared fit path.
Trainable per connection: D_A*D_B + D_B (projection) + 4*D_B^2 + 4*D_B (attention), plus
D_B for the post-attention norm of `layout=deepmind`; the paper counts n(D_A*D_B + 3*D_B^2).
"""

from __future__ import annotations

from typing import Any

from harness.api import ANCHOR_AUGMENTING, BuildContext, MethodSpec, Training, hookimpl

from .config import CalmOptions

KV_MODELS = ("harness-zoo/kv-anchor", "harness-zoo/kv-augmenting")


def same_tokenizer(anchor: Any, augmenting: Any) -> bool:
    return (type(anchor.backend_tokenizer.model) is type(augmenting.backend_tokenizer.model)
            and anchor.get_vocab() == augmenting.get_vocab()
            if hasattr(anchor, "backend_tokenizer") and hasattr(augmenting, "backend_tokenizer")
            else anchor.get_vocab() == augmenting.get_vocab())


def build(ctx: BuildContext) -> Any:
    from harness.api import EarlyStopping, UsageError, count_parameters, fit, hf_lm, load_causal_lm

    from .model import compose

    anchor_ref, augmenting_ref = ctx.models
    anchor, tokenizer = load_causal_lm(anchor_ref)
    augmenting, augmenting_tokenizer = load_causal_lm(augmenting_ref)
    if not same_tokenizer(tokenizer, augmenting_tokenizer):
        raise UsageError(f"calm: the anchor {anchor_ref.id} ({type(tokenizer).__name__}, "
                         f"{len(tokenizer)} tokens) and the augmenting model {augmenting_ref.id} "
                         f"({type(augmenting_tokenizer).__name__}, {len(augmenting_tokenizer)} "
                         "tokens) use different tokenizers; CALM feeds the same token ids to both")
    options: CalmOptions = ctx.options
    calm = compose(anchor, augmenting, options)
    fit(ctx, anchor, tokenizer, "calm",
        early_stopping=(EarlyStopping(options.validate_every, options.patience)
                        if options.validate_every else None))
    trainable, _ = count_parameters(anchor)
    anchor_size = sum(p.numel() for name, p in anchor.named_parameters()
                      if not name.startswith("calm."))
    augmenting_size = sum(p.numel() for p in augmenting.parameters())
    ctx.report.total_params = anchor_size + augmenting_size + trainable
    ctx.report.facts.update(
        layout=options.layout,
        connections=[{"anchor_layer": a, "augmenting_layer": m} for a, m in calm.pairs],
        anchor_params=anchor_size, augmenting_params=augmenting_size,
        trainable_share_of_anchor=trainable / anchor_size)
    return hf_lm(anchor, tokenizer, ctx)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="calm",
        description="CALM: a frozen anchor reads a frozen augmenting model's layers through "
                    "learned projections and cross-attention (--models ANCHOR,AUGMENTING).",
        build=build,
        models=ANCHOR_AUGMENTING,
        options=CalmOptions,
        default_models=KV_MODELS,
        training=Training(description="AdamW lr 1e-3, batch 32, 3 epochs on the task's "
                                      "training split (the paper gives no settings)"),
        version="1",
    )]
