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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.settings import cache_root
from harness.zoo import experts, scenes, vlm

ZOO_PREFIX = "harness-zoo/"
RECIPE_VERSION = 1
VLM_SCENES = "vlm-scenes"  # the tokenizer family of harness.zoo.vlm's captioning VLM
CORPUS = Path(__file__).with_name("corpus.txt")


@dataclass(frozen=True)
class ZooRecipe:
    name: str
    architecture: str  # "llama", "gpt2", "llava" (vision tower + projector + llama), "clip" or
    # "bert" (the scene world's sequence classifier)
    tokenizer: str  # "metaspace", "bytelevel", "clip", "kv" (trained key-value models), or
    # "scene-bytelevel" / "scene-clip" (the scene world's models, trained on its sentences)
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    seed: int
    description: str


RECIPES: dict[str, ZooRecipe] = {
    r.name: r
    for r in (
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
        # Pretrained on one synthetic domain each (harness.zoo.experts), two tokenizer families.
        ZooRecipe("expert-ascending", "llama", "metaspace", 640, 64, 4, 4, 2, 0,
                  "tiny-llama pretrained on the alphabet forwards (the mixed_domains task)"),
        ZooRecipe("expert-descending", "gpt2", "bytelevel", 768, 64, 4, 4, 4, 0,
                  "tiny-gpt2 pretrained on the alphabet backwards (the mixed_domains task)"),
        ZooRecipe("expert-forms", "llama", "metaspace", 640, 64, 4, 4, 2, 0,
                  "tiny-llama pretrained on alphabet questions answered in three forms "
                  "(the answer_form task)"),
        *(ZooRecipe(experts.overlap_name(domain, seed), architecture, tokenizer, vocab, 64, 4, 4,
                    kv_heads, seed, f"{base} pretrained on the alphabet {domain} and on "
                                    f"skipping runs copied with slips (seed {seed}; the "
                                    "mixed_domains task's overlap)")
          for seed in experts.OVERLAP_SEEDS
          for domain, base, architecture, tokenizer, vocab, kv_heads in (
              ("ascending", "tiny-llama", "llama", "metaspace", 640, 2),
              ("descending", "tiny-gpt2", "gpt2", "bytelevel", 768, 4))),
        # Trained in CALM's key-value world (harness.zoo.kv); GPT-2's learned absolute
        # positions let the cross-attention match an anchor position to the same
        # augmenting position (it has no positions of its own).
        ZooRecipe("kv-augmenting", "gpt2", "kv", 618, 64, 4, 4, 4, 0,
                  "trained to memorise key-value substitution over every key (CALM's m_A)"),
        ZooRecipe("kv-anchor", "gpt2", "kv", 618, 64, 4, 4, 4, 0,
                  "trained on numeric arithmetic only (CALM's anchor m_B)"),
        ZooRecipe("scene-vlm", "llava", VLM_SCENES, 0, 64, 4, 4, 2, 0, vlm.DESCRIPTION),
    )
}

# The scene world (harness.zoo.scenes), three training seeds each: an LM with byte-level BPE,
# an attribute classifier and a CLIP with CLIP's tokenizer family, and their twins reading
# the LM's tokenizer (the exact-gradient ceiling for FUSE).
SCENE_MODELS = (
    ("scene-lm", "gpt2", "scene-bytelevel", "GPT-2 trained on the scene world's sentences"),
    ("scene-classifier", "bert", "scene-clip",
     "BERT-style classifier of a scene sentence's first object (colour x shape), CLIP tokenizer"),
    ("scene-classifier-bytelevel", "bert", "scene-bytelevel",
     "scene-classifier reading scene-lm's tokenizer (exact gradients to its tokens)"),
    ("scene-clip", "clip", "scene-clip", "CLIP trained contrastively on rendered scenes and captions"),
    ("scene-clip-bytelevel", "clip", "scene-bytelevel",
     "scene-clip reading scene-lm's tokenizer (exact gradients to its tokens)"),
)
SCENE_SEEDS = (0, 1, 2)
SCENE_WIDTHS = {"gpt2": (16, 2), "bert": (48, 4), "clip": (48, 4)}  # width, heads
RECIPES.update({
    recipe.name: recipe
    for name, architecture, tokenizer, description in SCENE_MODELS for seed in SCENE_SEEDS
    for width, heads in [SCENE_WIDTHS[architecture]]
    for recipe in [ZooRecipe(name + (f"-seed{seed}" if seed else ""), architecture, tokenizer, 0,
                             width, 2, heads, heads, seed, f"{description} (training seed {seed})")]
})

