"""Which parts of a vision-language model a training method adapts.

A VLM (transformers' Llava and kin) is a vision tower, a projector into the language
model's embedding space, and the language model. Methods that adapt a language model's
layers adapt those of the VLM's language model only: LoRA's targets are named by their last
component (`q_proj`), which a CLIP vision tower uses as well, so on a VLM they are resolved
to the language model's modules; full fine-tuning leaves the vision tower frozen (the
fine-tuning stage of LLaVA, which trains the projector and the language model).
"""

from __future__ import annotations

from typing import Any, Sequence

from harness.contract import Capability
from harness.models.loading import ModelRef, is_vision_language

# Where common VLMs keep their vision encoder (Llava: `model.vision_tower`).
VISION_TOWER_NAMES = ("vision_tower", "vision_model", "visual")


def vision_when_multimodal(models: Sequence[ModelRef]) -> frozenset[Capability]:
    """A one-model training method's capabilities beyond text: vision when its model is a
    vision-language model (it is fitted and evaluated through the VLM's processor)."""
    return frozenset({Capability.VISION}) if is_vision_language(models[0]) else frozenset()


def is_multimodal(model: Any) -> bool:
    """Whether `model` has a text config of its own inside its config (a VLM)."""
    return model.config.get_text_config() is not model.config


def language_model_targets(model: Any, names: Sequence[str]) -> list[str]:
    """`names` as they are for a text-only model; on a VLM the full names of the modules
    of its language model (`get_decoder()`) whose last component is one of `names`."""
    if not is_multimodal(model):
        return list(names)
    decoder = model.get_decoder()
    inside = {id(module) for module in decoder.modules()}
    return [path for path, module in model.named_modules()
            if id(module) in inside and path.rsplit(".", 1)[-1] in names]


def vision_tower(model: Any) -> Any:
    """The VLM's vision encoder (the outermost module with a usual name), None if none."""
    for path, module in model.named_modules():
        if path and path.rsplit(".", 1)[-1] in VISION_TOWER_NAMES:
            return module
    return None
