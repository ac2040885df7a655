"""Exact properties of AdaLink (methods.md 4.3): text-only on the tiny Llama, both
modalities on the zoo's tiny Llava VLM."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.plugins.adalink.config import AdaLinkOptions
from harness.plugins.adalink.model import inject_adalink

PROMPT = "the cat sat on the mat and the dog ran to the park"


def _perturb(link: Any, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        link.up.weight.copy_(torch.randn(link.up.weight.shape, generator=generator) * 0.5)


def test_zero_up_projection_gives_the_base_logits_exactly(load_tiny):
    base, tokenizer = load_tiny()
    adapted, _ = load_tiny()
    inject_adalink(adapted, AdaLinkOptions(rank=8, activation="gelu", bias=True))
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(adapted(ids).logits, base(ids).logits)


@pytest.mark.parametrize("bias, expected", [(False, 2 * 64 * 8), (True, 2 * 64 * 8 + 8 + 64)])
def test_trainable_count_is_2dr_per_modality(load_tiny, bias, expected):
    model, _ = load_tiny()
    adalink = inject_adalink(model, AdaLinkOptions(rank=8, bias=bias))
    assert list(adalink.links) == ["text"]  # no image projector on a text-only model
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_token_wise_and_causal(load_tiny):
    model, tokenizer = load_tiny()
    adalink = inject_adalink(model, AdaLinkOptions(rank=8, activation="silu"))
    _perturb(adalink.links["text"], seed=1)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 11) % 600
    embed = model.get_input_embeddings()
    with torch.no_grad():
        first, second = embed(ids), embed(changed)
        unchanged = torch.ones(ids.shape[1], dtype=torch.bool)
        unchanged[5] = False
        assert torch.equal(first[0, unchanged], second[0, unchanged])
        # the link is applied token by token: the same result on one token alone
        torch.testing.assert_close(embed(ids[:, 3:4])[0, 0], first[0, 3], atol=1e-7, rtol=0)
        logits, changed_logits = model(ids).logits, model(changed).logits
    torch.testing.assert_close(logits[:, :5], changed_logits[:, :5], atol=1e-6, rtol=0)


def test_cached_and_uncached_greedy_generation_agree(load_tiny):
    model, tokenizer = load_tiny()
    adalink = inject_adalink(model, AdaLinkOptions(rank=8))
    _perturb(adalink.links["text"], seed=2)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    calls = []
    adalink.links["text"].register_forward_hook(lambda m, a, out: calls.append(out.shape[1]))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True)
        uncached = model.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    # cached: the prompt once, then each new token once (the last one is never fed back)
    assert calls[:10] == [ids.shape[1]] + [1] * 9


def _raw_embeddings(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """The embedding table's rows for `ids`, without passing the hooked module."""
    return model.get_input_embeddings().weight[ids].detach()


def test_caller_supplied_embeddings_are_linked_where_they_enter_the_decoder(load_tiny):
    model, tokenizer = load_tiny()
    adalink = inject_adalink(model, AdaLinkOptions(rank=8, activation="gelu"))
    _perturb(adalink.links["text"], seed=3)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    embeddings = _raw_embeddings(model, ids)
    calls = []
    adalink.links["text"].register_forward_hook(lambda m, a, out: calls.append(out.shape[1]))
    with torch.no_grad():
        from_ids = model(input_ids=ids).logits
        from_embeddings = model(inputs_embeds=embeddings).logits
        decoder_from_embeddings = model.get_decoder()(inputs_embeds=embeddings).last_hidden_state
        decoder_from_ids = model.get_decoder()(input_ids=ids).last_hidden_state
    assert torch.equal(from_embeddings, from_ids)
    assert torch.equal(decoder_from_embeddings, decoder_from_ids)
    assert calls == [ids.shape[1]] * 4  # once per forward, never twice


def test_generation_from_embeddings_equals_generation_from_ids(load_tiny):
    model, tokenizer = load_tiny()
    adalink = inject_adalink(model, AdaLinkOptions(rank=8))
    _perturb(adalink.links["text"], seed=4)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        from_ids = model.generate(ids, max_new_tokens=8, do_sample=False)
        from_embeddings = model.generate(inputs_embeds=_raw_embeddings(model, ids),
                                         max_new_tokens=8, do_sample=False)
    assert torch.equal(from_embeddings, from_ids[:, ids.shape[1]:])


