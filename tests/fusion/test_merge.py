"""The `merge` baselines through mergekit, each checked tensor by tensor against its formula
on a tiny Llama base and three "fine-tuned" variants (base + a random task vector)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.contract import ModelRef
from harness.errors import UsageError
from harness.options import build_options

TASKS = 3


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> list[ModelRef]:
    """[base, task_1, task_2, task_3] as local checkpoints, float32."""
    from harness.models.loading import load_causal_lm

    root = tmp_path_factory.mktemp("merge-pack")
    model, tokenizer = load_causal_lm(ModelRef("harness-zoo/tiny-llama", dtype="float32"))
    base = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    refs = []
    for index in range(TASKS + 1):
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                delta = torch.randn(tensor.shape, generator=generator) * 0.02
                tensor.copy_(base[name] + (delta if index else 0))
        folder = root / f"model-{index}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        refs.append(ModelRef(str(folder), dtype="float32"))
    return refs


def _states(refs: list[ModelRef]) -> list[dict[str, torch.Tensor]]:
    from harness.models.loading import load_causal_lm

    return [load_causal_lm(ref)[0].state_dict() for ref in refs]


def _merged(refs: list[ModelRef], tmp_path: Path, seed: int = 0, **values: Any
            ) -> dict[str, torch.Tensor]:
    from harness.plugins.merge import MergeOptions
    from harness.plugins.merge.merging import merge_to_directory

    options = build_options(MergeOptions, values, "merge")
    folder = merge_to_directory(refs, options, tmp_path / "merged", seed)
    [state] = _states([ModelRef(str(folder), dtype="float32")])
    return state


def _assert_each_tensor(merged: dict, expected: Any) -> None:
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, expected(name), atol=1e-6, rtol=1e-5, msg=name)


def test_linear_is_the_normalised_weighted_average(pack, tmp_path):
    states = _states(pack[1:])
    merged = _merged(pack[1:], tmp_path, weights=[1.0, 2.0, 0.5])
    _assert_each_tensor(merged, lambda n: (states[0][n] + 2 * states[1][n] + 0.5 * states[2][n]) / 3.5)


def test_task_arithmetic_adds_the_scaled_sum_of_task_vectors(pack, tmp_path):
    base, *tasks = _states(pack)
    merged = _merged(pack, tmp_path, merge_method="task_arithmetic", base=0,
                     weights=[0.7, 1.3, 1.0], scale=0.4)
    _assert_each_tensor(merged, lambda n: base[n] + 0.4 * sum(
        w * (task[n] - base[n]) for w, task in zip((0.7, 1.3, 1.0), tasks)))


def _trimmed(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the k = max(1, int(density * n)) largest magnitudes of the tensor."""
    keep = max(1, int(density * delta.numel()))
    threshold = delta.abs().flatten().sort(descending=True).values[keep - 1]
    return delta * (delta.abs() >= threshold)


def _elected_merge(deltas: list[torch.Tensor], mean: bool) -> torch.Tensor:
    """TIES: elect each parameter's sign by the summed task vectors (ties -> +), keep the
    values that agree, then average them (disjoint mean) or sum them."""
    stacked = torch.stack(deltas)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = stacked.sign() == elected
    total = (stacked * agree).sum(0)
    return total / agree.sum(0).clamp(min=1) if mean else total


def test_ties_trims_elects_signs_and_averages_the_agreeing_values(pack, tmp_path):
    base, *tasks = _states(pack)
    merged = _merged(pack, tmp_path, merge_method="ties", base=0, density=0.3, scale=1.5)
    _assert_each_tensor(merged, lambda n: base[n] + 1.5 * _elected_merge(
        [_trimmed(task[n] - base[n], 0.3) for task in tasks], mean=True))


def test_ties_default_density_is_the_papers_top_20_percent(pack, tmp_path):
    base, *tasks = _states(pack)
    merged = _merged(pack, tmp_path, merge_method="ties", base=0)
    _assert_each_tensor(merged, lambda n: base[n] + _elected_merge(
        [_trimmed(task[n] - base[n], 0.2) for task in tasks], mean=True))


