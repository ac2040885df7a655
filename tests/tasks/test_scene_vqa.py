"""`scene_vqa`: deterministic splits of distinct scenes, questions the scene answers, images
rendered from the document (in memory for evaluation, as cached PNGs for training, the same
pixels), and exact-match scoring. No model runs (< 5 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from harness.contract import DataSource, TaskContext
from harness.tasks import scene_vqa
from harness.zoo import scenes


def _scene_key(doc: dict) -> str:
    return json.dumps([doc["things"], doc["relation"], doc["jitter"]])


def test_splits_are_deterministic_disjoint_and_answerable() -> None:
    test = scene_vqa.split_documents("test", 200, 0)
    assert test == scene_vqa.split_documents("test", 200, 0)
    assert test != scene_vqa.split_documents("test", 200, 1)
    train = scene_vqa.split_documents("train", 500, 0)
    assert not {_scene_key(d) for d in test} & {_scene_key(d) for d in train}
    assert {d["kind"] for d in test} == set(scene_vqa.KINDS)
    for doc in test:
        things = [scenes.Thing(*thing) for thing in doc["things"]]
        if doc["kind"] == "colour":
            [thing] = [t for t in things if f" {t.shape} " in doc["question"]]
            assert doc["answer"] == thing.colour
        elif doc["kind"] == "shape":
            [thing] = [t for t in things if f" {t.colour} " in doc["question"]]
            assert doc["answer"] == thing.shape
        else:
            first, second = things
            asked_first = doc["question"] == f"where is the {first.shape} ?"
            expected = doc["relation"] if asked_first else scenes.INVERSE[doc["relation"]]
            assert doc["answer"] == expected and doc["answer"] != "and"


def test_training_images_are_the_evaluation_images(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    options = scene_vqa.SceneVqaOptions(train_size=3, validation_size=2, test_size=2)
    context = TaskContext(options, DataSource("embedded"), tmp_path, None, 0)
    examples = scene_vqa.examples("train", context)
    documents = scene_vqa.split_documents("train", 3, 0)
    assert [e["prompt"] for e in examples] == [scene_vqa.prompt(d) for d in documents]
    assert all(e["prompt"].startswith("<image>") for e in examples)
    assert [e["target"] for e in examples] == [" " + d["answer"] for d in documents]
    for example, doc in zip(examples, documents):
        assert Path(example["image"]).is_relative_to(tmp_path)
        with Image.open(example["image"]) as stored:
            assert stored.convert("RGB").tobytes() == scene_vqa.image_of(doc).tobytes()
    assert scene_vqa.examples("train", context) == examples  # rendered once, named by content


@pytest.mark.parametrize("response, score", [
    ("red", 1.0), (" red ", 1.0), ("red.", 0.0), ("red circle", 0.0), ("left  of", 0.0)])
def test_answers_are_scored_by_exact_match(response: str, score: float) -> None:
    assert scene_vqa.judge({"answer": "red"}, response) == {"exact_match": score}
    assert scene_vqa.judge({"answer": "left of"}, " left  of ")["exact_match"] == 1.0
