"""`dexperts`: DExperts (Liu et al., 2021) as PackLLM's baseline, on exactly three models
ordered [expert, anti-expert, base]: logits = base + alpha * (expert - anti-expert).

`alpha` fixes the coefficient (1 in PackLLM's code); `alpha_opt=true` is PackLLM's
`dexperts-opt`, alpha on a 201-point grid in [0, 1] minimising the fused prompt NLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api import BuildContext, MethodSpec, ModelSlots, hookimpl, option
from harness.fusion import PackOptions


@dataclass(frozen=True)
class DExpertsOptions(PackOptions):
    alpha: float = option(1.0, "the fixed coefficient, and alpha_opt's fallback on an empty prompt")
    alpha_opt: bool = option(False, "choose alpha per example by the fused prompt perplexity")
    grid_steps: int = option(200, "alpha_opt's grid: alpha in {0, 1/steps, ..., 1}")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid_steps < 1:
            raise ValueError(f"grid_steps must be >= 1, got {self.grid_steps}")


def build(ctx: BuildContext) -> Any:
    from harness.fusion import ExpertContrast, build_pack_lm

    options: DExpertsOptions = ctx.options
    rule = ExpertContrast(alpha=None if options.alpha_opt else options.alpha,
                          steps=options.grid_steps, fallback_alpha=options.alpha)
    return build_pack_lm(ctx, rule)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="dexperts",
        description="DExperts: base + alpha * (expert - anti-expert) logits; alpha fixed or fitted on the prompt.",
        build=build,
        models=ModelSlots("pack", 3, 3),
        options=DExpertsOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-llama-b", "harness-zoo/tiny-gpt2"),
        version="2",  # MinED: a reference id holding EOS and other roles maps to EOS
    )]
