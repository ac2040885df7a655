"""`scene-vlm`: a tiny vision-language model pretrained to caption the scene world.

Transformers' Llava class, as `tiny-vlm` (a CLIP vision tower on 32 px images in 8 px
patches, 16 image tokens, Llava's two-layer projector, a 4-layer 64-wide Llama), but its
tokenizer is trained on the scene world's sentences (`harness.zoo.scenes`) and the whole
model is trained on one task only: captioning. Each step draws a batch of rendered scenes
from a fixed pool and trains on the evaluation format "<image>an image of" -> " <caption>."
(loss on the caption), the caption one of the grammar's for the scene (sizes said or not,
either order). The model never sees a question: tasks such as `scene_vqa` ask it something
it was not tuned for.

Training is deterministic: seeded data, `torch.manual_seed(seed)` before the weights are
drawn, one thread; everything below enters the zoo fingerprint (`identity`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.zoo import scenes

DESCRIPTION = ("Llava (tiny-vlm's shape) with a scene-world tokenizer, pretrained to caption "
               "rendered scenes (harness.zoo.vlm)")
PROMPT = "<image>" + scenes.PREFIX  # the text before the caption, image placeholder first


@dataclass(frozen=True)
class VlmTraining:
    """How `scene-vlm` is pretrained (all of it enters the zoo fingerprint)."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    images: int = 6000  # the pool of rendered training scenes, each with its own jitter
    tokenizer_vocab: int = 300
    tokenizer_sentences: int = 20000
    version: int = 1


TRAINING = VlmTraining()
# Words a task may ask with; the tokenizer learns them as words (the model never trains on
# them, so their embeddings stay as initialised).
QUESTION_WORDS = "what colour shape is the thing ? yes no where"


def identity() -> dict[str, Any]:
    """What the fingerprint of a scene VLM holds besides its recipe."""
    return {"training": asdict(TRAINING), "prompt": PROMPT, "question_words": QUESTION_WORDS,
            "world": scenes.world_identity()}


def tokenizer() -> Any:
    """Metaspace BPE trained on the world's sentences (and the question words), with the
    Llama-like zoo tokenizer's specials and Llava's image token."""
    from transformers import PreTrainedTokenizerFast

    from harness.zoo import IMAGE_TOKEN, MAX_POSITIONS, train_tokenizer

    text = scenes.corpus(TRAINING.tokenizer_sentences, seed=0) + [QUESTION_WORDS]
    raw = train_tokenizer("metaspace", TRAINING.tokenizer_vocab, text)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   model_max_length=MAX_POSITIONS,
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def scene_from_parts(things: Sequence[Sequence[str]], relation: str | None) -> scenes.Scene:
    """A scene from its things' [size, colour, shape] and the relation (a task's document)."""
    return scenes.Scene(tuple(scenes.Thing(*thing) for thing in things), relation)


def build(config_for: Any, processor_for: Any, seed: int, out: Path) -> None:
    """Train `scene-vlm` into `out`; `config_for(tokenizer)` and `processor_for(tokenizer)`
    are the zoo's Llava config and processor."""
    import torch
    from transformers import AutoModelForImageTextToText

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny widths: intra-op threads cost more than they save
    try:
        text_tokenizer = tokenizer()
        processor = processor_for(text_tokenizer)
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config_for(text_tokenizer))
        _train(model, processor, seed)
        model.eval()
        model.save_pretrained(out)
        processor.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)


def encode(processor: Any, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) of prompt + target + EOS as the harness's fit encodes an image
    example: the target split off the joint encoding, loss on the target only."""
    from harness.zoo import IMAGE_TOKEN, VISION_TOWER

    patches = (VISION_TOWER["image_size"] // VISION_TOWER["patch_size"]) ** 2
    tok = processor.tokenizer

    def ids(text: str) -> list[int]:
        return list(tok(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * patches)).input_ids)

    prompt_ids, whole = ids(prompt), ids(prompt + target)
    target_ids = whole[len(prompt_ids):] + [tok.eos_token_id]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _train(model: Any, processor: Any, seed: int) -> None:
    import torch

    rng = random.Random(seed)
    pool = [scenes.random_scene(rng) for _ in range(TRAINING.images)]
    pixels = processor.image_processor(
        images=[scenes.render(s, seed * TRAINING.images + i) for i, s in enumerate(pool)],
        return_tensors="pt")["pixel_values"]
    pad = processor.tokenizer.pad_token_id

    def loss(step: int) -> Any:
        chosen = rng.sample(range(len(pool)), TRAINING.batch_size)
        rows = [encode(processor, PROMPT, " " + rng.choice(pool[i].references()) + ".")
                for i in chosen]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (row_ids, row_labels) in enumerate(rows):
            ids[row, :len(row_ids)] = torch.tensor(row_ids)
            labels[row, :len(row_labels)] = torch.tensor(row_labels)
            mask[row, :len(row_ids)] = 1
        return model(input_ids=ids, attention_mask=mask, labels=labels,
                     pixel_values=pixels[chosen]).loss

    scenes._optimise(model, TRAINING.steps, TRAINING.lr, loss)  # the scene models' schedule