# The vision tower of "llava" recipes; 32 px images in 8 px patches give 16 image tokens.
VISION_TOWER: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 2, "num_attention_heads": 2,
                                "image_size": 32, "patch_size": 8}
IMAGE_TOKEN = "<image>"
# The towers of "clip" recipes besides the recipe's text width; CLIP's 77-token context.
CLIP_TOWERS: dict[str, Any] = {"vision": VISION_TOWER, "projection_dim": 32,
                               "max_text_positions": 77}

MAX_POSITIONS = 4096


def is_zoo_id(model_id: str) -> bool:
    return model_id.startswith(ZOO_PREFIX)


def recipe_for(model_id: str) -> ZooRecipe:
    name = model_id.removeprefix(ZOO_PREFIX)
    if name not in RECIPES:
        from harness.errors import UsageError, did_you_mean

        raise UsageError(f"unknown zoo model {model_id!r}{did_you_mean(name, RECIPES)}; "
                         f"zoo models: {', '.join(ZOO_PREFIX + n for n in RECIPES)}")
    return RECIPES[name]


def is_vision_language(recipe: ZooRecipe) -> bool:
    return recipe.architecture == "llava"


def is_clip(recipe: ZooRecipe) -> bool:
    return recipe.architecture == "clip"


def is_scene(recipe: ZooRecipe) -> bool:
    """A scene-world model, trained on first use (harness.zoo.scenes)."""
    return recipe.tokenizer.startswith("scene-")


def scene_role(recipe: ZooRecipe) -> str:
    return {"gpt2": "lm", "bert": "classifier", "clip": "clip"}[recipe.architecture]


def is_trained(recipe: ZooRecipe) -> bool:
    """A key-value model, trained on first use (harness.zoo.kv) instead of left random."""
    return recipe.tokenizer == "kv"


def recipe_fingerprint(recipe: ZooRecipe) -> str:
    content: dict[str, Any] = {"recipe": asdict(recipe), "version": RECIPE_VERSION,
                               "corpus": hashlib.sha256(CORPUS.read_bytes()).hexdigest()}
    if is_vision_language(recipe):  # text-only recipes keep the fingerprints they always had
        content["vision_tower"] = VISION_TOWER
    if is_clip(recipe):
        content["clip_towers"] = CLIP_TOWERS
    pretraining = experts.pretraining_fingerprint(recipe.name)
    if pretraining is not None:
        content["pretraining"] = pretraining
    if is_trained(recipe):
        from harness.zoo import kv

        content["training"] = kv.training_identity(recipe.name)
    if recipe.tokenizer == VLM_SCENES:
        content["vlm_training"] = vlm.identity()
    if is_scene(recipe):
        content["scene_training"] = asdict(scenes.training_for(scene_role(recipe),
                                                               recipe.tokenizer.removeprefix("scene-")))
        content["scene_world"] = scenes.world_identity()
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def zoo_path(model_id: str) -> Path:
    """Local directory of a zoo model, building it on first use (atomically)."""
    recipe = recipe_for(model_id)
    target = cache_root() / "zoo" / f"{recipe.name}-{recipe_fingerprint(recipe)[:12]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{recipe.name}-", dir=target.parent))
    try:
        _build(recipe, staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def train_tokenizer(kind: str, vocab_size: int, text: Sequence[str] | None = None) -> Any:
    """Train a tokenizer of the given family on `text` (default: the shipped corpus's lines),
    deterministically."""
    from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)

    if text is None:
        text = CORPUS.read_text(encoding="utf-8").splitlines()
    if kind == "metaspace":
        specials = ["<unk>", "<s>", "</s>", "<pad>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = [chr(c) for c in range(32, 127)] + ["▁"]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=alphabet, show_progress=False)
        tok.train_from_iterator(text, trainer)
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    elif kind == "bytelevel":
        specials = ["<|endoftext|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(text, trainer)
    elif kind == "clip":
        start, end = "<|startoftext|>", "<|endoftext|>"
        tok = Tokenizer(models.BPE(unk_token=end, end_of_word_suffix="</w>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        alphabet = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[start, end],
                                      initial_alphabet=alphabet, end_of_word_suffix="</w>",
                                      show_progress=False)
        tok.train_from_iterator(text, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{start} $A {end}", pair=f"{start} $A {end} $B {end}",
            special_tokens=[(start, tok.token_to_id(start)), (end, tok.token_to_id(end))])
    else:
        raise ValueError(f"unknown tokenizer family {kind!r}")
    return tok


def _wrap_tokenizer(recipe: ZooRecipe) -> Any:
    from transformers import PreTrainedTokenizerFast

    raw = train_tokenizer(recipe.tokenizer, recipe.vocab_size)
    if recipe.tokenizer == "metaspace":
        extra = ({"extra_special_tokens": {"image_token": IMAGE_TOKEN}}
                 if is_vision_language(recipe) else {})
        return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>",
                                       model_max_length=MAX_POSITIONS, **extra)
    if recipe.tokenizer == "clip":  # openai's CLIP pads with its end-of-text token
        return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|startoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       pad_token="<|endoftext|>",
                                       model_max_length=CLIP_TOWERS["max_text_positions"])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   model_max_length=MAX_POSITIONS)


