"""`top1_ppl`: per example, the pack member with the lowest prompt perplexity answers alone."""

from __future__ import annotations

from typing import Any

from harness.api import MODEL_PACK, BuildContext, MethodSpec, hookimpl
from harness.fusion import PackOptions


def build(ctx: BuildContext) -> Any:
    from harness.fusion import TopOne, build_pack_lm

    return build_pack_lm(ctx, TopOne())


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="top1_ppl",
        description="Top1-PPL: the member with the lowest prompt perplexity, chosen per example.",
        build=build,
        models=MODEL_PACK,
        options=PackOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2"),
        version="2",  # MinED: a reference id holding EOS and other roles maps to EOS
    )]