# ----------------------------------------------------------------------------- modalities

PATCHES = 16  # tiny-vlm: 32 px images in 8 px patches, CLS dropped


def _tiny_vlm() -> Any:
    """The zoo's Llava: tiny CLIP tower, Llava projector, tiny Llama (hidden size 64)."""
    from harness.models.loading import ModelRef, load_vision_lm

    return load_vision_lm(ModelRef("harness-zoo/tiny-vlm", dtype="float32"))


def _vlm_inputs(model: Any) -> dict[str, torch.Tensor]:
    image_token = model.config.image_token_id
    ids = torch.tensor([[1, 5, 6] + [image_token] * PATCHES + [7, 8, 9]])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32,
                                                          generator=torch.Generator().manual_seed(0))}


def _language_model_inputs(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The embeddings sequence the language model receives (text and image tokens merged)."""
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["inputs_embeds"].detach()), with_kwargs=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    handle.remove()
    return seen[0], logits


def test_each_modality_has_its_own_link_and_touches_only_its_positions():
    base = _tiny_vlm()
    model = _tiny_vlm()
    adalink = inject_adalink(model, AdaLinkOptions(rank=4))
    assert set(adalink.links) == {"text", "image"}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 2 * 64 * 4
    inputs = _vlm_inputs(model)
    image_positions = inputs["input_ids"][0] == model.config.image_token_id

    reference, base_logits = _language_model_inputs(base, inputs)
    zero_init, logits = _language_model_inputs(model, inputs)
    assert torch.equal(zero_init, reference) and torch.equal(logits, base_logits)

    _perturb(adalink.links["text"], seed=1)
    text_only, _ = _language_model_inputs(model, inputs)
    assert torch.equal(text_only[0, image_positions], reference[0, image_positions])
    assert not torch.allclose(text_only[0, ~image_positions], reference[0, ~image_positions])

    with torch.no_grad():
        adalink.links["text"].up.weight.zero_()
    _perturb(adalink.links["image"], seed=2)
    image_only, _ = _language_model_inputs(model, inputs)
    assert torch.equal(image_only[0, ~image_positions], reference[0, ~image_positions])
    assert not torch.allclose(image_only[0, image_positions], reference[0, image_positions])


def test_image_only_on_a_text_model_is_refused(load_tiny):
    from harness.errors import UsageError

    model, _ = load_tiny()
    with pytest.raises(UsageError, match="no image projector"):
        inject_adalink(model, AdaLinkOptions(modalities=("image",)))


def test_vlm_refuses_caller_supplied_embeddings_with_a_text_link():
    from harness.errors import UsageError

    model = _tiny_vlm()
    inject_adalink(model, AdaLinkOptions(rank=4))
    inputs = _vlm_inputs(model)
    embeddings = _raw_embeddings(model, inputs.pop("input_ids"))
    with pytest.raises(UsageError, match="pass input_ids"):
        model(inputs_embeds=embeddings, **inputs)


def test_vlm_cached_generation_equals_uncached_and_links_each_token_once():
    model = _tiny_vlm()
    adalink = inject_adalink(model, AdaLinkOptions(rank=4))
    _perturb(adalink.links["text"], seed=5)
    _perturb(adalink.links["image"], seed=6)
    inputs = _vlm_inputs(model)
    calls: dict[str, list[int]] = {"text": [], "image": []}
    for modality, link in adalink.links.items():
        link.register_forward_hook(lambda m, a, out, name=modality: calls[name].append(out.shape[1]))
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True)
    text_calls, image_calls = list(calls["text"]), list(calls["image"])
    with torch.no_grad():
        uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    prompt = inputs["input_ids"].shape[1]
    assert text_calls == [prompt] + [1] * 5  # the prompt once, then each new token once
    assert image_calls == [PATCHES]  # the image is encoded once, at the prompt step
