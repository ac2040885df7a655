"""FLOPs of each method family against 2 x parameters x tokens, with the parameters counted
by hand from the model's configuration: a single model (GPT-2's learned position table is
a lookup, not a weight), a pack, the peft adapters (the adaption prompt reaches the model
past its hooks), Aligner and AdaLink, CALM (its augmenting model's forward in the fit),
full fine-tuning; and a cell whose models the meter never saw fails instead of reading 0."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from harness.contract import MethodReport, ModelRef
from harness.errors import HarnessError
from harness.lm import count_parameters
from harness.models import cost
from harness.models.loading import load_causal_lm
from harness.results.records import PhaseCost

TINY_LLAMA, TINY_LLAMA_B, TINY_GPT2 = (ModelRef(f"harness-zoo/{name}", dtype="float32")
                                       for name in ("tiny-llama", "tiny-llama-b", "tiny-gpt2"))
IDS = torch.arange(4, 14).reshape(2, 5)  # 10 positions
POSITIONS = IDS.numel()


def llama_weights(config: Any) -> int:
    """Per layer: q and o (d x d), k and v (d x kv width), gate, up and down (d x inner),
    two RMSNorm scales; then the final norm and the output head (V x d, tied or not)."""
    d, inner = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    layer = 2 * d * d + 2 * d * kv + 3 * d * inner + 2 * d
    return config.num_hidden_layers * layer + d + config.vocab_size * d


def gpt2_weights(config: Any) -> int:
    """Per layer: qkv (d x 3d + 3d), projection (d x d + d), MLP (d x 4d + 4d, 4d x d + d),
    two LayerNorms (2 x 2d); then the final LayerNorm and the head tied to the token table.
    The learned position table (n_positions x d) is a lookup."""
    d, inner = config.n_embd, config.n_inner or 4 * config.n_embd
    layer = 3 * d * d + 3 * d + d * d + d + 2 * d * inner + inner + d + 4 * d
    return config.n_layer * layer + 2 * d + config.vocab_size * d


def by_hand(model: Any) -> int:
    return {"llama": llama_weights, "gpt2": gpt2_weights}[model.config.model_type](model.config)


def fresh(ref: ModelRef) -> Any:
    return load_causal_lm(ref)[0]


def inference(call: Callable[[], Any]) -> PhaseCost:
    meter = cost.CostMeter()
    with cost.metering(meter), cost.phase("inference"), torch.no_grad():
        call()
    return meter.phase_cost("inference")


@pytest.mark.parametrize("ref", [TINY_LLAMA, TINY_GPT2])
def test_a_single_model_counts_its_matrix_weights(ref):
    model = fresh(ref)
    if ref is TINY_GPT2:  # the position table would double it (was 2.05x)
        assert model.config.n_positions * model.config.n_embd > by_hand(model)
    [counted] = inference(lambda: model(IDS)).models
    assert counted.parameters == by_hand(model)
    assert counted.flops == 2 * by_hand(model) * POSITIONS


def test_a_pack_counts_each_member_and_its_fusion():
    from harness.fusion._options import PackOptions
    from harness.fusion._pack_lm import Member, Pack, PackLM
    from harness.fusion._weights import PerplexitySoftmax

    members = [load_causal_lm(ref) for ref in (TINY_GPT2, TINY_GPT2)]
    pack = Pack([Member(f"m{k}", m, t) for k, (m, t) in enumerate(members)], "cpu")
    lm = PackLM(pack, PerplexitySoftmax(), PackOptions(reference="0"))
    context, continuation = IDS[0].tolist(), IDS[1, :3].tolist()
    spent = inference(lambda: list(lm._score(0, [(context, continuation)], "context")))
    positions = len(context) + len(continuation) - 1
    assert [m.flops for m in spent.models] == [2 * by_hand(members[0][0]) * positions] * 2
    assert spent.flops == sum(m.flops for m in spent.models) + spent.extra_flops["fusion"]


def _peft(method: str, **options: Any) -> Any:
    import importlib

    plugin = importlib.import_module(f"harness.plugins.{method}")
    spec = plugin.harness_methods()[0]
    return plugin.adapt(fresh(TINY_LLAMA), spec.options(**options))


@pytest.mark.parametrize("method", ["lora", "llama_adapter", "aligner", "adalink"])
def test_an_adapted_model_counts_the_base_and_its_adapter(method):
    adapted = _peft(method)
    trainable, _ = count_parameters(adapted)
    [counted] = inference(lambda: adapted(input_ids=IDS)).models
    base = llama_weights(adapted.config)
    assert counted.model == TINY_LLAMA.id
    assert counted.parameters == base + trainable and counted.forward_passes == 1
    assert counted.flops == 2 * (base + trainable) * POSITIONS > 0
    assert (cost.training_flops(adapted, trainable, 7)
            == (4 * (base + trainable) + 2 * trainable) * 7)


def test_prompt_tuning_counts_its_virtual_tokens_as_positions():
    adapted = _peft("prompt_tuning", num_virtual_tokens=3)
    [counted] = inference(lambda: adapted(input_ids=IDS)).models
    base = llama_weights(adapted.config)  # the soft prompt is a table: a lookup
    assert counted.parameters == base
    assert counted.flops == 2 * base * (POSITIONS + 3 * IDS.shape[0])


def test_full_fine_tuning_is_six_times_parameters_per_token():
    model = fresh(TINY_LLAMA)
    assert cost.training_flops(model, by_hand(model), 7) == 6 * by_hand(model) * 7


def test_calm_counts_the_augmenting_forward_at_inference_and_in_the_fit():
    from harness.plugins.calm.config import CalmOptions
    from harness.plugins.calm.model import compose

    anchor, augmenting = fresh(TINY_LLAMA), fresh(TINY_LLAMA_B)
    compose(anchor, augmenting, CalmOptions())
    trainable, _ = count_parameters(anchor)
    spent = inference(lambda: anchor(input_ids=IDS))
    flops = {m.model: m.flops for m in spent.models}
    assert flops == {TINY_LLAMA.id: 2 * (by_hand(anchor) + trainable) * POSITIONS,
                     TINY_LLAMA_B.id: 2 * by_hand(augmenting) * POSITIONS}
    assert cost.training_flops(anchor, trainable, 7) == (
        4 * (by_hand(anchor) + trainable) + 2 * trainable + 2 * by_hand(augmenting)) * 7


def test_a_cell_whose_models_the_meter_never_saw_fails():
    unseen = MethodReport(total_params=1000)
    with pytest.raises(HarnessError, match="no watched model ran"):
        cost.cell_cost(cost.CostMeter(), None, 2, {}, unseen, "cpu")
    # answers from a resumed cell's saved responses, or a method without models: nothing ran
    assert cost.cell_cost(cost.CostMeter(), None, 2, {}, unseen, "cpu",
                          expect_model_calls=False).inference.flops == 0
    assert cost.cell_cost(cost.CostMeter(), None, 2, {}, MethodReport(total_params=0), "cpu"
                          ).documents == 2
