"""The zoo's scene world: grammar, rendering, and what its sentences name."""

from __future__ import annotations

import numpy
import pytest

from harness.zoo import scenes
from harness.zoo.scenes import Scene, Thing

RED_CIRCLE, BLUE_SQUARE = Thing("big", "red", "circle"), Thing("small", "blue", "square")


def centroid(image, colour: str) -> tuple[float, float]:
    pixels = numpy.asarray(image).astype(int)
    ys, xs = numpy.nonzero((numpy.abs(pixels - scenes.COLOURS[colour]).sum(axis=-1) < 30))
    assert len(xs), f"no {colour} pixel"
    return float(xs.mean()), float(ys.mean())


@pytest.mark.parametrize("relation, axis, sign", [("above", 1, -1), ("below", 1, 1),
                                                  ("left of", 0, -1), ("right of", 0, 1)])
def test_relations_are_drawn_where_the_caption_says(relation: str, axis: int, sign: int) -> None:
    scene = Scene((RED_CIRCLE, BLUE_SQUARE), relation)
    for seed in range(3):
        image = scenes.render(scene, seed)
        assert image.size == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)
        first, second = centroid(image, "red"), centroid(image, "blue")
        assert sign * (first[axis] - second[axis]) > 5


def test_rendering_is_seeded() -> None:
    scene = Scene((RED_CIRCLE,))
    assert scenes.render(scene, 1).tobytes() == scenes.render(scene, 1).tobytes()
    assert scenes.render(scene, 1).tobytes() != scenes.render(scene, 2).tobytes()


def test_captions_references_and_the_first_thing_named() -> None:
    scene = Scene((RED_CIRCLE, BLUE_SQUARE), "above")
    assert scene.caption() == "a big red circle above a small blue square"
    assert set(scene.references()) == {
        "a big red circle above a small blue square", "a red circle above a blue square",
        "a small blue square below a big red circle", "a blue square below a red circle"}
    assert scenes.first_thing("an image of a small blue square below a red circle.") == ("blue", "square")
    assert scenes.first_thing("an image of a big red") is None
    assert scenes.label_attributes(scene.label) == ("red", "circle")


def test_sentences_use_the_vocabulary_and_follow_the_worlds_habits() -> None:
    sentences = scenes.corpus(3000, seed=0)
    assert sentences == scenes.corpus(3000, seed=0)
    words = {w for s in sentences for w in s.removesuffix(".").split()}
    assert words == set(scenes.vocabulary())
    firsts = [scenes.first_thing(s) for s in sentences]
    red = [shape for colour, shape in firsts if colour == "red"]
    weights = scenes.SHAPE_GIVEN_COLOUR["red"]
    favourite = scenes.SHAPES[weights.index(max(weights))]
    assert red.count(favourite) > 2 * len(red) / len(scenes.SHAPES)  # not uniform: a habit
