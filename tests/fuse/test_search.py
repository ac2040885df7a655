"""The searches on a toy objective whose gradient is exact: each token has a cost."""

from __future__ import annotations

import pytest
import torch

from harness.fuse._search import SearchConfig, search

VOCAB = 50


class TokenCosts:
    """L(ids) = sum of the tokens' costs: the one-hot gradient is exactly the cost row."""

    def __init__(self, seed: int = 0) -> None:
        self.cost = -torch.rand(VOCAB, generator=torch.Generator().manual_seed(seed))  # every token helps
        self.allowed = torch.ones(VOCAB, dtype=torch.bool)
        self.allowed[:5] = False  # e.g. special tokens: never placed
        self.evaluated = 0

    def losses(self, ids: torch.Tensor) -> torch.Tensor:
        self.evaluated += len(ids)
        return self.cost[ids].sum(dim=1)

    def gradients(self, ids: torch.Tensor) -> torch.Tensor:
        return self.cost.expand(*ids.shape, VOCAB).clone()

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(ids), ids.shape[1] + 1, VOCAB)


def best_tokens(objective: TokenCosts, count: int) -> float:
    return float(objective.cost[objective.allowed].min() * count)


def test_autodan_with_exact_gradients_finds_the_optimum() -> None:
    objective = TokenCosts()
    result = search(objective, SearchConfig(steps=3, candidates=4, beam_width=2), seed=0, placeholder_id=7)
    assert len(result.ids) == 3 and result.loss == pytest.approx(best_tokens(objective, 3))
    assert all(objective.allowed[i] for i in result.ids)
    assert result.step_losses == sorted(result.step_losses, reverse=True)  # each step adds a token
    assert result.evaluations == objective.evaluated


def test_gcg_with_exact_gradients_finds_the_optimum() -> None:
    objective = TokenCosts()
    config = SearchConfig(algorithm="gcg", steps=25, candidates=2, swaps=16, length=4)
    result = search(objective, config, seed=0, placeholder_id=7)
    assert len(result.ids) == 4 and result.loss == pytest.approx(best_tokens(objective, 4))


@pytest.mark.parametrize("algorithm", ["autodan", "gcg"])
def test_guidances_spend_the_same_budget_and_are_seeded(algorithm: str) -> None:
    config = {"algorithm": algorithm, "steps": 4, "candidates": 6, "swaps": 8, "length": 3}
    counts = set()
    for guidance in ("fuse", "none", "random"):
        first = search(TokenCosts(), SearchConfig(guidance=guidance, **config), 3, 7)
        again = search(TokenCosts(), SearchConfig(guidance=guidance, **config), 3, 7)
        assert (first.ids, first.loss) == (again.ids, again.loss)
        counts.add(len(first.step_losses))
    assert counts == {4}


def test_gradient_guidance_beats_random_guidance_when_the_gradient_is_exact() -> None:
    wins = 0
    for seed in range(5):
        config = dict(steps=4, candidates=3, beam_width=1)
        guided = search(TokenCosts(seed), SearchConfig(guidance="fuse", **config), seed, 7)
        blind = search(TokenCosts(seed), SearchConfig(guidance="random", **config), seed, 7)
        wins += guided.loss < blind.loss
    assert wins == 5
