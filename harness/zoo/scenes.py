"""The scene world: a template grammar of coloured shapes, rendered images, and tiny models
trained on it with different tokenizers.

A scene holds one or two objects (size, colour, shape); two objects stand in a spatial
relation. Its caption comes from a template grammar ("a big red circle above a small blue
square"; sizes are mentioned or not, and a relation can be said both ways), and Pillow draws
it as a small RGB image. Sentences are the caption after `PREFIX` and end with a period.

Zoo recipes trained here (this module's `RECIPES`, each cached by content like every zoo
model; training runs on one thread, data drawn from a seeded generator):

- `lm`: a GPT-2 (byte-level BPE, trained on the world's sentences) trained as a causal LM;
- `classifier`: a BERT-style encoder that reads a sentence, or any prefix of one that
  has begun describing its first object, and names that object's colour and shape: two
  softmax heads over its logits (the first `len(COLOURS)` for the colour, the rest for the
  shape); read at the sentence-start token;
- `clip`: a CLIP dual encoder trained contrastively on rendered scenes and their captions.

The classifier and CLIP read CLIP's tokenizer family trained on the same sentences (another
tokenizer than the LM's). Their `bytelevel` twins read the LM's own tokenizer (plus a
sentence-start token after its vocabulary), so a gradient reaches the LM's tokens exactly:
the ceiling that cross-tokenizer methods are measured against.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from harness.zoo.recipe import Prepared, ZooRecipe, ZooTraining

if TYPE_CHECKING:
    from harness.training.options import Optimisation

PREFIX = "an image of"
IMAGE_SIZE = 32
BACKGROUND = (128, 128, 128)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 230, 40),
    "green": (30, 170, 50), "cyan": (40, 220, 230), "blue": (30, 60, 220),
    "purple": (130, 40, 170), "pink": (250, 150, 200), "brown": (120, 70, 30),
    "black": (10, 10, 10), "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
SIZES: dict[str, int] = {"tiny": 3, "small": 4, "big": 6, "huge": 7}  # radius in pixels
RELATIONS = ("above", "below", "left of", "right of", "and")
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of", "and": "and"}
# Sentences open with PREFIX mostly (the objectives' prefix), or another one
PREFIXES = {"an image of": 0.6, "a picture of": 0.2, "a photo of": 0.2}
PREFERENCE_SPREAD = 1.0


def _preferences(rows: Sequence[str], columns: Sequence[str], salt: int) -> dict[str, list[float]]:
    """A fixed table of sampling weights, exp(spread * N(0, 1)) per cell: the world's habits.
    Words with habits of their own have distributions of their own, which any model of the
    language encodes; that shared structure is what lets a linear map relate two models'
    embedding tables (all combinations stay possible)."""
    rng = random.Random(salt)
    return {row: [math.exp(PREFERENCE_SPREAD * rng.gauss(0, 1)) for _ in columns] for row in rows}


SHAPE_GIVEN_COLOUR = _preferences(list(COLOURS), SHAPES, 1)
SIZE_GIVEN_SHAPE = _preferences(SHAPES, list(SIZES), 2)
RELATION_GIVEN_SHAPE = _preferences(SHAPES, RELATIONS, 3)
SECOND_COLOUR_GIVEN_FIRST = _preferences(list(COLOURS), list(COLOURS), 4)
START_TOKEN = "<|startoftext|>"


@dataclass(frozen=True)
class Thing:
    size: str
    colour: str
    shape: str

    def words(self, with_size: bool) -> str:
        return " ".join(([self.size] if with_size else []) + [self.colour, self.shape])


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]  # one or two
    relation: str | None = None  # the first thing's place relative to the second

    @property
    def label(self) -> int:
        """The classifier's class: the first-mentioned thing's (colour, shape)."""
        return attribute_label(self.things[0].colour, self.things[0].shape)

    def caption(self, with_size: bool = True, inverted: bool = False) -> str:
        if len(self.things) == 1:
            return "a " + self.things[0].words(with_size)
        first, second = self.things
        relation = self.relation or ""
        if inverted:
            first, second, relation = second, first, INVERSE[relation]
        return f"a {first.words(with_size)} {relation} a {second.words(with_size)}"

    def references(self) -> list[str]:
        """Every caption the grammar gives this scene (sizes said or not, either order)."""
        orders = (False, True) if len(self.things) == 2 else (False,)
        return [self.caption(with_size, inverted) for inverted in orders for with_size in (True, False)]


def attribute_label(colour: str, shape: str) -> int:
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


CLASSIFIER_HEADS = (slice(0, len(COLOURS)), slice(len(COLOURS), len(COLOURS) + len(SHAPES)))


def head_classes(label: int) -> tuple[int, int]:
    """The classifier's class in each head (colour, shape) for a (colour, shape) label."""
    return label // len(SHAPES), label % len(SHAPES)


