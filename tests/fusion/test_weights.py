"""Exact properties of the weighting rules (research notes, PackLLM 1.7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.errors import UsageError
from harness.fusion._weights import (ExpertContrast, GreedyGrid, PerplexitySoftmax, TopOne,
                                     Weighting, first_minimum, fuse, log_perplexities, ranked)

K, T, V = 4, 9, 50


def fused_nll(logits: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor,
              mask: torch.Tensor) -> float:
    """Mean NLL of the fused model over the masked positions."""
    return F.cross_entropy(fuse(logits[:, mask], weights), targets[mask]).item()


def random_case(seed: int = 0, members: int = K):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(members, T, V, generator=generator) * 3
    targets = torch.randint(0, V, (T,), generator=generator)
    return logits, targets, torch.ones(T, dtype=torch.bool)


@pytest.mark.parametrize("members", [2, 4])
def test_sim_on_identical_members_is_uniform_and_returns_their_logits(members):
    logits, targets, mask = random_case(members=1)
    pack = logits.expand(members, T, V).clone()
    weights = PerplexitySoftmax()(pack, targets, mask)
    assert torch.equal(weights, torch.full((members,), 1.0 / members))
    assert torch.equal(fuse(pack, weights), logits[0])


def test_opt_on_identical_members_returns_their_logits():
    logits, targets, mask = random_case(members=1)
    pack = logits.expand(3, T, V).clone()
    weights = GreedyGrid()(pack, targets, mask)
    # exact ties take lambda = 0 at every step: all weight on the last member (official rule)
    assert weights.tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(fuse(pack, weights), logits[0])


@pytest.mark.parametrize("seed", range(6))
def test_members_equal_but_for_rounding_tie_in_member_order(seed):
    """Copies of one model whose losses differ by rounding noise only (how identical
    members come out of batched float kernels): opt puts all weight on the last copy and
    top1 on the first, whichever copy rounding favours."""
    logits, targets, mask = random_case(seed, members=1)
    generator = torch.Generator().manual_seed(seed)
    pack = logits * (1 + 1e-7 * torch.randn(3, T, V, generator=generator))
    losses = log_perplexities(pack, targets, mask)
    assert 0 < float(losses.max() - losses.min()) < 5e-7 * float(losses.min())  # by rounding
    assert GreedyGrid()(pack, targets, mask).tolist() == [0.0, 0.0, 1.0]
    assert TopOne()(pack, targets, mask).tolist() == [1.0, 0.0, 0.0]


def test_ties_rank_in_member_order_beyond_the_tolerance_by_loss():
    assert ranked(torch.tensor([2.0, 1.0 + 2.4e-7, 1.0, 3.0])) == [1, 2, 0, 3]
    assert ranked(torch.tensor([2.0, 1.0 + 2e-6, 1.0, 3.0])) == [2, 1, 0, 3]
    assert first_minimum(torch.tensor([8.0 + 2e-6, 8.0, 9.0])) == 0  # relative: 4e-6 at 8
    assert first_minimum(torch.tensor([8.0 + 8e-6, 8.0, 9.0])) == 1


@pytest.mark.parametrize("rule", [PerplexitySoftmax(), PerplexitySoftmax(tau=0.3), GreedyGrid(),
                                  TopOne(), Weighting()])
@pytest.mark.parametrize("seed", range(5))
def test_weights_are_a_distribution(rule, seed):
    weights = rule(*random_case(seed))
    assert bool((weights >= 0).all())
    assert torch.allclose(weights.sum(), torch.tensor(1.0), atol=1e-6)


def test_sim_is_softmax_of_negative_log_perplexity():
    logits, targets, mask = random_case(3)
    nll = torch.stack([F.cross_entropy(m, targets) for m in logits])
    assert torch.allclose(PerplexitySoftmax(tau=2.0)(logits, targets, mask), torch.softmax(-nll / 2.0, 0))


@pytest.mark.parametrize("seed", range(8))
def test_opt_never_fits_the_prompt_worse_than_top1(seed):
    logits, targets, mask = random_case(seed)
    opt = fused_nll(logits, GreedyGrid()(logits, targets, mask), targets, mask)
    top1 = fused_nll(logits, TopOne()(logits, targets, mask), targets, mask)
    assert opt <= top1 + 1e-6


def test_top1_picks_the_lowest_perplexity_and_ensemble_is_the_mean():
    logits, targets, mask = random_case(4)
    best = int(torch.argmin(log_perplexities(logits, targets, mask)))
    assert TopOne()(logits, targets, mask).tolist() == [float(k == best) for k in range(K)]
    assert torch.allclose(fuse(logits, Weighting()(logits, targets, mask)), logits.mean(0), atol=1e-6)


def test_masked_positions_do_not_move_the_weights():
    logits, targets, _ = random_case(5)
    mask = torch.ones(T, dtype=torch.bool)
    mask[[2, 6]] = False  # e.g. positions whose target is EOS
    changed = logits.clone()
    changed[:, [2, 6]] = torch.randn(K, 2, V) * 10
    for rule in (PerplexitySoftmax(), GreedyGrid(), TopOne()):
        assert torch.equal(rule(logits, targets, mask), rule(changed, targets, mask))


def test_no_scored_position_gives_uniform_weights():
    logits, targets, _ = random_case(6)
    empty = torch.zeros(T, dtype=torch.bool)
    for rule in (PerplexitySoftmax(), GreedyGrid(), TopOne()):
        assert torch.equal(rule(logits, targets, empty), torch.full((K,), 1.0 / K))


@pytest.mark.parametrize("rule", [PerplexitySoftmax(), GreedyGrid(), TopOne()])
@pytest.mark.parametrize("seed", range(4))
def test_weights_ignore_a_constant_added_to_a_members_logits(rule, seed):
    """Per-position constants leave every member's softmax (so its perplexity) unchanged,
    and leave the fused softmax unchanged for any weights (so opt's grid losses)."""
    logits, targets, mask = random_case(seed)
    shifted = logits.clone()
    shifted[1] += torch.randn(T, 1, generator=torch.Generator().manual_seed(seed)) * 5
    shifted[3] -= 7.0
    torch.testing.assert_close(rule(shifted, targets, mask), rule(logits, targets, mask),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("rule", [PerplexitySoftmax(), GreedyGrid(), TopOne()])
@pytest.mark.parametrize("seed", range(4))
def test_weights_follow_a_members_logit_scale(rule, seed):
    """Fusion is in logit space, so scale matters: dividing the worst member's logits by 20
    flattens it to nearly uniform (NLL -> log V), better than the other random members
    here, and its weight must rise (to 1 for top-1)."""
    logits, targets, mask = random_case(seed)
    worst = int(torch.argmax(log_perplexities(logits, targets, mask)))
    scaled = logits.clone()
    scaled[worst] /= 20
    flattened = log_perplexities(scaled, targets, mask)
    assert int(torch.argmin(flattened)) == worst  # the premise: it now knows the prompt best
    before, after = rule(logits, targets, mask), rule(scaled, targets, mask)
    assert float(after[worst]) > float(before[worst]) + 0.5
    if isinstance(rule, TopOne):
        assert float(after[worst]) == 1.0


@pytest.mark.parametrize("alpha", [1.0, 0.37, None])
def test_dexperts_with_expert_equal_to_anti_expert_is_the_base(alpha):
    logits, targets, mask = random_case(8, members=2)
    pack = torch.stack([logits[0], logits[0], logits[1]])
    weights = ExpertContrast(alpha=alpha)(pack, targets, mask)
    assert torch.equal(fuse(pack, weights), logits[1])


def test_dexperts_opt_fits_alpha_on_its_grid():
    logits, targets, mask = random_case(9, members=3)
    weights = ExpertContrast(alpha=None, steps=200)(logits, targets, mask)
    alpha = float(weights[0])
    assert weights.tolist() == pytest.approx([alpha, -alpha, 1.0])
    grid = [i / 200 for i in range(201)]
    best = min(grid, key=lambda a: fused_nll(logits, ExpertContrast.contrast(a, logits), targets, mask))
    assert fused_nll(logits, weights, targets, mask) <= fused_nll(
        logits, ExpertContrast.contrast(best, logits), targets, mask) + 1e-6


def test_dexperts_needs_three_members():
    with pytest.raises(UsageError, match="exactly 3"):
        ExpertContrast()(*random_case(0, members=2))
