"""`ensemble`: the uniform logit ensemble of a pack (PackLLM's `ensemble` baseline)."""

from __future__ import annotations

from typing import Any

from harness.api import MODEL_PACK, BuildContext, MethodSpec, hookimpl
from harness.fusion import PackOptions


def build(ctx: BuildContext) -> Any:
    from harness.fusion import Weighting, build_pack_lm

    return build_pack_lm(ctx, Weighting())


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="ensemble",
        description="Uniform mean of the pack's next-token logits (MinED-aligned).",
        build=build,
        models=MODEL_PACK,
        options=PackOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2"),
        version="2",  # MinED: a reference id holding EOS and other roles maps to EOS
    )]
