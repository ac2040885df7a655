"""The tiny zoo: deterministic, two tokenizer families, loaded like any hub model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import zoo
from harness.contract import ModelRef
from harness.errors import UsageError
from harness.models.loading import load_causal_lm, model_identity


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_zoo_builds_are_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = zoo.zoo_path("harness-zoo/tiny-llama")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    second = zoo.zoo_path("harness-zoo/tiny-llama")
    assert first != second
    assert _digest(first) == _digest(second)


# Every family trained in a fresh interpreter: the tokenizers library seeds its hash maps at
# random per process, which once reordered CLIP's merges and ids from one build to the next.
_TRAIN_EVERY_FAMILY = """
import hashlib, json
from harness.zoo.builders import train_tokenizer
print(json.dumps({kind: hashlib.sha256(train_tokenizer(kind, size).to_str().encode()).hexdigest()
                  for kind, size in (("metaspace", 640), ("bytelevel", 768), ("clip", 512))}))
"""


def test_every_tokenizer_family_trains_the_same_in_every_process() -> None:
    first, second = (json.loads(subprocess.run([sys.executable, "-c", _TRAIN_EVERY_FAMILY], check=True,
                                               capture_output=True, text=True).stdout)
                     for _ in range(2))
    assert first == second


def test_clip_word_end_symbols_are_ordinary_vocabulary() -> None:
    from harness.zoo.builders import train_tokenizer

    tokenizer = train_tokenizer("clip", 512)
    assert [t.content for t in tokenizer.get_added_tokens_decoder().values()] == [
        "<|startoftext|>", "<|endoftext|>"]
    assert tokenizer.encode("the red circle", add_special_tokens=False).tokens[-1] == "circle</w>"


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
    assert model_identity(ref)["revision"] == "abc123"


def test_every_world_registers_its_trained_recipes_once() -> None:
    from harness.training.options import Optimisation

    trained = [recipe for world in zoo.WORLDS for recipe in world.RECIPES]
    assert len({r.name for r in trained}) == len(trained)
    assert [zoo.RECIPES[r.name] for r in trained] == trained
    assert all(isinstance(r.training, zoo.ZooTraining) and isinstance(r.training.optimisation, Optimisation)
               for r in trained)
    assert all(zoo.RECIPES[r.name].training is None for r in zoo.RANDOM_RECIPES)
    assert set(zoo.RECIPES) == {r.name for r in (*zoo.RANDOM_RECIPES, *trained)}

