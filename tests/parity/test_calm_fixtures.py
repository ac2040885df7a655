"""CALM against what the official google-deepmind/calm code computed
(fixtures/calm.safetensors, written by regenerate_fixtures.py from a checkout) on the
seeded pair of calm_parity_support: `layout=deepmind` reproduces the official logits, and
the official code's leak (changing the last token moves earlier logits) is in the stored
numbers, while the default causal layout has none. Runs without a checkout; test_calm.py
runs live on the zoo pair when one is named."""

from __future__ import annotations

import pytest
import torch
from parity.calm_parity_support import CONNECTIONS, HEADS, fixed_tokens, seeded_hook_, seeded_pair
from parity.parity_support import load_fixture

from harness.plugins.calm.config import CalmOptions
from harness.plugins.calm.model import compose


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("calm")


def ours(layout: str, hook_parameters: list[list[str]]) -> torch.nn.Module:
    anchor, augmenting = seeded_pair()
    calm = compose(anchor, augmenting, CalmOptions(
        layout=layout, num_heads=HEADS, connections=",".join(f"{a}:{m}" for a, m in CONNECTIONS)))
    for index, (connection, theirs) in enumerate(zip(calm.connections, hook_parameters)):
        names = sorted(name for name, _ in connection.named_parameters())
        if layout == "deepmind":  # the official hook's parameters, name for name
            assert names == theirs
        seeded_hook_(connection, index)
    return anchor.eval()


def test_deepmind_layout_reproduces_the_official_logits(fixture):
    tensors, meta = fixture
    model = ours("deepmind", meta["hook_parameters"])
    with torch.no_grad():
        for name, ids in zip(("logits", "changed_logits"), fixed_tokens()):
            actual = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            torch.testing.assert_close(actual, tensors[name], atol=1e-5, rtol=1e-5)


def test_the_official_code_leaks_the_next_token_and_the_causal_layout_does_not(fixture):
    tensors, meta = fixture
    official_moved = (tensors["logits"][:, :-1] - tensors["changed_logits"][:, :-1]).abs().max()
    causal = ours("causal", meta["hook_parameters"])
    ids, changed = fixed_tokens()
    with torch.no_grad():
        ours_moved = (causal(input_ids=ids).logits[:, :-1]
                      - causal(input_ids=changed).logits[:, :-1]).abs().max()
    assert official_moved > 1e-3
    assert ours_moved == 0
