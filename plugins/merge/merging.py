"""A merge run by mergekit: the method's options as a mergekit configuration, the merged
model written to one folder that transformers loads like any checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

from harness.api import ModelLoadError, ModelRef, UsageError, load_tokenizer

from . import MergeOptions

# Config fields that fix every parameter's shape: members must agree on them.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "n_embd", "n_layer", "n_head")


def mergekit_reference(ref: ModelRef) -> str:
    """How mergekit names a model: a local folder, or a hub id with its revision."""
    location = ref.location()
    return location if Path(location).is_dir() else f"{location}@{ref.revision}"


def mergekit_config(names: Sequence[str], options: MergeOptions, out_dtype: str) -> dict[str, Any]:
    """The mergekit configuration (its YAML, as a dict) merging the models `names`."""
    method = options.merge_method
    common = {"merge_method": method, "dtype": "float32", "out_dtype": out_dtype}
    if method == "linear":
        weights = _weights(options, len(names), "one per model")
        return {**common, "models": [{"model": name, "parameters": {"weight": weight}}
                                     for name, weight in zip(names, weights)]}
    base_index = options.base
    if base_index is None or not 0 <= base_index < len(names):
        raise UsageError(f"merge: base={base_index} is not a model index (0..{len(names) - 1})")
    base = names[base_index]
    others = [name for index, name in enumerate(names) if index != base_index]
    if method == "slerp":
        if len(others) != 1:
            raise UsageError(f"merge_method=slerp merges exactly 2 models, got {len(names)}")
        return {**common, "base_model": base, "parameters": {"t": options.t},
                "models": [{"model": base}, {"model": others[0]}]}
    weights = _weights(options, len(others), "one per model other than the base")
    density = options.resolved_density
    return {**common, "base_model": base, "parameters": {"lambda": options.scale},
            "models": [{"model": name, "parameters": {"weight": weight}
                        | ({"density": density} if density is not None else {})}
                       for name, weight in zip(others, weights)]}


def _weights(options: MergeOptions, count: int, expected: str) -> tuple[float, ...]:
    if not options.weights:
        return (1.0,) * count
    if len(options.weights) != count:
        raise UsageError(f"merge_method={options.merge_method}: {len(options.weights)} weights "
                         f"given, expected {count} ({expected})")
    return options.weights


def check_mergeable(models: Sequence[ModelRef]) -> None:
    """One architecture, one shape and one tokenizer across the pack (one-line refusals)."""
    from transformers import AutoConfig

    from harness.fusion import tokenizer_families

    if len(set(tokenizer_families([load_tokenizer(ref) for ref in models]))) > 1:
        raise UsageError("merge needs models sharing one tokenizer; "
                         + ", ".join(ref.id for ref in models) + " do not")
    configs = [AutoConfig.from_pretrained(ref.location(), revision=ref.revision) for ref in models]
    shapes = [(config.architectures, {f: getattr(config, f, None) for f in SHAPE_FIELDS})
              for config in configs]
    for ref, shape in zip(models[1:], shapes[1:]):
        if shape != shapes[0]:
            raise UsageError(f"merge needs models of one architecture and shape; {models[0].id} "
                             f"and {ref.id} differ")


def merge_to_directory(models: Sequence[ModelRef], options: MergeOptions, out: Path,
                       seed: int) -> Path:
    """Merge `models` into the folder `out` (replaced) and return it. `seed` fixes DARE's
    random drops."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions as RunOptions

    check_mergeable(models)
    first = models[0]
    config = mergekit_config([mergekit_reference(ref) for ref in models], options,
                             first.resolved_dtype)
    shutil.rmtree(out, ignore_errors=True)
    device = "cuda" if first.device.startswith("cuda") else "cpu"
    try:
        run_merge(MergeConfiguration.model_validate(config), str(out),
                  RunOptions(random_seed=seed, device=device, copy_tokenizer=True,
                             write_model_card=False, quiet=True))
    except (RuntimeError, ValueError, OSError) as exc:  # mergekit's errors for bad inputs
        raise ModelLoadError(f"mergekit could not merge {', '.join(r.id for r in models)}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from exc
    return out
