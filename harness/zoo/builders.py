"""What every zoo world builds its models from: tokenizers trained on the zoo's text, the
configs of the tiny architectures (Llama, GPT-2, Llava, CLIP), randomly initialised models
and the processors of the vision ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from harness.zoo.recipe import ZooRecipe

CORPUS = Path(__file__).with_name("corpus.txt")


# The vision tower of "llava" recipes; 32 px images in 8 px patches give 16 image tokens.
VISION_TOWER: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 2, "num_attention_heads": 2,
                                "image_size": 32, "patch_size": 8}


IMAGE_TOKEN = "<image>"


# The towers of "clip" recipes besides the recipe's text width; CLIP's 77-token context.
CLIP_TOWERS: dict[str, Any] = {"vision": VISION_TOWER, "projection_dim": 32,
                               "max_text_positions": 77}


MAX_POSITIONS = 4096


# Bumped when what `train_tokenizer` builds for a family changes, so that every zoo model
# reading the family gets a new fingerprint; families at revision 1 stay out of fingerprints
# (theirs keep the values they always had). clip 2: word-final symbols numbered in a fixed
# order, which makes its training reproducible across processes.
TOKENIZER_REVISIONS: dict[str, int] = {"clip": 2}


def tokenizer_identity(family: str) -> dict[str, Any]:
    """What a zoo fingerprint holds for the tokenizer family a model reads."""
    revision = TOKENIZER_REVISIONS.get(family, 1)
    return {} if revision == 1 else {"tokenizer_revision": {family: revision}}


def is_vision_language(recipe: ZooRecipe) -> bool:
    return recipe.architecture == "llava"


def is_clip(recipe: ZooRecipe) -> bool:
    return recipe.architecture == "clip"


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
        word_ends = _word_end_symbols(tok, text)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[start, end, *word_ends],
                                      initial_alphabet=alphabet, end_of_word_suffix="</w>",
                                      show_progress=False)
        tok.train_from_iterator(text, trainer)
        tok = _without_added(tok, word_ends)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{start} $A {end}", pair=f"{start} $A {end} $B {end}",
            special_tokens=[(start, tok.token_to_id(start)), (end, tok.token_to_id(end))])
    else:
        raise ValueError(f"unknown tokenizer family {kind!r}")
    return tok


def _word_end_symbols(tok: Any, text: Sequence[str]) -> list[str]:
    """The trainer's word-final symbols ("s</w>"), in code point order. Left to itself the
    trainer numbers them in the order it meets them in its hash map of words, which is seeded
    at random in every process; their ids then decide which of two equally frequent pairs
    merges first, so the merges' order and every id after them differed between builds. Given
    as the trainer's special tokens they get fixed ids ahead of the alphabet, and with every
    starting id fixed the trainer is deterministic (ties broken by pair ids)."""
    ends = {word[-1] for line in text
            for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(line))}
    return [f"{char}</w>" for char in sorted(ends)]


def _without_added(tok: Any, symbols: Sequence[str]) -> Any:
    """`tok` with `symbols` left as ordinary vocabulary entries instead of added special
    tokens (which would be matched in raw text and dropped when decoding)."""
    from tokenizers import Tokenizer

    state = json.loads(tok.to_str())
    dropped = set(symbols)
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in dropped]
    return Tokenizer.from_str(json.dumps(state))


def wrap_tokenizer(recipe: ZooRecipe) -> Any:
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


def model_config(recipe: ZooRecipe, tokenizer: Any) -> Any:
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
        text = model_config(dataclasses.replace(recipe, architecture="llama"), tokenizer)
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


def random_model(recipe: ZooRecipe) -> tuple[Any, tuple[Any, ...]]:
    """The recipe's model at its seeded initialisation, and what is saved beside it
    (tokenizer, processors)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    tokenizer = wrap_tokenizer(recipe)
    config = model_config(recipe, tokenizer)
    torch.manual_seed(recipe.seed)
    if is_vision_language(recipe):
        return AutoModelForImageTextToText.from_config(config), (vlm_processor(tokenizer),)
    if is_clip(recipe):
        return (AutoModel.from_config(config),
                (tokenizer, clip_image_processor(CLIP_TOWERS["vision"]["image_size"])))
    return AutoModelForCausalLM.from_config(config), (tokenizer,)


def vlm_processor(tokenizer: Any) -> Any:
    """Llava's processor: CLIP-style resize/crop to the tower's size, `<image>` expanded to
    one token per patch (the CLS feature is dropped by the "default" selection strategy)."""
    from transformers import LlavaProcessor

    images = clip_image_processor(VISION_TOWER["image_size"])
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer,
                          patch_size=VISION_TOWER["patch_size"], image_token=IMAGE_TOKEN,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def clip_image_processor(side: int) -> Any:
    """CLIP's preprocessing (resize the short edge, centre crop, CLIP's mean and std) at
    `side` pixels."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