def _config(recipe: ZooRecipe, tokenizer: Any) -> Any:
    from transformers import (CLIPConfig, CLIPTextConfig, CLIPVisionConfig, GPT2Config, LlamaConfig,
                              LlavaConfig)

    vocab = len(tokenizer)
    if recipe.architecture == "clip":
        text = CLIPTextConfig(vocab_size=vocab, hidden_size=recipe.hidden_size,
                              intermediate_size=recipe.hidden_size * 2,
                              num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                              max_position_embeddings=CLIP_TOWERS["max_text_positions"],
                              bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
        return CLIPConfig(text_config=text.to_dict(),
                          vision_config=CLIPVisionConfig(**CLIP_TOWERS["vision"]).to_dict(),
                          projection_dim=CLIP_TOWERS["projection_dim"])
    if recipe.architecture == "llava":
        text = _config(dataclasses.replace(recipe, architecture="llama"), tokenizer)
        patches = (VISION_TOWER["image_size"] // VISION_TOWER["patch_size"]) ** 2
        return LlavaConfig(vision_config=CLIPVisionConfig(**VISION_TOWER), text_config=text,
                           image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                           vision_feature_select_strategy="default", vision_feature_layer=-1,
                           image_seq_length=patches)
    if recipe.architecture == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=recipe.hidden_size,
                           intermediate_size=recipe.hidden_size * 2,
                           num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                           num_key_value_heads=recipe.kv_heads,
                           max_position_embeddings=MAX_POSITIONS,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return GPT2Config(vocab_size=vocab, n_embd=recipe.hidden_size, n_layer=recipe.layers,
                      n_head=recipe.heads, n_positions=MAX_POSITIONS,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def _build(recipe: ZooRecipe, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    if is_scene(recipe):
        scenes.build(scene_role(recipe), recipe.tokenizer.removeprefix("scene-"), recipe.hidden_size,
                     recipe.layers, recipe.heads, recipe.seed, out)
        (out / "zoo_recipe.json").write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True))
        return
    if recipe.tokenizer == VLM_SCENES:
        vlm.build(lambda tokenizer: _config(recipe, tokenizer), _processor, recipe.seed, out)
        (out / "zoo_recipe.json").write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True))
        return
    if is_trained(recipe):
        from harness.zoo import kv

        kv.build(recipe.name, recipe.architecture, recipe.hidden_size, recipe.layers, recipe.heads,
                 recipe.seed, out)
        (out / "zoo_recipe.json").write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True))
        return
    tokenizer = _wrap_tokenizer(recipe)
    config = _config(recipe, tokenizer)
    torch.manual_seed(recipe.seed)
    if is_vision_language(recipe):
        model, preprocessing = AutoModelForImageTextToText.from_config(config), _processor(tokenizer)
    elif is_clip(recipe):
        model, preprocessing = AutoModel.from_config(config), tokenizer
        _image_processor(CLIP_TOWERS["vision"]["image_size"]).save_pretrained(out)
    else:
        model, preprocessing = AutoModelForCausalLM.from_config(config), tokenizer
    model.save_pretrained(out)
    preprocessing.save_pretrained(out)
    if recipe.name in experts.PRETRAINING:
        experts.pretrain(recipe.name, out)
    (out / "zoo_recipe.json").write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True))


def _processor(tokenizer: Any) -> Any:
    """Llava's processor: CLIP-style resize/crop to the tower's size, `<image>` expanded to
    one token per patch (the CLS feature is dropped by the "default" selection strategy)."""
    from transformers import LlavaProcessor

    images = _image_processor(VISION_TOWER["image_size"])
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer,
                          patch_size=VISION_TOWER["patch_size"], image_token=IMAGE_TOKEN,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _image_processor(side: int) -> Any:
    """CLIP's preprocessing (resize the short edge, centre crop, CLIP's mean and std) at
    `side` pixels."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
