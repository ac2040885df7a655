"""`scene_vqa`: questions about rendered scenes, answered in a word or two (AdaLink's claim).

The scene world (`harness.zoo.scenes`: one or two coloured shapes, related by above / below
/ left of / right of / and, drawn by Pillow at 32 px) asked three kinds of question, each
answered by a word (or two) and scored by exact match:

- colour: "what colour is the square ?" -> "red" (a shape the scene shows once);
- shape: "what shape is the red thing ?" -> "square" (a colour the scene shows once);
- relation: "where is the circle ?" -> "above", "below", "left of" or "right of" (two
  things of different shapes in a spatial relation: where the asked one is, relative to
  the other).

The zoo's `scene-vlm` was pretrained to caption these scenes ("an image of a big red
circle above a small blue square.") and has never seen a question: what it knows about a
scene, it can only say as a caption. Adapting it to answer is the task. Every answer is
words the captions use, so the model can already say them; the questions' own words it has
never read.

The documents are generated from `seed` in every data mode: scenes drawn with the world's
habits from one generator per split (train, validation, test), so no image is in two
splits; each document keeps its scene and jitter, and its image is rendered from them
(lm-eval's `doc_to_image`). Training examples carry the image as a PNG file, rendered once
into the harness cache (`<cache>/scene_vqa/`, named by content). Greedy decoding up to 4
tokens; `exact_match` (the headline) compares the whitespace-normalised answer with the
expected words.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.api import (SCENE_INVERSE, Capability, LmEvalPlan, Metric, TaskContext, TaskSpec,
                         at_least, cache_root, dataset_dict, hookimpl, option, random_scene,
                         render_scene, scene_from_parts)

KINDS = ("colour", "shape", "relation")
SPLITS = ("train", "validation", "test")
IMAGE_PLACEHOLDER = "<image>"  # lm-eval puts the model's image token in its place


@dataclass(frozen=True)
class SceneVqaOptions:
    train_size: int = option(2000, "training questions (one scene each)")
    validation_size: int = option(200, "validation questions")
    test_size: int = option(200, "test questions")
    seed: int = option(0, "draws the scenes, their jitter and the questions")
    max_gen_toks: int = option(4, "token budget per answer")

    def __post_init__(self) -> None:
        at_least(self, train_size=1, validation_size=1, test_size=1, max_gen_toks=1)


def question(scene: Any, rng: random.Random) -> tuple[str, str, str] | None:
    """(kind, question, answer) about `scene`, the kind drawn among those it can answer."""
    things = scene.things
    shapes = [t.shape for t in things]
    colours = [t.colour for t in things]
    asked: dict[str, tuple[str, str]] = {}
    unique_shapes = [t for t in things if shapes.count(t.shape) == 1]
    if unique_shapes:
        thing = rng.choice(unique_shapes)
        asked["colour"] = (f"what colour is the {thing.shape} ?", thing.colour)
    unique_colours = [t for t in things if colours.count(t.colour) == 1]
    if unique_colours:
        thing = rng.choice(unique_colours)
        asked["shape"] = (f"what shape is the {thing.colour} thing ?", thing.shape)
    if len(things) == 2 and scene.relation != "and" and shapes[0] != shapes[1]:
        first, second = things
        if rng.random() < 0.5:  # where the first thing is, relative to the second
            asked["relation"] = (f"where is the {first.shape} ?", scene.relation)
        else:
            asked["relation"] = (f"where is the {second.shape} ?", SCENE_INVERSE[scene.relation])
    if not asked:
        return None
    kind = rng.choice(sorted(asked))
    return (kind, *asked[kind])


def split_documents(split: str, size: int, seed: int) -> list[dict[str, Any]]:
    """`size` documents of one split, each from its own scene (the split's own generator)."""
    rng = random.Random(f"scene_vqa-{seed}-{split}")
    documents: list[dict[str, Any]] = []
    while len(documents) < size:
        scene = random_scene(rng)
        asked = question(scene, rng)
        jitter = rng.randrange(2**31)
        if asked is None:
            continue
        kind, text, answer = asked
        documents.append({"kind": kind, "question": text, "answer": answer,
                          "things": [[t.size, t.colour, t.shape] for t in scene.things],
                          "relation": scene.relation, "jitter": jitter})
    return documents


def load_documents(options: SceneVqaOptions, **_: Any) -> Any:
    sizes = {"train": options.train_size, "validation": options.validation_size,
             "test": options.test_size}
    return dataset_dict({split: split_documents(split, sizes[split], options.seed)
                         for split in SPLITS})


def image_of(doc: dict[str, Any]) -> Any:
    return render_scene(scene_from_parts(doc["things"], doc["relation"]), doc["jitter"])


def doc_to_image(doc: dict[str, Any]) -> list[Any]:
    return [image_of(doc)]


def judge(doc: dict[str, Any], response: str) -> dict[str, float]:
    return {"exact_match": float(" ".join(response.split()) == doc["answer"])}


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return judge(doc, results[0])


def prompt(doc: dict[str, Any]) -> str:
    return IMAGE_PLACEHOLDER + doc["question"]


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: SceneVqaOptions = ctx.options
    config = {
        "task": "scene_vqa",
        "custom_dataset": partial(load_documents, options),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_image": doc_to_image,
        "doc_to_text": prompt,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": options.max_gen_toks,
                              "do_sample": False},
        "process_results": process_results,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                         "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    return LmEvalPlan(tasks=[config], num_fewshot=0, uses_stock_tasks=False)


def image_file(doc: dict[str, Any]) -> Path:
    """The document's image as a PNG in the harness cache, rendered on first use (named by
    the scene and jitter, so every run and fit reads the same file)."""
    identity = json.dumps([doc["things"], doc["relation"], doc["jitter"]])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    path = cache_root() / "scene_vqa" / digest[:2] / f"{digest}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{random.getrandbits(32):08x}.tmp")
        image_of(doc).save(staging, format="PNG")
        staging.replace(path)
    return path


def examples(split: str, ctx: TaskContext) -> list[dict[str, str]]:
    options: SceneVqaOptions = ctx.options
    size = options.train_size if split == "train" else options.validation_size
    return [{"prompt": prompt(doc), "target": " " + doc["answer"], "image": str(image_file(doc))}
            for doc in split_documents(split, size, options.seed)]


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="scene_vqa",
        description="Questions about rendered synthetic scenes (colour, shape, relation), "
                    "short answers; exact match.",
        headline=Metric("exact_match,none", "exact match"),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.VISION, Capability.GENERATION}),
        local_format="none: the scenes and questions are generated from the seed in every "
                     "data mode",
        options=SceneVqaOptions,
        training_examples=partial(examples, "train"),
        validation_examples=partial(examples, "validation"),
        generated_data=True,
    )]
