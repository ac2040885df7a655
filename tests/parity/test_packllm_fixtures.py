"""PackLLM against what the official code computed (fixtures/packllm.safetensors, written by
regenerate_fixtures.py from a checkout of cmavro/PackLLM): fusion weights and fused logits
of every rule on fixed member logits, three copies of one member, MinED maps in both
directions, the reference-tokenizer choice and option scoring of the official protocol.
Runs without a checkout; test_packllm.py runs the same comparisons live when one is named."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
from parity.packllm_support import CASES, RULES, seeded_lm
from parity.parity_support import load_fixture

from harness.fusion._alignment import build_map, vocabulary
from harness.fusion._options import PackOptions
from harness.fusion._pack_lm import Member, Pack, PackLM
from harness.fusion._weights import GreedyGrid, Weighting, fuse

EOS = 0  # the replayed members' EOS (regenerate_fixtures.EOS)
NAMES = ("tiny-llama", "tiny-gpt2")
STALE = "rerun tests/parity/regenerate_fixtures.py with the official checkouts"


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return load_fixture("packllm")


def _mask(targets: torch.Tensor) -> torch.Tensor:
    """Our weight mask (positions whose target is not EOS) for the replayed vocabulary."""
    vocabulary_only = types.SimpleNamespace(eos_token_id=EOS)
    owner = types.SimpleNamespace(tokenizer=lambda family: vocabulary_only)
    return PackLM.weight_mask(owner, 0, targets, len(targets))


@pytest.mark.parametrize("fusion, members", CASES)
def test_weights_and_fused_logits_match_the_official_forward(fixture, fusion, members):
    tensors, _ = fixture
    ids, logits = tensors["rules/ids"], tensors["rules/logits"]
    for row in range(len(ids)):
        targets, member_logits = ids[row, 1:], logits[row, :members]
        weights = RULES[fusion](member_logits, targets, _mask(targets))
        torch.testing.assert_close(weights, tensors[f"rules/{fusion}/{members}/weights"][row],
                                   atol=3e-6, rtol=0)
        torch.testing.assert_close(fuse(member_logits, weights),
                                   tensors[f"rules/{fusion}/{members}/fused"][row],
                                   atol=2e-5, rtol=1e-5)


def test_greedy_ties_give_all_weight_to_the_last_copy(fixture):
    """Three copies of one member: all weight on the last copy, as the official scan gave
    (in float arithmetic it may pick another tied lambda; then the fused logits agree)."""
    tensors, _ = fixture
    ids, logits = tensors["rules/ids"], tensors["rules/logits"]
    for row, theirs in enumerate(tensors["ties/opt/weights"]):
        targets, copies = ids[row, 1:], logits[row, :1].expand(3, -1, -1)
        weights = GreedyGrid()(copies, targets, _mask(targets))
        assert weights.tolist() == [0, 0, 1]
        torch.testing.assert_close(fuse(copies, weights), fuse(copies, theirs), atol=2e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tokenizers(fixture) -> dict[str, Any]:
    """The zoo tokenizers, which must be those the fixtures were computed with."""
    from harness.contract import ModelRef
    from harness.models.loading import load_tokenizer

    _, meta = fixture
    loaded = {name: load_tokenizer(ModelRef(f"harness-zoo/{name}")) for name in NAMES}
    for name, tokenizer in loaded.items():
        assert vocabulary(tokenizer) == meta["vocabularies"][name], \
            f"harness-zoo/{name}'s vocabulary changed since the fixtures were made: {STALE}"
    return loaded


@pytest.mark.parametrize("direction", [NAMES, NAMES[::-1]])
def test_mined_maps_every_ordinary_token_as_officially(fixture, direction):
    tensors, meta = fixture
    reference, expert = direction
    theirs = tensors[f"mined/{reference}/{expert}"].tolist()
    vocabularies, specials = meta["vocabularies"], meta["special_ids"]
    ours = build_map(vocabularies[reference], vocabularies[expert], specials[reference],
                     specials[expert]).index.tolist()
    special = set(specials[reference].values())
    ordinary = [i for i in range(len(vocabularies[reference])) if i not in special]
    assert [ours[i] for i in ordinary] == [theirs[i] for i in ordinary]
    # special tokens map by role instead (our fix): the reference EOS is the expert's EOS
    assert ours[specials[reference]["eos_token_id"]] == specials[expert]["eos_token_id"]


@pytest.fixture(scope="module")
def mixed_pack(tokenizers) -> tuple[list[Any], list[Any]]:
    models = [seeded_lm("llama", len(tokenizers["tiny-llama"]), seed=11),
              seeded_lm("gpt2", len(tokenizers["tiny-gpt2"]), seed=12)]
    return models, [tokenizers[name] for name in NAMES]


def test_reference_tokenizer_choice_matches_select_tokenizer(fixture, mixed_pack):
    _, meta = fixture
    models, tokenizers = mixed_pack
    ours = PackLM(Pack([Member(f"m{k}", m, t) for k, (m, t) in enumerate(zip(models, tokenizers))],
                       "cpu"), Weighting(), PackOptions())
    choice = meta["reference_choice"]
    assert [ours._lowest_perplexity_family(text) for text in choice["texts"]] == choice["chosen"]
    assert 0 < sum(choice["chosen"]) < len(choice["texts"])  # both win somewhere: a real test


@pytest.mark.parametrize("fusion", ["sim", "opt"])
def test_official_protocol_scores_options_as_the_released_pipeline(fixture, mixed_pack, fusion):
    """Per option, the official `do_inference` loss (stored) against our scorer with
    protocol=official on the token ids their data pipeline produced, both tokenizers
    taking the reference role."""
    _, meta = fixture
    models, tokenizers = mixed_pack
    for reference in (0, 1):
        order = [reference, 1 - reference]
        pack = Pack([Member(f"m{k}", models[k], tokenizers[k]) for k in order], "cpu")
        ours = PackLM(pack, RULES[fusion], PackOptions(protocol="official", reference="0"))
        stored = meta["options"][str(reference)]
        for pairs, their_losses in zip(stored["pairs"], stored["losses"][fusion]):
            our_losses = [-score for score, _, _ in
                          ours._score(0, [tuple(p) for p in pairs], "sequence", mean=True)]
            assert our_losses == pytest.approx(their_losses, abs=2e-5)