def label_attributes(label: int) -> tuple[str, str]:
    return list(COLOURS)[label // len(SHAPES)], SHAPES[label % len(SHAPES)]


FIRST_THING = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def first_thing(text: str) -> tuple[str, str] | None:
    """The (colour, shape) of the first "colour shape" a text names, None if it names none."""
    match = FIRST_THING.search(text.lower())
    return (match.group(1), match.group(2)) if match else None


def vocabulary() -> list[str]:
    """Every word the world's sentences use (without the closing period)."""
    words = {*" ".join(PREFIXES).split(), "a", *COLOURS, *SHAPES, *SIZES, *" ".join(RELATIONS).split()}
    return sorted(words)


def random_scene(rng: random.Random, two_things: float = 0.7) -> Scene:
    """A scene drawn with the world's habits: the first colour uniformly, each shape by its
    colour, each size by its shape, the second colour by the first, the relation by the
    first shape."""
    def thing(colour: str) -> Thing:
        shape = rng.choices(SHAPES, SHAPE_GIVEN_COLOUR[colour])[0]
        return Thing(rng.choices(list(SIZES), SIZE_GIVEN_SHAPE[shape])[0], colour, shape)

    first = thing(rng.choice(list(COLOURS)))
    if rng.random() < two_things:
        second = thing(rng.choices(list(COLOURS), SECOND_COLOUR_GIVEN_FIRST[first.colour])[0])
        while second.colour == first.colour and second.shape == first.shape:
            second = thing(rng.choice(list(COLOURS)))
        return Scene((first, second), rng.choices(RELATIONS, RELATION_GIVEN_SHAPE[first.shape])[0])
    return Scene((first,))


def sentence(scene: Scene, rng: random.Random) -> str:
    """A sentence of the world about `scene`: a prefix, one of its captions, a period."""
    with_size = rng.random() < 0.5
    inverted = len(scene.things) == 2 and rng.random() < 0.5
    prefix = rng.choices(list(PREFIXES), list(PREFIXES.values()))[0]
    return f"{prefix} {scene.caption(with_size, inverted)}."


def corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [sentence(random_scene(rng), rng) for _ in range(count)]


def render(scene: Scene, seed: int = 0) -> Any:
    """The scene as an IMAGE_SIZE x IMAGE_SIZE RGB Pillow image (positions jittered by `seed`)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for thing, (x, y) in zip(scene.things, _places(scene, rng)):
        _draw(draw, thing.shape, x, y, SIZES[thing.size], COLOURS[thing.colour])
    return image


def _places(scene: Scene, rng: random.Random) -> list[tuple[float, float]]:
    centre, margin = IMAGE_SIZE / 2, SIZES["big"] + 1
    if len(scene.things) == 1:
        return [(centre + rng.uniform(-4, 4), centre + rng.uniform(-4, 4))]
    near, far = margin + rng.uniform(0, 2), IMAGE_SIZE - margin - rng.uniform(0, 2)
    across = [centre + rng.uniform(-5, 5), centre + rng.uniform(-5, 5)]
    left_first = scene.relation == "left of" or (scene.relation == "and" and rng.random() < 0.5)
    first, second = (near, far) if scene.relation == "above" or left_first else (far, near)
    if scene.relation in ("above", "below"):
        return [(across[0], first), (across[1], second)]
    return [(first, across[0]), (second, across[1])]


def _draw(draw: Any, shape: str, x: float, y: float, r: int, fill: tuple[int, int, int]) -> None:
    def polygon(corners: int, turn: float = -math.pi / 2, radii: Sequence[float] = (1.0,)) -> None:
        points = [(x + r * radii[i % len(radii)] * math.cos(turn + 2 * math.pi * i / corners),
                   y + r * radii[i % len(radii)] * math.sin(turn + 2 * math.pi * i / corners))
                  for i in range(corners)]
        draw.polygon(points, fill=fill)

    box = (x - r, y - r, x + r, y + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, r // 2))
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "cross":
        arm = max(1, r // 3)
        draw.rectangle((x - r, y - arm, x + r, y + arm), fill=fill)
        draw.rectangle((x - arm, y - r, x + arm, y + r), fill=fill)
    elif shape == "triangle":
        polygon(3)
    elif shape == "diamond":
        polygon(4)
    elif shape == "hexagon":
        polygon(6, 0.0)
    elif shape == "star":
        polygon(10, radii=(1.0, 0.45))
    else:
        raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------------------------------------
# Training the world's models


@dataclass(frozen=True)
class SceneTraining(ZooTraining):
    """How one scene model is trained (all of it enters the zoo fingerprint): batches drawn
    from a generator seeded with the recipe's seed; AdamW (weight decay 0.01), the lower of a
    5% linear warm-up and a cosine decay, gradients clipped to norm 1."""

    role: str  # "lm", "classifier" or "clip"
    tokenizer: str  # "bytelevel" (the LM's) or "clip" (CLIP's family, trained on the world)
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    corpus_sentences: int = 20000
    tokenizer_vocab: int = 400
    images: int = 4000  # CLIP: rendered scenes drawn from, once each, with their jitter
    temperature: float = 0.07  # CLIP's initial logit scale is 1 / temperature
    version: int = 1

    @property
    def optimisation(self) -> Optimisation:
        return scene_optimisation(self.steps, self.lr)

    def identity(self) -> dict[str, Any]:
        from harness.zoo.builders import tokenizer_identity

        return {"scene_training": asdict(self), "scene_world": world_identity(),
                **tokenizer_identity(self.tokenizer)}

    def prepare(self, recipe: ZooRecipe) -> Prepared:
        import torch

        tokenizer = scene_tokenizer(self)
        torch.manual_seed(recipe.seed)
        model = _model(self.role, tokenizer, recipe.hidden_size, recipe.layers, recipe.heads)
        loss = _LOSSES[self.role](model, tokenizer, self, recipe.seed)
        if self.role != "clip":
            return Prepared(model, (tokenizer,), loss)
        from harness.zoo.builders import clip_image_processor

        return Prepared(model, (tokenizer, clip_image_processor(IMAGE_SIZE)), loss)


def scene_optimisation(steps: int, lr: float) -> Optimisation:
    """The scene world's schedule: AdamW (weight decay 0.01), the lower of a 5% linear
    warm-up and a cosine decay, gradients clipped to norm 1."""
    from harness.training.options import Optimisation

    return Optimisation(steps=steps, lr=lr, weight_decay=0.01, schedule="warmup_min_cosine",
                        warmup_ratio=0.05, clip_norm=1.0)


ROLES = ("lm", "classifier", "clip")
TRAINING: dict[str, SceneTraining] = {
    "lm": SceneTraining("lm", "bytelevel", steps=800),
    "classifier": SceneTraining("classifier", "clip", steps=1000),
    "clip": SceneTraining("clip", "clip", steps=1000),
}


WORLD_VERSION = 2  # bump when the grammar, the renderer or the training code changes


def world_identity() -> dict[str, Any]:
    """What every scene model's fingerprint holds besides its recipe and training plan."""
    return {"version": WORLD_VERSION, "prefixes": PREFIXES, "image_size": IMAGE_SIZE,
            "background": BACKGROUND, "colours": COLOURS, "shapes": SHAPES, "sizes": SIZES,
            "relations": RELATIONS, "preference_spread": PREFERENCE_SPREAD}


def tokenizer_corpus(plan: SceneTraining) -> list[str]:
    """The sentences every scene tokenizer is trained on (one corpus, whatever the seed, so
    that the LM and its twins share one vocabulary)."""
    return corpus(plan.corpus_sentences, seed=0)


def scene_tokenizer(plan: SceneTraining) -> Any:
    """The LM's byte-level BPE, or CLIP's family, trained on the world's sentences. Both have
    a sentence-start token and an end-of-text token (the byte-level one appends its start
    token after the vocabulary the LM reads, so the LM's token ids are shared)."""
    from transformers import PreTrainedTokenizerFast

    from harness.zoo.builders import CLIP_TOWERS, train_tokenizer

    raw = train_tokenizer(plan.tokenizer, plan.tokenizer_vocab, tokenizer_corpus(plan))
    end = "<|endoftext|>"
    if plan.tokenizer == "clip":
        return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=START_TOKEN, eos_token=end,
                                       unk_token=end, pad_token=end,
                                       model_max_length=CLIP_TOWERS["max_text_positions"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=end, eos_token=end,
                                        unk_token=end, model_max_length=64)
    if plan.role != "lm":
        tokenizer.add_special_tokens({"bos_token": START_TOKEN, "pad_token": end})
    return tokenizer


def _model(role: str, tokenizer: Any, width: int, layers: int, heads: int) -> Any:
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              BertConfig, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, GPT2Config)

    vocab, positions = len(tokenizer), 64
    if role == "lm":
        return AutoModelForCausalLM.from_config(GPT2Config(
            vocab_size=vocab, n_embd=width, n_layer=layers, n_head=heads, n_positions=positions,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    if role == "classifier":
        config = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=2 * width,
                            max_position_embeddings=positions, type_vocab_size=1,
                            pad_token_id=tokenizer.pad_token_id)
        config.num_labels = len(COLOURS) + len(SHAPES)
        return AutoModelForSequenceClassification.from_config(config)
    text = CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=positions, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                              num_attention_heads=heads, image_size=IMAGE_SIZE, patch_size=8)
    return AutoModel.from_config(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                            projection_dim=32,
                                            logit_scale_init_value=math.log(1 / TRAINING["clip"].temperature)))


