"""An offline zoo of tiny, deterministic causal language models.

Each zoo model is built from a transformers config with a fixed seed and a tokenizer
trained with `tokenizers` on `corpus.txt`, saved with `save_pretrained` into the cache and
then loaded through the ordinary `from_pretrained` path, exactly like a hub model. A user
passes them by name like any model id: ``--models harness-zoo/tiny-llama``.

The two tokenizer families differ on purpose, as real ones do: the Llama-like one marks
word starts with "▁" (Metaspace), the GPT-2-like one works on bytes and marks spaces
with "Ġ". Fusion methods that align vocabularies are tested across that gap.

`tiny-vlm` is a vision-language model of transformers' Llava class: a tiny CLIP vision
tower, Llava's projector and a tiny Llama, saved with its `LlavaProcessor` so that
`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained` load it like a hub VLM.
`scene-vlm` has its shape but is pretrained to caption the scene world (harness.zoo.vlm).

`tiny-clip` is a CLIP dual encoder (transformers' `CLIPModel`: text tower, vision tower,
projections) with a third tokenizer family, CLIP's: lower-cased, split on whitespace and
punctuation, BPE words ending in "</w>". It is saved with its image processor, so
`AutoModel` / `AutoTokenizer` / `AutoImageProcessor` load it like openai/clip-vit-base-patch32.

`expert-ascending` / `expert-descending` are tiny-llama / tiny-gpt2 recipes pretrained for
a few seconds on one synthetic domain each (harness.zoo.experts): models that know
something, for the `mixed_domains` task and the quick-start suite. `overlap-ascending` /
`overlap-descending` (seeds 0-2: `-s1`, `-s2`) add a domain each knows only half of, so that
their pack needs both; `expert-forms` knows the alphabet in several answer forms (the
`answer_form` task).

`kv-anchor` and `kv-augmenting` are not random: they are trained on first use in the
key-value arithmetic world of CALM's first experiment (`harness.zoo.kv`), the anchor on
numeric arithmetic, the augmenting model on key-value substitution; both use the world's
tokenizer (family "kv": every key one token, digits and operators one token each).

The `scene-*` models are trained in the scene world (`harness.zoo.scenes`).

Every model is a `ZooRecipe` (harness.zoo.recipe, which says how a new world registers); the
random ones are listed here, the trained ones by their world's module (`WORLDS`). All are
built the same way (`_build`) into one `ContentCache` keyed by the recipe's digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from harness.content_cache import ContentCache, DamagedEntry, content_key
from harness.settings import cache_root
from harness.zoo import experts, kv, scenes, vlm
from harness.zoo.builders import (CLIP_TOWERS, CORPUS, VISION_TOWER, is_clip, is_vision_language,
                                  random_model, tokenizer_identity, train_tokenizer)
from harness.zoo.recipe import ZooRecipe, ZooTraining

__all__ = ["ZooRecipe", "ZooTraining", "RECIPES", "WORLDS", "ZOO_PREFIX", "zoo_path",
           "recipe_for", "recipe_fingerprint", "is_zoo_id", "is_vision_language", "is_clip",
           "cache_root", "train_tokenizer", "random_model"]


ZOO_PREFIX = "harness-zoo/"


RECIPE_VERSION = 1


# Left at their seeded initialisation.
RANDOM_RECIPES = (
    ZooRecipe("tiny-llama", "llama", "metaspace", 640, 64, 4, 4, 2, 0,
              "Llama-like, GQA (4 query / 2 key-value heads), Metaspace BPE"),
    ZooRecipe("tiny-llama-b", "llama", "metaspace", 640, 64, 4, 4, 2, 1,
              "tiny-llama's architecture and tokenizer, other seed (for packs and merges)"),
    ZooRecipe("tiny-gpt2", "gpt2", "bytelevel", 768, 64, 4, 4, 4, 0,
              "GPT-2-like, byte-level BPE"),
    ZooRecipe("tiny-vlm", "llava", "metaspace", 640, 64, 4, 4, 2, 0,
              "Llava: tiny CLIP vision tower (32 px, 8 px patches) + projector + tiny Llama"),
    ZooRecipe("tiny-clip", "clip", "clip", 512, 48, 2, 2, 2, 0,
              "CLIP dual encoder: text tower (CLIP tokenizer) + vision tower (32 px), "
              "32-d projections"),
)


# The worlds whose modules list trained recipes (`RECIPES`); see ZooRecipe to add one.
WORLDS = (experts, kv, vlm, scenes)


RECIPES: dict[str, ZooRecipe] = {
    recipe.name: recipe
    for recipe in (*RANDOM_RECIPES, *(r for world in WORLDS for r in world.RECIPES))
}


def is_zoo_id(model_id: str) -> bool:
    return model_id.startswith(ZOO_PREFIX)


def recipe_for(model_id: str) -> ZooRecipe:
    name = model_id.removeprefix(ZOO_PREFIX)
    if name not in RECIPES:
        from harness.errors import UsageError, did_you_mean

        raise UsageError(f"unknown zoo model {model_id!r}{did_you_mean(name, RECIPES)}; "
                         f"zoo models: {', '.join(ZOO_PREFIX + n for n in RECIPES)}")
    return RECIPES[name]


def recipe_fingerprint(recipe: ZooRecipe) -> str:
    content: dict[str, Any] = {"recipe": recipe.card(), "version": RECIPE_VERSION,
                               "corpus": hashlib.sha256(CORPUS.read_bytes()).hexdigest()}
    if is_vision_language(recipe):  # text-only recipes keep the fingerprints they always had
        content["vision_tower"] = VISION_TOWER
    if is_clip(recipe):
        content["clip_towers"] = CLIP_TOWERS
    content |= tokenizer_identity(recipe.tokenizer)
    if recipe.training is not None:
        content |= recipe.training.identity()
    return content_key(content)


def _zoo_cache() -> ContentCache:
    return ContentCache(cache_root() / "zoo", folder=True, key_chars=12)


def _built(folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise DamagedEntry(f"{folder}: no config.json")
    return folder


def zoo_path(model_id: str) -> Path:
    """Local directory of a zoo model, building it on first use."""
    recipe = recipe_for(model_id)
    zoo, key, label = _zoo_cache(), recipe_fingerprint(recipe), f"{recipe.name}-"

    def build(staging: Path) -> Path:
        _build(recipe, staging)
        return zoo.path(key, label)

    return zoo.fetch(key, _built, build, label)


def _build(recipe: ZooRecipe, out: Path) -> None:
    """Build (and train, through harness.training) the recipe's model into `out`."""
    from harness.training.loop import optimise

    if recipe.training is None:
        model, companions = random_model(recipe)
        for part in (model, *companions):
            part.save_pretrained(out)
    else:
        with _one_thread():  # tiny widths: intra-op threads cost more than they save
            prepared = recipe.training.prepare(recipe)
            final_loss = optimise(prepared.model, recipe.training.optimisation, prepared.loss)
        for part in (prepared.model, *prepared.companions):
            part.save_pretrained(out)
        recipe.training.finish(recipe, prepared, final_loss, out)
    (out / "zoo_recipe.json").write_text(json.dumps(recipe.card(), indent=2, sort_keys=True))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread (also what keeps a trained model the same on any machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