def test_dare_ties_without_drops_sums_the_sign_agreeing_values(pack, tmp_path):
    base, *tasks = _states(pack)
    merged = _merged(pack, tmp_path, merge_method="dare_ties", base=0, density=1.0)
    _assert_each_tensor(merged, lambda n: base[n] + _elected_merge(
        [task[n] - base[n] for task in tasks], mean=False))


def test_dare_drops_at_random_and_rescales_what_it_keeps(pack, tmp_path):
    """One task vector, density p: each entry is kept with probability p, and the kept ones
    are scaled by one factor per tensor, ||delta||_1 / ||kept||_1 (mergekit's rescale; the
    DARE paper's 1/p is its expectation)."""
    base, task = _states(pack[:2])
    merged = _merged(pack[:2], tmp_path, merge_method="dare_linear", base=0, density=0.3)
    kept_total = count = 0
    for name, tensor in merged.items():
        delta, merged_delta = task[name] - base[name], tensor - base[name]
        kept = merged_delta != 0
        factor = delta.abs().sum() / delta[kept].abs().sum()
        torch.testing.assert_close(merged_delta, delta * kept * factor, atol=1e-6, rtol=1e-5)
        kept_total, count = kept_total + int(kept.sum()), count + kept.numel()
    sigma = math.sqrt(0.3 * 0.7 / count)
    assert abs(kept_total / count - 0.3) < 5 * sigma
    again = _merged(pack[:2], tmp_path, merge_method="dare_linear", base=0, density=0.3)
    other = _merged(pack[:2], tmp_path, seed=1, merge_method="dare_linear", base=0, density=0.3)
    assert all(torch.equal(again[n], merged[n]) for n in merged)  # the cell seed fixes the drops
    assert not all(torch.equal(other[n], merged[n]) for n in merged)


def _slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of two tensors seen as vectors (linear when near-parallel)."""
    a, b = v0.flatten().double(), v1.flatten().double()
    dot = float(torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1))
    if abs(dot) > 0.9995:
        return ((1 - t) * v0.double() + t * v1.double()).float()
    theta = math.acos(dot)
    mixed = (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)
    return mixed.reshape(v0.shape).float()


def test_slerp_interpolates_each_tensor_on_the_sphere(pack, tmp_path):
    base, task = _states([pack[0], pack[2]])
    merged = _merged([pack[2], pack[0]], tmp_path, merge_method="slerp", base=1, t=0.3)
    _assert_each_tensor(merged, lambda n: _slerp(0.3, base[n], task[n]))


@pytest.mark.parametrize("values, match", [
    ({"merge_method": "ties"}, "needs -o base=K"),
    ({"base": 0}, "linear takes no base"),
    ({"merge_method": "slerp", "base": 0, "weights": [1.0]}, "slerp takes no weights"),
    ({"merge_method": "ties", "base": 0, "density": 0}, "density must lie in"),
    ({"merge_method": "task_arithmetic", "base": 0, "density": 0.5}, "density applies to ties and dare"),
])
def test_bad_options_are_refused_in_one_line(values, match):
    from harness.plugins.merge import MergeOptions

    with pytest.raises(UsageError, match=match):
        build_options(MergeOptions, values, "merge")


def test_counts_that_do_not_fit_the_pack_are_refused(pack):
    from harness.plugins.merge import MergeOptions
    from harness.plugins.merge.merging import mergekit_config

    names = ["a", "b", "c"]
    with pytest.raises(UsageError, match="3 weights given, expected 2"):
        mergekit_config(names, MergeOptions("ties", base=1, weights=(1.0, 1.0, 1.0)), "float32")
    with pytest.raises(UsageError, match="base=3 is not a model index"):
        mergekit_config(names, MergeOptions("task_arithmetic", base=3), "float32")
    with pytest.raises(UsageError, match="exactly 2 models"):
        mergekit_config(names, MergeOptions("slerp", base=0), "float32")


def test_models_of_different_shapes_or_tokenizers_are_refused(pack):
    from harness.plugins.merge.merging import check_mergeable

    with pytest.raises(UsageError, match="sharing one tokenizer"):
        check_mergeable([pack[0], ModelRef("harness-zoo/tiny-gpt2")])
