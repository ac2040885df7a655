"""CALM against the official google-deepmind/calm code (methods.md 6.3 item 2).

Set HARNESS_PARITY_CALM to an untracked checkout of github.com/google-deepmind/calm (never
committed here); without it the module skips. Their `CALM` composes two tiny zoo Llamas
that share a tokenizer; its cross-attention hooks' weights (projection, multi-head
attention, post-attention RMSNorm, all randomised so nothing is at its initial value) are
copied into our `layout=deepmind`, and the composed logits must agree. Then the leak:
changing the last token moves their logits at earlier positions, never ours in the default
causal layout.
"""

from __future__ import annotations

import pytest
import torch
from calm.calm_support import ANCHOR, AUGMENTING, load_pair
from parity.parity_support import import_official, official_checkout

from harness.plugins.calm.config import CalmOptions
from harness.plugins.calm.model import compose
from harness.zoo import zoo_path

CHECKOUT = official_checkout("HARNESS_PARITY_CALM", "google-deepmind/calm", "model/calm.py")
CONNECTIONS = [(1, 1), (3, 3)]  # (anchor layer, augmenting layer), their order
HEADS = 2


@pytest.fixture(scope="module")
def theirs():
    (official,) = import_official(CHECKOUT, ["model.calm"])
    config = official.CALMConfig(anchor_model=str(zoo_path(ANCHOR)),
                                 aug_model=str(zoo_path(AUGMENTING)),
                                 connections=[list(c) for c in CONNECTIONS], num_heads=HEADS)
    model = official.CALM(config).eval()
    for hook in model.cross_attention_hooks:
        hook.forward = _tuple_outputs(hook.forward)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.cross_attention_hooks.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def _tuple_outputs(forward):
    """Their hook indexes a decoder layer's output as a tuple (transformers 4.42); layers of
    transformers 5 return the hidden states alone. Hand theirs a 1-tuple and unwrap, so
    their arithmetic runs unchanged."""
    def adapted(module, inputs, output):
        if isinstance(output, torch.Tensor):
            return forward(module, inputs, (output,))[0]
        return forward(module, inputs, output)
    return adapted


def ours(layout: str, theirs) -> torch.nn.Module:
    anchor, augmenting, _ = load_pair()
    calm = compose(anchor, augmenting, CalmOptions(
        layout=layout, num_heads=HEADS, connections=",".join(f"{a}:{m}" for a, m in CONNECTIONS)))
    for mine, official in zip(calm.connections, theirs.cross_attention_hooks):
        state = {k: v for k, v in official.state_dict().items()
                 if mine.post_attention_layernorm is not None or "layernorm" not in k}
        mine.load_state_dict(state)
    return anchor.eval()


def tokens(length: int = 12) -> torch.Tensor:
    return torch.randint(4, 600, (2, length), generator=torch.Generator().manual_seed(1))


def test_deepmind_layout_reproduces_the_official_logits(theirs):
    ids = tokens()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        actual = ours("deepmind", theirs)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    difference = float((expected - actual).abs().max())
    print(f"\nCALM parity (layout=deepmind vs official): max |logit difference| = {difference:.3g}"
          f" over {expected.numel()} logits, scale {float(expected.abs().max()):.3g}")
    assert torch.allclose(expected, actual, atol=1e-5, rtol=1e-5)


def test_the_official_code_leaks_the_next_token_and_the_causal_layout_does_not(theirs):
    ids = tokens()
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 600
    mask = torch.ones_like(ids)  # their hooks insist on one (and then leave it unused)
    causal = ours("causal", theirs)
    with torch.no_grad():
        official_moved = (theirs(input_ids=ids, attention_mask=mask).logits[:, :-1]
                          - theirs(input_ids=changed, attention_mask=mask).logits[:, :-1]).abs().max()
        ours_moved = (causal(input_ids=ids).logits[:, :-1]
                      - causal(input_ids=changed).logits[:, :-1]).abs().max()
    print(f"\nchanging the last token moves earlier logits: official {float(official_moved):.3g}, "
          f"ours (causal) {float(ours_moved):.3g}")
    assert official_moved > 1e-3
    assert ours_moved == 0
