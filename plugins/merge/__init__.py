"""`merge`: parameter merging of a same-architecture pack, the baselines model-fusion
benchmarks (FusionBench, MergeBench) compare, run by mergekit and evaluated as one model
through lm-eval's HFLM.

- `linear`: sum_k w_k theta_k / sum_k w_k (uniform: parameter averaging; Wortsman et al. 2022);
- `task_arithmetic`: theta_0 + lambda * sum_k w_k (theta_k - theta_0) (Ilharco et al. 2023);
- `ties`: task vectors trimmed to their largest `density` fraction, a sign elected per
  parameter by the weighted sum, the agreeing values averaged (Yadav et al. 2023);
- `dare_linear` / `dare_ties`: task vectors with a random `1 - density` of their entries
  dropped and the rest rescaled, then summed / merged as TIES (Yu et al. 2024);
- `slerp`: spherical interpolation of each tensor from the base (t = 0) to the other model.

theta_0 is the base: `-o base=K`, the K-th model of `--models` (0-based), the pretrained
model the others were fine-tuned from. mergekit was chosen over peft's merge utilities
because its pins fit the harness (see README, "Merging").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import MODEL_PACK, BuildContext, MethodSpec, hookimpl, option

BASED_METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")
# The papers' headline settings: TIES keeps the top 20% of each task vector; DARE drops 90%.
PAPER_DENSITY = {"ties": 0.2, "dare_linear": 0.1, "dare_ties": 0.1}


@dataclass(frozen=True)
class MergeOptions:
    merge_method: Literal["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties",
                          "slerp"] = option("linear", "how parameters are combined (mergekit's "
                                                      "method of that name)")
    base: int | None = option(None, "index (0-based, --models order) of the base model the "
                                    "others were fine-tuned from; required by every method "
                                    "but linear")
    weights: tuple[float, ...] = option((), "linear: one per model, normalised (empty: "
                                            "uniform); task-vector methods: one per non-base "
                                            "model in --models order (empty: 1 each)")
    density: float | None = option(None, "fraction of each task vector kept (ties: largest "
                                          "magnitudes, dare: at random); empty: the paper's "
                                          "(ties 0.2, dare 0.1)")
    scale: float = option(1.0, "lambda, the factor on the merged task vector "
                               "(task_arithmetic, ties, dare; the papers tune it on validation)")
    t: float = option(0.5, "slerp: 0 gives the base, 1 the other model")

    def __post_init__(self) -> None:
        method = self.merge_method
        if method == "linear" and self.base is not None:
            raise ValueError("merge_method=linear takes no base; drop -o base")
        if method in BASED_METHODS and self.base is None:
            raise ValueError(f"merge_method={method} needs -o base=K, the index of the model "
                             "the others were fine-tuned from")
        if self.density is not None and method not in PAPER_DENSITY:
            raise ValueError(f"density applies to ties and dare, not merge_method={method}")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"density must lie in (0, 1], got {self.density}")
        if method == "slerp" and self.weights:
            raise ValueError("slerp takes no weights; set -o t=...")
        if not 0 <= self.t <= 1:
            raise ValueError(f"t must lie in [0, 1], got {self.t}")

    @property
    def resolved_density(self) -> float | None:
        return self.density if self.density is not None else PAPER_DENSITY.get(self.merge_method)


def build(ctx: BuildContext) -> Any:
    from harness.api import ModelRef, count_parameters, hf_lm, load_causal_lm

    from .merging import merge_to_directory

    first = ctx.models[0]
    merged = merge_to_directory(ctx.models, ctx.options, ctx.workdir / "merged", ctx.seed)
    model, tokenizer = load_causal_lm(ModelRef(str(merged), dtype=first.dtype, device=first.device))
    _, total = count_parameters(model)
    ctx.report.trainable_params, ctx.report.total_params = 0, total
    ctx.report.facts["merge_method"] = ctx.options.merge_method
    return hf_lm(model, tokenizer, ctx)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="merge",
        description="Parameter merging of same-architecture models sharing a tokenizer "
                    "(mergekit: linear, task arithmetic, TIES, DARE, SLERP).",
        build=build,
        models=MODEL_PACK,
        options=MergeOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-llama-b"),
        version="2",  # mergekit instead of the in-house average
    )]
