"""Discrete search over the primary model's tokens, guided by FUSE gradients or not.

Two searches from the released code, both with a beam (the `beam_width` lowest exact
objectives over all candidates of a step survive) and best-so-far tracking:

- AutoDAN (default): grow the text left to right, one token per step. Each beam's
  candidates are the `candidates` best tokens by  -gradient + logit_weight * logits, the
  gradient of the objective with respect to a one-hot placeholder appended to the beam and
  the logits the primary model gives the next token (its readability prior).
- GCG: a fixed-length text; each step takes the `candidates` best tokens per position by
  -gradient, samples `swaps` single-token substitutions per beam (uniformly; the released
  sampler weights later positions and lower ranks higher) and keeps the best.

`guidance` says where candidates come from: "fuse" as above; "none" from the primary
model's logits alone (AutoDAN: the next-token logits; GCG: the logits at each position);
"random" uniformly over the allowed vocabulary. Every guidance evaluates the same number of
candidates per step, so their objectives compare at an equal search budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

Guidance = Literal["fuse", "none", "random"]


class Objective(Protocol):
    """What a search minimises, over rows of primary-model token ids (n, L)."""

    allowed: torch.Tensor  # (V,) bool: tokens a search may place

    def losses(self, ids: torch.Tensor) -> torch.Tensor:
        """(n,) the exact objective of each row (no gradient)."""

    def gradients(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, L, V) d objective / d one-hot(ids): the first-order change of each row's
        objective when a position's token is swapped."""

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, L + 1, V) the primary model's logits for every position and the next one."""


@dataclass(frozen=True)
class SearchConfig:
    """The released code's defaults: AutoDAN, 16 steps, 256 candidates, beam 4."""

    algorithm: Literal["autodan", "gcg"] = "autodan"
    guidance: Guidance = "fuse"
    steps: int = 16
    candidates: int = 256
    beam_width: int = 4
    logit_weight: float = 1.0
    length: int = 16  # GCG's fixed number of tokens
    swaps: int = 512  # GCG's sampled substitutions per beam
    eval_batch: int = 64  # rows per exact-objective forward pass (speed only)

    def __post_init__(self) -> None:
        for name in ("steps", "candidates", "beam_width", "length", "swaps", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.algorithm not in ("autodan", "gcg"):
            raise ValueError(f"algorithm must be 'autodan' or 'gcg', got {self.algorithm!r}")
        if self.guidance not in ("fuse", "none", "random"):
            raise ValueError(f"guidance must be 'fuse', 'none' or 'random', got {self.guidance!r}")


@dataclass
class SearchResult:
    ids: list[int]  # the best text found (primary-model token ids)
    loss: float
    step_losses: list[float] = field(default_factory=list)  # best beam's objective per step
    evaluations: int = 0  # exact objective evaluations (after removing duplicates)
    seconds: float = 0.0


def search(objective: Objective, config: SearchConfig, seed: int, placeholder_id: int,
           start: torch.Tensor | None = None) -> SearchResult:
    """Run the configured search. `placeholder_id` is AutoDAN's dummy next token (the
    released code uses index 0, GPT-2's "!") and GCG's initial token (its "." init);
    `start` (1, L) seeds the beam (AutoDAN default: empty; GCG: `length` placeholders)."""
    generator = torch.Generator().manual_seed(seed)
    device = objective.allowed.device
    if start is None:
        width = 0 if config.algorithm == "autodan" else config.length
        start = torch.full((1, width), placeholder_id, dtype=torch.long, device=device)
    step = _autodan_candidates if config.algorithm == "autodan" else _gcg_candidates
    beams, result, started = start.to(device), SearchResult([], float("inf")), time.perf_counter()
    for _ in range(config.steps):
        candidates = torch.unique(step(objective, beams, config, generator, placeholder_id), dim=0)
        losses = evaluate(objective, candidates, config.eval_batch)
        order = torch.argsort(losses, stable=True)[:config.beam_width]
        beams, beam_losses = candidates[order], losses[order]
        result.evaluations += len(candidates)
        result.step_losses.append(float(beam_losses[0]))
        if beam_losses[0] < result.loss:
            result.ids, result.loss = beams[0].tolist(), float(beam_losses[0])
    result.seconds = time.perf_counter() - started
    return result


def evaluate(objective: Objective, ids: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([objective.losses(chunk) for chunk in ids.split(batch)])


def _scores(objective: Objective, config: SearchConfig, generator: torch.Generator,
            logits: torch.Tensor, guided: torch.Tensor | None) -> torch.Tensor:
    """Candidate scores (higher is better) by the configured guidance, disallowed tokens at
    -inf; `guided` is the FUSE score, computed only when the guidance is "fuse"."""
    if config.guidance == "random":
        scores = torch.rand(logits.shape, generator=generator).to(logits.device)
    elif config.guidance == "none":
        scores = logits
    else:
        assert guided is not None, "the FUSE score is computed when guidance is fuse"
        scores = guided
    return scores.masked_fill(~objective.allowed, float("-inf"))


def _top(objective: Objective, config: SearchConfig, scores: torch.Tensor) -> torch.Tensor:
    return scores.topk(min(config.candidates, int(objective.allowed.sum())), dim=-1).indices


def _autodan_candidates(objective: Objective, beams: torch.Tensor, config: SearchConfig,
                        generator: torch.Generator, placeholder_id: int) -> torch.Tensor:
    logits = objective.logits(beams)[:, -1].float()
    guided = None
    if config.guidance == "fuse":
        placeholder = torch.full((len(beams), 1), placeholder_id, dtype=beams.dtype, device=beams.device)
        gradient = objective.gradients(torch.cat([beams, placeholder], dim=1))[:, -1].float()
        guided = -gradient + config.logit_weight * logits
    top = _top(objective, config, _scores(objective, config, generator, logits, guided))
    grown = beams.repeat_interleave(top.shape[1], dim=0)
    return torch.cat([grown, top.reshape(-1, 1)], dim=1)


def _gcg_candidates(objective: Objective, beams: torch.Tensor, config: SearchConfig,
                    generator: torch.Generator, placeholder_id: int) -> torch.Tensor:
    b, length = beams.shape
    logits = objective.logits(beams)[:, :length].float()
    guided = -objective.gradients(beams).float() if config.guidance == "fuse" else None
    top = _top(objective, config, _scores(objective, config, generator, logits, guided))
    n = b * config.swaps
    beam = torch.arange(b, device=beams.device).repeat_interleave(config.swaps)
    position = torch.randint(length, (n,), generator=generator).to(beams.device)
    rank = torch.randint(top.shape[-1], (n,), generator=generator).to(beams.device)
    swapped = beams.repeat_interleave(config.swaps, dim=0)
    swapped[torch.arange(n, device=beams.device), position] = top[beam, position, rank]
    return swapped