def framed(tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    """<start> text <end> for every text (the LM reads no start token), right-padded, with
    the attention mask."""
    import torch

    lead = [tokenizer.bos_token_id] if tokenizer.bos_token != tokenizer.eos_token else []
    rows = [lead + ids + [tokenizer.eos_token_id]
            for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for number, row in enumerate(rows):
        ids[number, :len(row)], mask[number, :len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask}


def _lm_loss(model: Any, tokenizer: Any, plan: SceneTraining, seed: int
             ) -> Callable[[int], Any]:
    import torch.nn.functional as F

    rng = random.Random(seed)

    def loss(step: int) -> Any:
        texts = [sentence(random_scene(rng), rng) for _ in range(plan.batch_size)]
        batch = framed(tokenizer, texts)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits[:, :-1]
        return F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100)

    return loss


def classifier_prefix(text: str, rng: random.Random) -> str:
    """A prefix of a sentence cut after a random word from its first object's colour on
    (what a left-to-right search shows the classifier), or the whole sentence."""
    words = text.split(" ")
    colour_at = next(i for i, w in enumerate(words) if w in COLOURS)
    return " ".join(words[:rng.randint(colour_at + 1, len(words))])


def _classifier_loss(model: Any, tokenizer: Any, plan: SceneTraining, seed: int
                     ) -> Callable[[int], Any]:
    import torch
    import torch.nn.functional as F

    rng = random.Random(seed)

    def loss(step: int) -> Any:
        scenes = [random_scene(rng) for _ in range(plan.batch_size)]
        texts = [classifier_prefix(sentence(s, rng), rng) for s in scenes]
        inverted = [first_thing(t) for t in texts]  # "a b below a c": b is named first
        labels = [attribute_label(*named) if named else s.label for s, named in zip(scenes, inverted)]
        logits = model(**framed(tokenizer, texts)).logits
        return sum(F.cross_entropy(logits[:, head], torch.tensor(classes))
                   for head, classes in zip(CLASSIFIER_HEADS, zip(*map(head_classes, labels))))

    return loss


def _clip_loss(model: Any, tokenizer: Any, plan: SceneTraining, seed: int
              ) -> Callable[[int], Any]:
    from harness.zoo.builders import clip_image_processor

    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(plan.images)]
    processor = clip_image_processor(IMAGE_SIZE)
    pixels = processor(images=[render(s, seed * plan.images + i) for i, s in enumerate(scenes)],
                       return_tensors="pt")["pixel_values"]

    def loss(step: int) -> Any:
        chosen = rng.sample(range(len(scenes)), plan.batch_size)
        texts = [sentence(scenes[i], rng).removesuffix(".") for i in chosen]
        out = model(pixel_values=pixels[chosen], return_loss=True, **framed(tokenizer, texts))
        return out.loss

    return loss


