"""`fuse_prompt`: a discrete instruction discovered for a pack of models with different
tokenizers, through FUSE (Williams & Kolter, COLM 2024, applied to prompt discovery).

On the task's training split (or `-o training_data=alpaca.json`) a search over the first
model's tokens (AutoDAN by default: left to right, candidates by -gradient + logits, exact
objective over a beam) minimises the summed answer loss of every model of the pack, each
reading the prompt in its own tokens; gradients from the other models reach the first
model's tokens through FUSE. The discovered prompt is cached like a fit, stored in the
cell's record, and put before every request to the evaluated member (`-o eval_member`).
`-o guidance=none` / `random` is the same search without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api import MODEL_PACK, BuildContext, MethodSpec, Training, UsageError, hookimpl, option
from harness.fuse import FuseOptions


@dataclass(frozen=True)
class FusePromptOptions(FuseOptions):
    candidates: int = option(64, "candidates per beam (AutoDAN) or per position (GCG) whose exact "
                                 "objective is evaluated")
    train_examples: int = option(8, "training examples (a seeded sample) the objective sums over")
    training_data: str = option("", "an Alpaca-format JSON file; empty: the task's training split")
    eval_member: int = option(0, "which model of the pack is evaluated with the discovered prompt")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_examples < 1:
            raise ValueError("train_examples must be at least 1")
        if self.eval_member < 0:
            raise ValueError("eval_member must be >= 0")


def build(ctx: BuildContext) -> Any:
    from harness.api import freeze, hf_lm, load_causal_lm, model_identity
    from harness.fuse import SEPARATOR, Member, Side, discover

    from .lm import PrefixedLM

    options: FusePromptOptions = ctx.options
    if options.eval_member >= len(ctx.models):
        raise UsageError(f"eval_member={options.eval_member} but the pack has {len(ctx.models)} models")
    loaded = [load_causal_lm(ref) for ref in ctx.models]
    sides = [Side(model_identity(ref), tokenizer, model.get_input_embeddings().weight)
             for ref, (model, tokenizer) in zip(ctx.models, loaded)]
    members, adapters = [], []
    for side, (model, tokenizer) in zip(sides, loaded):
        freeze(model)
        bridge, report = options.connect(sides[0], side, ctx)
        members.append(Member(model, tokenizer, bridge))
        adapters.append(report)
    prompt = discover(ctx, members, "fuse_prompt")
    evaluated, tokenizer = loaded[options.eval_member]
    ctx.report.trainable_params = 0
    ctx.report.total_params = sum(p.numel() for p in evaluated.parameters())
    ctx.report.facts["adapters"] = adapters[1:]
    return PrefixedLM(hf_lm(evaluated, tokenizer, ctx), prompt + SEPARATOR)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="fuse_prompt",
        description="FUSE prompt discovery: a discrete instruction that minimises the summed "
                    "answer loss of a pack with different tokenizers, then prepended at evaluation.",
        build=build,
        models=MODEL_PACK,
        options=FusePromptOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2"),
        training=Training(description="discrete search on the training split: AutoDAN, 16 steps, "
                                      "64 candidates, beam 4, 8 examples"),
        version="1",
    )]
