"""`packllm`: PackLLM (Mavromatis et al., COLM 2024), test-time fusion of a pack of LLMs.

Each member's logits are weighted by how well it knows the prompt: `fusion=sim` takes
lambda = softmax(-logPPL / tau) (tau = 1 in the official code), `fusion=opt` minimises the
fused prompt perplexity greedily on a 21-point grid, members added best-perplexity first.
Logits (not probabilities) are fused; packs with different tokenizers are aligned by MinED.
`-o protocol=official` reproduces the released pipeline's evaluation (reference tokenizer
chosen on the question alone, weights fitted on context + option, options ranked by
per-token mean log-likelihood); the default `harness` protocol follows the paper's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import MODEL_PACK, BuildContext, MethodSpec, hookimpl, option
from harness.fusion import PackOptions


@dataclass(frozen=True)
class PackLlmOptions(PackOptions):
    fusion: Literal["sim", "opt"] = option("sim", "sim: softmax(-logPPL / tau); opt: greedy grid "
                                                  "search minimising the fused prompt NLL")
    tau: float = option(1.0, "sim's temperature (the released code uses 1)")
    grid_steps: int = option(20, "opt's grid: lambda in {0, 1/steps, ..., 1}")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau <= 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        if self.grid_steps < 1:
            raise ValueError(f"grid_steps must be >= 1, got {self.grid_steps}")


def build(ctx: BuildContext) -> Any:
    from harness.fusion import GreedyGrid, PerplexitySoftmax, build_pack_lm

    options: PackLlmOptions = ctx.options
    rule = PerplexitySoftmax(options.tau) if options.fusion == "sim" else GreedyGrid(options.grid_steps)
    return build_pack_lm(ctx, rule)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="packllm",
        description="PackLLM: logit fusion weighted by prompt perplexity (sim or greedy opt), MinED alignment.",
        build=build,
        models=MODEL_PACK,
        options=PackLlmOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2"),
        version="2",  # MinED: a reference id holding EOS and other roles maps to EOS
    )]