_LOSSES: dict[str, Callable[[Any, Any, SceneTraining, int], Callable[[int], Any]]] = {
    "lm": _lm_loss, "classifier": _classifier_loss, "clip": _clip_loss,
}

# Three training seeds each: an LM with byte-level BPE, an attribute classifier and a CLIP with
# CLIP's tokenizer family, and their twins reading the LM's tokenizer (the exact-gradient
# ceiling for FUSE).
MODELS = (
    ("scene-lm", "gpt2", "bytelevel", "GPT-2 trained on the scene world's sentences"),
    ("scene-classifier", "bert", "clip",
     "BERT-style classifier of a scene sentence's first object (colour x shape), CLIP tokenizer"),
    ("scene-classifier-bytelevel", "bert", "bytelevel",
     "scene-classifier reading scene-lm's tokenizer (exact gradients to its tokens)"),
    ("scene-clip", "clip", "clip", "CLIP trained contrastively on rendered scenes and captions"),
    ("scene-clip-bytelevel", "clip", "bytelevel",
     "scene-clip reading scene-lm's tokenizer (exact gradients to its tokens)"),
)
SEEDS = (0, 1, 2)
WIDTHS = {"gpt2": (16, 2), "bert": (48, 4), "clip": (48, 4)}  # width, heads
ROLE_OF = {"gpt2": "lm", "bert": "classifier", "clip": "clip"}


def training_for(role: str, tokenizer: str) -> SceneTraining:
    base = TRAINING[role]
    return SceneTraining(**{**asdict(base), "tokenizer": tokenizer})


RECIPES = tuple(
    ZooRecipe(name + (f"-seed{seed}" if seed else ""), architecture, f"scene-{tokenizer}", 0,
              width, 2, heads, heads, seed, f"{description} (training seed {seed})",
              training_for(ROLE_OF[architecture], tokenizer))
    for name, architecture, tokenizer, description in MODELS for seed in SEEDS
    for width, heads in [WIDTHS[architecture]])


def evaluation_scenes(count: int, seed: int) -> Iterator[Scene]:
    """Scenes for evaluation, drawn from their own generator (seed offset from training's)."""
    rng = random.Random(10_000 + seed)
    for _ in range(count):
        yield random_scene(rng)
