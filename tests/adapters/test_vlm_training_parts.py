"""What LoRA and full fine-tuning train on a vision-language model (the zoo's random Llava,
tiny-vlm): LoRA's targets are the language model's modules only (a CLIP vision tower has
q_proj and v_proj too), full fine-tuning trains every weight but the vision tower's, and
both declare vision for a VLM so the planner lets them run image tasks. < 2 s."""

from __future__ import annotations

from harness.contract import Capability, ModelRef
from harness.host import load_host
from harness.models.loading import load_vision_lm
from harness.plugins.full_ft import FullFtOptions
from harness.plugins.full_ft import adapt as full_ft
from harness.plugins.lora import LoraOptions
from harness.plugins.lora import adapt as lora
from harness.training.multimodal import language_model_targets

TINY_VLM = ModelRef("harness-zoo/tiny-vlm", dtype="float32")
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_lora_on_a_vlm_adapts_the_language_models_linear_layers_only() -> None:
    model = load_vision_lm(TINY_VLM)
    targets = language_model_targets(model, LINEAR)
    assert len(targets) == 4 * 7 and all(t.startswith("model.language_model.") for t in targets)
    adapted = lora(model, LoraOptions(target_modules=LINEAR))
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".language_model." in name for name in trainable)
    assert not any("lora_" in name for name, _ in adapted.named_parameters()
                   if ".vision_tower." in name)


def test_full_ft_on_a_vlm_trains_all_but_the_vision_tower() -> None:
    model = full_ft(load_vision_lm(TINY_VLM), FullFtOptions())
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters() if ".vision_tower." in name}
    assert frozen
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"multi_modal_projector", "language_model", "weight"}  # lm_head.weight


def test_text_only_models_keep_their_targets_and_capabilities() -> None:
    host = load_host(["harness.plugins.lora", "harness.plugins.full_ft"])
    for name in ("lora", "full_ft"):
        capabilities = host.method(name).model_capabilities
        assert capabilities is not None
        assert capabilities((TINY_VLM,)) == frozenset({Capability.VISION})
        assert capabilities((ModelRef("harness-zoo/tiny-llama"),)) == frozenset()
