"""What a judge is asked and how its answer is read: the judge prompts (FastChat's format),
ratings and preferences parsed from its text, and a rating's expected value from the
judge's probabilities over the scale."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from harness.data import read_jsonl_rows
from harness.errors import DataError, HarnessError

log = logging.getLogger(__name__)


Messages = list[dict[str, str]]


class JudgeError(HarnessError):
    """A judge call that failed for good (after its retries, or at once when retrying cannot help)."""


@dataclass(frozen=True)
class JudgePrompt:
    """One judge prompt in FastChat's judge_prompts.jsonl schema."""

    name: str
    type: Literal["single", "pairwise"]
    system_prompt: str
    prompt_template: str
    output_format: str

    def messages(self, **fields: str) -> Messages:
        try:
            user = self.prompt_template.format(**fields)
        except KeyError as exc:
            raise DataError(f"judge prompt {self.name!r} needs field {exc.args[0]!r}") from None
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": user}]


def read_judge_prompts(path: Path) -> dict[str, JudgePrompt]:
    rows = read_jsonl_rows(path, ("name", "type", "system_prompt", "prompt_template", "output_format"))
    prompts = {}
    for row in rows:
        if row["type"] not in ("single", "pairwise"):
            raise DataError(f"{path}: prompt {row['name']!r} has unknown type {row['type']!r}")
        prompts[row["name"]] = JudgePrompt(row["name"], row["type"], row["system_prompt"],
                                           row["prompt_template"], row["output_format"])
    return prompts


_DOUBLE_BRACKET_NUMBER = re.compile(r"\[\[(\d+\.?\d*)\]\]")


_SINGLE_BRACKET_NUMBER = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(judgment: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The `[[rating]]` of a single-answer judgment (FastChat falls back to `[rating]`);
    None when there is none or it lies outside the scale."""
    match = _DOUBLE_BRACKET_NUMBER.search(judgment) or _SINGLE_BRACKET_NUMBER.search(judgment)
    if not match:
        return None
    rating = float(match.group(1))
    return rating if low <= rating <= high else None


def parse_preference(judgment: str) -> Literal["A", "B", "tie"] | None:
    """`[[A]]`, `[[B]]` or `[[C]]` (a tie) of a pairwise judgment, checked in that order."""
    for tag, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if tag in judgment:
            return verdict  # type: ignore[return-value]
    return None


RATING_SCALE = (1, 10)


TOP_LOGPROBS = 20  # the most an OpenAI endpoint returns per position


RatingMode = Literal["probabilities", "text"]


def rating_distribution(log_scores: Mapping[int, float]) -> dict[int, float]:
    """Softmax over the ratings' log-scores (logits or log-probabilities: renormalising over
    the ratings makes the two the same)."""
    top = max(log_scores.values())
    weights = {rating: math.exp(score - top) for rating, score in log_scores.items()}
    total = sum(weights.values())
    return {rating: weight / total for rating, weight in sorted(weights.items())}


def expected_rating(probabilities: Mapping[int, float]) -> float:
    return sum(rating * probability for rating, probability in probabilities.items())


def rating_prefix(judgment: str) -> str:
    """The judge's text up to its rating position: through its first `[[`, or, when it
    wrote none, the whole text followed by a rating cue."""
    opening = judgment.find("[[")
    if opening >= 0:
        return judgment[:opening + 2]
    return judgment.rstrip() + "\nRating: [["


def candidate_log_scores(model: Any, prefix: list[int], candidates: Mapping[int, list[int]]
                         ) -> dict[int, float]:
    """log P(candidate tokens | prefix) for each rating, in one right-padded batch."""
    import torch

    rows = [prefix + tokens for tokens in candidates.values()]
    width = max(len(row) for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, :len(row)] = torch.tensor(row)
        mask[index, :len(row)] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    log_probs = logits.float().log_softmax(-1).cpu()
    scores = {}
    for index, (rating, tokens) in enumerate(candidates.items()):
        positions = range(len(prefix) - 1, len(prefix) - 1 + len(tokens))
        scores[rating] = float(sum(log_probs[index, p, t] for p, t in zip(positions, tokens)))
    return scores


def rating_from_top_logprobs(content: Sequence[Any], scale: tuple[int, int] = RATING_SCALE
                             ) -> dict[int, float] | None:
    """The rating distribution from an API answer's per-token `top_logprobs`, read at the
    token where the number after its first `[[` begins; None when there is no such
    position or none of its alternatives is a rating."""
    text = "".join(entry.token for entry in content)
    match = re.search(r"\[\[\s*(\d)", text)
    if match is None:
        return None
    start = 0
    for entry in content:
        end = start + len(entry.token)
        if start <= match.start(1) < end:
            scores: dict[int, float] = {}
            for alternative in entry.top_logprobs or []:
                value = alternative.token.strip().lstrip("[").strip()
                if value.isdigit() and scale[0] <= int(value) <= scale[1]:
                    rating = int(value)  # the same rating under two spellings adds up
                    scores[rating] = math.log(math.exp(scores.get(rating, -math.inf))
                                              + math.exp(alternative.logprob))
            return rating_distribution(scores) if scores else None
        start = end
    return None
