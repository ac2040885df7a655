"""`single`: one base model, evaluated as it is (the reference every method is compared to)."""

from __future__ import annotations

from typing import Any

from harness import hookimpl
from harness.specs import BuildContext, MethodSpec


def build(ctx: BuildContext) -> Any:
    from harness.lm import hf_lm
    from harness.models import load_causal_lm

    model, tokenizer = load_causal_lm(ctx.models[0])
    total = sum(p.numel() for p in model.parameters())
    ctx.report.update(trainable_params=0, total_params=total)
    return hf_lm(model, tokenizer, ctx)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="single",
        description="One frozen base model through lm-eval's HFLM: the reference baseline.",
        build=build,
    )]
