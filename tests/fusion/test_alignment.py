"""MinED vocabulary maps: the paper's three rules, the fixed bugs, pruning and the disk cache."""

from __future__ import annotations

import random

import numpy as np
import pytest

from harness.fusion._alignment import (build_map, cached_map, nearest_tokens, space_marker,
                                       swap_marker, vocabulary)


def test_shared_tokens_map_to_themselves_and_markers_are_swapped():
    reference = ["<unk>", "<s>", "</s>", "▁the", "cat", "▁dog", "▁▁", "▁", "zzz"]
    expert = ["<|endoftext|>", "cat", "Ġthe", "Ġdog", "the", "zz", "Ġ", "ĠĠ", "dog"]
    mapping = build_map(reference, expert, {"eos_token_id": 2}, {"eos_token_id": 0})
    assert mapping.index[4] == 1  # "cat" exists in both
    assert mapping.index[3] == 2 and mapping.index[5] == 3  # "▁the" -> "Ġthe"
    assert mapping.index[7] == 6  # a lone marker is swapped too
    assert mapping.index[2] == 0  # EOS maps to the expert's EOS by role
    assert mapping.index[8] == 5  # "zzz": nearest by edit distance
    assert mapping.counts == {"special": 1, "exact": 1, "marker": 3, "edit-distance": 4}


def test_doubled_markers_are_not_swapped():
    assert swap_marker("▁▁", "▁", "Ġ") == "▁▁"
    assert swap_marker("▁x", "▁", "Ġ") == "Ġx"
    assert swap_marker("▁x", "▁", None) == "▁x"


def test_markers_are_read_from_the_vocabulary():
    assert space_marker(["▁a", "▁b", "c"]) == "▁"
    assert space_marker(["Ġa", "b"]) == "Ġ"
    assert space_marker(["a", "b"]) is None


def test_real_token_id_zero_is_kept():
    mapping = build_map(["a", "b"], ["b", "a"])
    assert mapping.index.tolist() == [1, 0]


def test_pruned_search_equals_the_full_first_argmin():
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(0)
    word = lambda: "".join(rng.choices("abcde", k=rng.randint(1, 9)))  # noqa: E731 - many ties
    choices, queries = [word() for _ in range(800)], [word() for _ in range(300)]
    full = process.cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32).argmin(1)
    assert np.array_equal(nearest_tokens(queries, choices), full)


@pytest.fixture(scope="module")
def zoo_tokenizers():
    from harness.contract import ModelRef
    from harness.models.loading import load_tokenizer

    return (load_tokenizer(ModelRef("harness-zoo/tiny-llama")),
            load_tokenizer(ModelRef("harness-zoo/tiny-gpt2")))


def test_zoo_map_keeps_shared_tokens_and_is_cached_on_disk(zoo_tokenizers, tmp_path):
    from harness.fusion import _alignment as alignment

    llama, gpt2 = zoo_tokenizers
    alignment._MEMORY.clear()  # an earlier test's map of the same pair would skip the disk
    mapping = cached_map(llama, gpt2, tmp_path)
    reference, expert = vocabulary(llama), vocabulary(gpt2)
    for token_id, token in enumerate(reference):
        if token in expert and token not in ("<s>", "</s>", "<unk>", "<pad>"):
            assert expert[mapping.index[token_id]] == token
    assert expert[mapping.index[reference.index("▁the")]] == "Ġthe"
    assert mapping.index[llama.eos_token_id] == gpt2.eos_token_id
    assert len(list(tmp_path.glob("*.npz"))) == 1
    alignment._MEMORY.clear()
    again = cached_map(llama, gpt2, tmp_path)
    assert np.array_equal(again.index, mapping.index) and again.counts == mapping.counts


def test_same_tokenizer_members_bypass_the_map(zoo_tokenizers):
    from harness.fusion._pack_lm import Member, Pack

    llama, gpt2 = zoo_tokenizers
    pack = Pack([Member("a", None, llama), Member("b", None, llama), Member("c", None, gpt2)], "cpu")
    assert pack.index(0, 1) is None and pack.index(0, 0) is None
    assert pack.index(0, 2) is not None and len(pack.index(0, 2)) == len(llama)


def test_nearest_token_beyond_every_search_window_is_still_the_nearest() -> None:
    # All candidates differ in length by more than the first windows: the last window must
    # compare true distances (8, 8, 6, 9), not distances capped at the window.
    from harness.fusion._alignment import nearest_tokens

    choices = ["vwxyzvwx", "uuuuuuuu", "abxxxxxx", "zzzzzzzzz"]
    assert list(nearest_tokens(["abcde"], choices)) == [2]


LLAMA_SPECIALS = {"unk_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
LLAMA_STYLE = ["<unk>", "<s>", "</s>", "<pad>", "▁a"]


@pytest.mark.parametrize("roles", [("bos_token_id", "eos_token_id", "unk_token_id"),
                                   ("eos_token_id", "unk_token_id", "bos_token_id"),
                                   ("pad_token_id", "eos_token_id")])
def test_an_id_holding_several_roles_maps_to_the_experts_eos(roles):
    reference = ["<|endoftext|>", "Ġa"]  # GPT-2 style: one id is EOS, BOS and UNK (or PAD)
    mapping = build_map(reference, LLAMA_STYLE, dict.fromkeys(roles, 0), LLAMA_SPECIALS)
    assert mapping.index[0] == 2 and mapping.counts["special"] == 1


def test_eos_used_as_pad_maps_to_the_experts_eos_not_its_pad():
    mapping = build_map(LLAMA_STYLE, ["x", "</s>", "<pad>", "<s>", "▁a"],
                        {**LLAMA_SPECIALS, "pad_token_id": 2},
                        {"eos_token_id": 1, "pad_token_id": 2, "bos_token_id": 3})
    assert mapping.index[2] == 1 and mapping.index[1] == 3


def test_zoo_gpt2_reference_maps_endoftext_to_the_llama_eos(zoo_tokenizers, tmp_path):
    llama, gpt2 = zoo_tokenizers
    assert gpt2.bos_token_id == gpt2.eos_token_id == gpt2.unk_token_id  # the case at stake
    mapping = cached_map(gpt2, llama, tmp_path)
    assert mapping.index[gpt2.eos_token_id] == llama.eos_token_id
    assert cached_map(llama, gpt2, tmp_path).index[llama.eos_token_id] == gpt2.eos_token_id


def test_zoo_reference_padding_with_eos_keeps_eos(zoo_tokenizers, tmp_path):
    import copy

    llama, _ = zoo_tokenizers
    padded_with_eos = copy.deepcopy(llama)
    padded_with_eos.pad_token = padded_with_eos.eos_token
    mapping = cached_map(padded_with_eos, llama, tmp_path)  # same vocabulary, other roles
    assert mapping.index[llama.eos_token_id] == llama.eos_token_id
    assert mapping.index[llama.pad_token_id] == llama.pad_token_id  # "<pad>": exact match
