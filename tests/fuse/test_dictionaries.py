"""The dictionaries an adapter can be fitted on."""

from __future__ import annotations

import pytest

from harness.errors import DataError
from harness.fuse._words import read_dictionary
from harness.zoo import scenes


def test_scene_world_dictionary_holds_the_worlds_words() -> None:
    dictionary = read_dictionary("scene-world", seed=0)
    assert sorted(dictionary.words) == scenes.vocabulary() and dictionary.source == "scene-world"
    assert {"red", "circle", "above", "image"} <= set(dictionary.words)


def test_wordfreq_dictionary_is_a_maintained_frequency_list() -> None:
    pytest.importorskip("wordfreq")
    dictionary = read_dictionary("wordfreq:3000", seed=0)
    assert len(dictionary.words) > 2500 and {"the", "house", "water"} <= set(dictionary.words)
    assert len(read_dictionary("wordfreq", seed=0).words) > 30000  # enough for a 1024-wide fit


def test_a_bad_wordfreq_count_is_a_one_line_error() -> None:
    with pytest.raises(DataError, match="positive integer"):
        read_dictionary("wordfreq:many", seed=0)
