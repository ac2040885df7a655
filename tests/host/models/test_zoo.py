"""The tiny zoo: deterministic, two tokenizer families, loaded like any hub model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness import zoo
from harness.errors import UsageError
from harness.models.loading import ModelRef, load_causal_lm


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_zoo_builds_are_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = zoo.zoo_path("harness-zoo/tiny-llama")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    second = zoo.zoo_path("harness-zoo/tiny-llama")
    assert first != second
    assert _digest(first) == _digest(second)


def test_two_genuinely_different_tokenizer_families() -> None:
    llama = load_causal_lm(ModelRef("harness-zoo/tiny-llama"))[1]
    gpt2 = load_causal_lm(ModelRef("harness-zoo/tiny-gpt2"))[1]
    text = "Question: Tom has 3 apples."
    llama_tokens = llama.convert_ids_to_tokens(llama(text)["input_ids"])
    gpt2_tokens = gpt2.convert_ids_to_tokens(gpt2(text)["input_ids"])
    assert any(t.startswith("▁") for t in llama_tokens)
    assert any(t.startswith("Ġ") for t in gpt2_tokens)
    assert llama.get_vocab() != gpt2.get_vocab()
    assert llama.decode(llama(text)["input_ids"], skip_special_tokens=True) == text
    assert gpt2.decode(gpt2(text)["input_ids"]) == text


def test_zoo_models_load_through_from_pretrained() -> None:
    model, _ = load_causal_lm(ModelRef("harness-zoo/tiny-llama"))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    model, _ = load_causal_lm(ModelRef("harness-zoo/tiny-gpt2"))
    assert type(model).__name__ == "GPT2LMHeadModel"


def test_unknown_zoo_name_suggests_the_close_one() -> None:
    with pytest.raises(UsageError, match="did you mean 'tiny-llama'"):
        zoo.zoo_path("harness-zoo/tiny-lama")


def test_model_reference_parsing() -> None:
    ref = ModelRef.parse("meta-llama/Llama-2-7b-hf@abc123", device="cuda", dtype="bfloat16")
    assert (ref.id, ref.revision, ref.device, ref.dtype) == ("meta-llama/Llama-2-7b-hf", "abc123",
                                                             "cuda", "bfloat16")
    assert ref.identity()["revision"] == "abc123"
