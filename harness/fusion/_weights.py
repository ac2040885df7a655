"""Weighting rules of logit fusion: each maps a pack's aligned logits to one weight per member.

Every rule sees `logits[k, i]`, member k's next-token logits at position i in the reference
vocabulary, `targets[i]`, the token that follows, and `mask[i]`, whether position i counts
(PackLLM drops positions whose target is the reference EOS). The fused logits are then
sum_k w_k * logits[k] for every rule, DExperts included (w = (alpha, -alpha, 1)).

Ties: losses within `TIE_TOLERANCE` of each other, relative (below 1 nat: absolute), are
equal. Members that compute the same function (a checkpoint packed twice) give losses that
differ in their last bits, by how the machine's kernels round (measured: up to 1.2e-7
relative on 2 cores), so an exact comparison would pick among them by rounding noise. Tied
members rank in member order and a tied grid scan takes its first point, so every machine
picks the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.errors import UsageError
from harness.models.cost import add_extra_flops

IGNORED = -100  # a target index no vocabulary uses
# About four float32 roundings of a loss: above the noise of identical members, below the
# closest real grid minima measured (1.4e-6 relative apart).
TIE_TOLERANCE = 5e-7


def _slack(loss: float, tolerance: float) -> float:
    return tolerance * max(abs(loss), 1.0)


def first_minimum(losses: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> int:
    """Index of the first loss tied with the smallest."""
    smallest = float(losses.min())
    return int(torch.nonzero(losses <= smallest + _slack(smallest, tolerance))[0])


def ranked(losses: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> list[int]:
    """Indices by ascending loss; a run of losses each tied with the next is ranked by
    index."""
    values = losses.tolist()
    by_loss = sorted(range(len(values)), key=lambda k: (values[k], k))
    order: list[int] = []
    tied = by_loss[:1]
    for previous, current in zip(by_loss, by_loss[1:]):
        if values[current] - values[previous] > _slack(values[previous], tolerance):
            order += sorted(tied)
            tied = []
        tied.append(current)
    return order + sorted(tied)


def log_perplexities(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-member mean NLL (natural log) over the masked positions; zeros when none count."""
    if not bool(mask.any()):
        return logits.new_zeros(logits.shape[0])
    scored = targets.masked_fill(~mask, IGNORED)  # no copy of the [T, V] logits
    return torch.stack([F.cross_entropy(member.float(), scored, ignore_index=IGNORED)
                        for member in logits])


def fuse(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k] * logits[k], accumulated in member order (exact for cancelling terms).

    Counted as the method's extra work: a multiply and an add per member logit."""
    add_extra_flops("fusion", 2 * logits.numel())
    weights = weights.to(device=logits.device, dtype=torch.float32)
    fused = weights[0] * logits[0].float()
    for weight, member in zip(weights[1:], logits[1:]):
        fused = fused + weight * member.float()
    return fused


def _mixture(kept: torch.Tensor, new: torch.Tensor, keep: float) -> torch.Tensor:
    # The grid's end points return an operand untouched, so lambda = 1 reproduces the
    # current fusion bit for bit (opt's "never worse than top-1" guarantee is exact).
    if keep == 1.0:
        return kept
    if keep == 0.0:
        return new
    return keep * kept + (1.0 - keep) * new


def _grid(steps: int) -> list[float]:
    return [i / steps for i in range(steps + 1)]


def _uniform(count: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((count,), 1.0 / count, dtype=torch.float32, device=like.device)


@dataclass(frozen=True)
class Weighting:
    """Base rule: uniform weights (the `ensemble` baseline)."""

    name = "ensemble"

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        return _uniform(logits.shape[0], logits)

    def check_members(self, count: int) -> None:
        """Raise UsageError when the rule cannot weight `count` members."""


@dataclass(frozen=True)
class PerplexitySoftmax(Weighting):
    """PackLLM-sim: lambda = softmax(-logPPL / tau) (official code: tau = 1)."""

    tau: float = 1.0
    name = "packllm-sim"

    def __call__(self, logits, targets, mask):
        if not bool(mask.any()):
            return _uniform(logits.shape[0], logits)
        return torch.softmax(-log_perplexities(logits, targets, mask) / self.tau, dim=0)


@dataclass(frozen=True)
class GreedyGrid(Weighting):
    """PackLLM-opt: members added best-perplexity first, each mixed in at the grid lambda
    minimising the fused prompt NLL; ties go to the smallest lambda (the newcomer), as the
    official code's strict `<` scan from 0 does. Ties are within `TIE_TOLERANCE` (module
    docstring): tied members are added in member order, so K copies of one model put all
    weight on the last copy, on every machine."""

    steps: int = 20
    name = "packllm-opt"

    def __call__(self, logits, targets, mask):
        count = logits.shape[0]
        if not bool(mask.any()):
            return _uniform(count, logits)
        order = ranked(log_perplexities(logits, targets, mask))
        scored, wanted = logits[:, mask].float(), targets[mask]
        weights = torch.zeros(count, dtype=torch.float64)
        weights[order[0]] = 1.0
        current = scored[order[0]]
        grid = _grid(self.steps)
        for member in order[1:]:
            losses = torch.stack([F.cross_entropy(_mixture(current, scored[member], keep), wanted)
                                  for keep in grid])  # stays on the device: one sync per member
            keep = grid[first_minimum(losses)]  # first minimum = strict `<` scan
            current = _mixture(current, scored[member], keep)
            weights *= keep
            weights[member] += 1.0 - keep
        return weights.to(device=logits.device, dtype=torch.float32)


@dataclass(frozen=True)
class TopOne(Weighting):
    """Top1-PPL: all weight on the member with the lowest prompt perplexity (the first of
    members tied within `TIE_TOLERANCE`)."""

    name = "top1-ppl"

    def __call__(self, logits, targets, mask):
        count = logits.shape[0]
        if not bool(mask.any()):
            return _uniform(count, logits)
        best = ranked(log_perplexities(logits, targets, mask))[0]
        weights = torch.zeros(count, dtype=torch.float32, device=logits.device)
        weights[best] = 1.0
        return weights


@dataclass(frozen=True)
class ExpertContrast(Weighting):
    """DExperts over [expert, anti-expert, base]: base + alpha * (expert - anti-expert).

    `alpha=None` is DExperts-opt: alpha on a `steps + 1` point grid in [0, 1] chosen by the
    fused prompt NLL (ties to the smallest alpha); with no scored position it falls back
    to `fallback_alpha`.
    """

    alpha: float | None = 1.0
    steps: int = 200
    fallback_alpha: float = 1.0
    name = "dexperts"

    def check_members(self, count: int) -> None:
        if count != 3:
            raise UsageError(f"dexperts takes exactly 3 models [expert, anti-expert, base], got {count}")

    def __call__(self, logits, targets, mask):
        self.check_members(logits.shape[0])
        alpha = self.alpha
        if alpha is None:
            if bool(mask.any()):
                expert, anti, base = logits[:, mask].float()
                shift, wanted, grid = expert - anti, targets[mask], _grid(self.steps)
                losses = torch.stack([F.cross_entropy(base + a * shift, wanted) for a in grid])
                alpha = grid[int(torch.argmin(losses))]
            else:
                alpha = self.fallback_alpha
        return self.contrast(alpha, logits)

    @staticmethod
    def contrast(alpha: float, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor([alpha, -alpha, 1.0], dtype=torch.float32, device=like.device)
