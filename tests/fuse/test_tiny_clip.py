"""The zoo's tiny CLIP and the captioning objective built on it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from harness import zoo
from harness.contract import ModelRef
from harness.fuse._caption import ClipText, PrimaryLM
from harness.models.loading import load_causal_lm, load_clip, load_tokenizer
from harness.tasks.coco_captioning import FIXTURES


@pytest.fixture(scope="module")
def clip() -> tuple:
    return load_clip(ModelRef("harness-zoo/tiny-clip"))


def test_tiny_clip_is_a_clip_model_with_its_own_tokenizer_family(clip: tuple) -> None:
    model, tokenizer, images = clip
    assert type(model).__name__ == "CLIPModel" and type(images).__name__.startswith("CLIPImageProcessor")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("An image of a red circle")["input_ids"])
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert "red</w>" in tokens and "an</w>" in tokens  # lower-cased, words end in </w>
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    gpt2 = load_tokenizer(ModelRef("harness-zoo/tiny-gpt2"))
    assert gpt2("a red")["input_ids"] != tokenizer("a red", add_special_tokens=False)["input_ids"]
    assert not zoo.is_vision_language(zoo.recipe_for("harness-zoo/tiny-clip"))


def test_embedding_path_equals_the_models_own_text_features(clip: tuple) -> None:
    """Features computed from substituted input embeddings (the differentiable path) equal
    CLIP's own `get_text_features` on the same ids: the forward FUSE needs is exact."""
    model, tokenizer, _ = clip
    text = ClipText(model, tokenizer, "An image of")
    ids_b = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in ("a red circle", "one square")]
    frame = text.frame(ids_b).ids
    with torch.no_grad():
        own = torch.nn.functional.normalize(model.get_text_features(input_ids=frame).pooler_output, dim=-1)
    width = max(map(len, ids_b))
    x_b = torch.stack([torch.nn.functional.pad(text.embeddings.detach()[ids], (0, 0, 0, width - len(ids)))
                       for ids in ids_b]).requires_grad_(True)
    features = text.features(ids_b, x_b)
    torch.testing.assert_close(features, own, rtol=0, atol=1e-6)
    features.sum().backward()
    assert x_b.grad.abs().sum() > 0


def test_primary_nll_is_the_released_mean_over_the_sequence() -> None:
    model, tokenizer = load_causal_lm(ModelRef("harness-zoo/tiny-gpt2"))
    primary = PrimaryLM.with_text_prefix(model, tokenizer, "An image of")
    ids = torch.tensor([tokenizer(" a red circle", add_special_tokens=False)["input_ids"]])
    full = torch.cat([primary.prefix[None], ids], dim=1)
    with torch.no_grad():
        log_probs = model(input_ids=full).logits.log_softmax(-1)[0, :-1]
    expected = -log_probs.gather(1, full[0, 1:, None]).mean()
    torch.testing.assert_close(primary.nll(ids)[0], expected)
    assert primary.logits(ids).shape == (1, ids.shape[1] + 1, model.config.vocab_size)


def test_image_features_are_normalised(clip: tuple) -> None:
    model, tokenizer, processor = clip
    with Image.open(sorted((FIXTURES / "images").iterdir())[0]) as image:
        features = ClipText(model, tokenizer, "").image_features([image.convert("RGB")], processor)
    assert features.shape == (1, model.config.projection_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(1))
