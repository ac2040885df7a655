"""`merge`: parameter averaging of a same-architecture pack (the comparison PackLLM's
reviewers asked for): theta = sum_k w_k * theta_k, uniform weights unless given, one
model evaluated through lm-eval's HFLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from harness import hookimpl
from harness.errors import UsageError
from harness.specs import MODEL_PACK, BuildContext, MethodSpec


@dataclass(frozen=True)
class MergeOptions:
    weights: tuple[float, ...] = ()  # one per model; empty: uniform


def merge_weights(options: MergeOptions, count: int) -> list[float]:
    if not options.weights:
        return [1.0 / count] * count
    if len(options.weights) != count:
        raise UsageError(f"merge: {len(options.weights)} weights for {count} models")
    return list(options.weights)


def average_parameters(models: Sequence[Any], weights: Sequence[float]) -> Any:
    """models[0] with every floating-point tensor replaced by the weighted average (in place)."""
    import torch

    states = [m.state_dict() for m in models]
    first = states[0]
    for other, model in zip(states[1:], models[1:]):
        if type(model) is not type(models[0]) or other.keys() != first.keys() or any(
                other[k].shape != first[k].shape for k in first):
            raise UsageError("merge needs models of one architecture and shape; "
                             f"{type(models[0]).__name__} and {type(model).__name__} differ")
    merged = {}
    for name, tensor in first.items():
        if not tensor.is_floating_point():
            continue
        total = sum(w * s[name].to(torch.float32) for w, s in zip(weights, states))
        merged[name] = total.to(tensor.dtype)
    models[0].load_state_dict(merged, strict=False)
    return models[0]


def build(ctx: BuildContext) -> Any:
    from harness.fusion.pack_lm import tokenizer_families
    from harness.lm import hf_lm
    from harness.models import load_causal_lm

    loaded = [load_causal_lm(ref) for ref in ctx.models]
    if len(set(tokenizer_families([t for _, t in loaded]))) > 1:
        raise UsageError("merge needs models sharing one tokenizer; "
                         + ", ".join(r.id for r in ctx.models) + " do not")
    model = average_parameters([m for m, _ in loaded], merge_weights(ctx.options, len(loaded)))
    ctx.report.update(trainable_params=0, total_params=sum(p.numel() for p in model.parameters()),
                      merge_weights=merge_weights(ctx.options, len(loaded)))
    return hf_lm(model, loaded[0][1], ctx)


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(
        name="merge",
        description="Weight averaging of same-architecture models sharing a tokenizer.",
        build=build,
        models=MODEL_PACK,
        options=MergeOptions,
        default_models=("harness-zoo/tiny-llama", "harness-zoo/tiny-llama-b"),
    )]
