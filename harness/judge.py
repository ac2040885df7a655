"""LLM-as-a-judge machinery: judge backends, a content-addressed judgment cache, verdict parsing.

Two backends: any OpenAI-compatible chat-completions endpoint through the official
`openai` client, and a local transformers causal LM (a hub id, local folder or zoo model).
Both judge greedily (temperature 0 by default) and are identified by what changes their
output (backend, model, endpoint, temperature, token limit), never by the API key, which is
read from an environment variable at call time and appears in no result, cache or log.

A rating is read, by default, from the judge's probabilities rather than its text (G-Eval,
Liu et al. 2023): at the position where the judge writes the number inside `[[...]]`, the
probability of each rating 1..10, renormalised over the ratings, gives the expected rating.
A small judge that never writes a well-formed `[[rating]]` still yields a number. A local
judge is asked for these probabilities directly; an API judge through `logprobs` /
`top_logprobs`. Where none are available (an endpoint without logprobs, no `[[` in an API
answer), the `[[rating]]` parsed from the text is the fallback; the method used is recorded.

Every judgment is stored on disk under a key hashing that identity together with the exact
messages sent (judge prompt template, question, answers in their order, reference), one
small JSON file per judgment written atomically: a rerun or a crash loses nothing and no
judgment is paid for twice. Failed calls are not cached, so a rerun retries them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from harness.data import read_jsonl_rows
from harness.errors import DataError, HarnessError, UsageError, redact, redact_tree, register_secret
from harness.files import atomic_write_text, canonical_json

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


# ----------------------------------------------------------------------------- parsing

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


# ----------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Judgment:
    """A judge's text and, for a rating request where it could be read, the probability
    of each rating."""

    text: str
    probabilities: dict[int, float] | None = None


@dataclass(frozen=True)
class JudgeSettings:
    backend: Literal["openai", "local"]
    model: str
    base_url: str = ""  # openai backend; empty: the client's default (or $OPENAI_BASE_URL)
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key is never stored
    temperature: float = 0.0
    max_tokens: int = 2048
    timeout_s: float = 120.0
    retries: int = 6
    backoff_s: float = 2.0
    parallel: int = 4
    rating: RatingMode = "probabilities"  # how a rating request's number is read

    def identity(self) -> dict[str, Any]:
        """What determines a judgment, for cache keys and results (no key, no retry policy)."""
        base_url = self.base_url or (os.environ.get("OPENAI_BASE_URL", "")
                                     if self.backend == "openai" else "")
        return {"backend": self.backend, "model": self.model, "base_url": base_url,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "rating": self.rating}


class OpenAIJudge:
    """Chat completions on an OpenAI-compatible endpoint, with our own retry loop so that
    rate limits, server errors, timeouts and malformed bodies back off and retry."""

    def __init__(self, settings: JudgeSettings) -> None:
        try:
            import openai
        except ImportError:
            raise UsageError("the openai judge backend needs the openai client: "
                             "pip install openai") from None
        self.settings = settings
        self._openai = openai
        # Local servers (vLLM, llama.cpp) accept any key; a real endpoint answers 401.
        api_key = os.environ.get(settings.api_key_env) or "EMPTY"
        register_secret(api_key)
        self._client = openai.OpenAI(base_url=settings.base_url or None, api_key=api_key,
                                     max_retries=0, timeout=settings.timeout_s)

    def _retryable(self, exc: Exception) -> bool:
        openai = self._openai
        if isinstance(exc, (openai.RateLimitError, openai.InternalServerError,
                            openai.APIConnectionError, openai.APIResponseValidationError,
                            ValueError)):  # ValueError: a body that is not JSON
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409)

    def complete(self, messages: Messages, scale: tuple[int, int] | None = None) -> Judgment:
        attempts = self.settings.retries + 1
        probabilities = scale is not None and self.settings.rating == "probabilities"
        extra: dict[str, Any] = ({"logprobs": True, "top_logprobs": TOP_LOGPROBS}
                                 if probabilities else {})
        for attempt in range(attempts):
            try:
                response = self._client.chat.completions.create(
                    model=self.settings.model, messages=messages,  # type: ignore[arg-type]
                    temperature=self.settings.temperature, max_tokens=self.settings.max_tokens,
                    **extra)
                choice = response.choices[0]
                if choice.message.content is None:
                    raise ValueError("response without message content")
                logprobs = getattr(choice.logprobs, "content", None)
                return Judgment(choice.message.content,
                                rating_from_top_logprobs(logprobs, scale)
                                if probabilities and logprobs and scale else None)
            except Exception as exc:
                reason = _describe(exc)
                if not self._retryable(exc):
                    raise JudgeError(reason) from exc
                if attempt + 1 == attempts:
                    raise JudgeError(f"{reason} (gave up after {attempts} attempts)") from exc
                delay = min(self.settings.backoff_s * 2 ** attempt, 60.0)
                log.warning("judge call failed (%s); retrying in %.2g s", reason, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {first[:200]}"


class LocalJudge:
    """A local transformers causal LM, greedy; the chat template when the tokenizer has one."""

    def __init__(self, settings: JudgeSettings, device: str) -> None:
        from harness.models.loading import ModelRef, load_causal_lm

        self.settings = settings
        self.model, self.tokenizer = load_causal_lm(ModelRef.parse(settings.model, device=device))
        self._lock = threading.Lock()  # one generate at a time on one model

    def _prompt_ids(self, messages: Messages) -> Any:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text, return_tensors="pt")

    def complete(self, messages: Messages, scale: tuple[int, int] | None = None) -> Judgment:
        import torch

        with self._lock, torch.no_grad():
            inputs = self._prompt_ids(messages).to(self.model.device)
            room = self.model.config.max_position_embeddings - inputs["input_ids"].shape[1]
            if room <= 0:
                raise JudgeError("judge prompt longer than the local judge's context")
            if self.settings.temperature > 0:
                sampling = {"do_sample": True, "temperature": self.settings.temperature}
            else:
                sampling = {"do_sample": False}
            output = self.model.generate(**inputs, max_new_tokens=min(self.settings.max_tokens, room),
                                         pad_token_id=self.tokenizer.pad_token_id
                                         if self.tokenizer.pad_token_id is not None
                                         else self.tokenizer.eos_token_id, **sampling)
            prompt = inputs["input_ids"][0].tolist()
            text = self.tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True)
            if scale is None or self.settings.rating != "probabilities":
                return Judgment(text)
            return Judgment(text, rating_distribution(self._rating_scores(prompt, text, scale)))

    def _rating_scores(self, prompt: list[int], text: str, scale: tuple[int, int]
                       ) -> dict[int, float]:
        """log P("r]]") at the judge's rating position for every rating r: the closing
        brackets tell "1" from the start of "10"."""
        def encode(piece: str) -> list[int]:
            return self.tokenizer(piece, add_special_tokens=False)["input_ids"]

        prefix = (prompt + encode(rating_prefix(text)))
        limit = self.model.config.max_position_embeddings - 4  # room for "10]]"
        candidates = {r: encode(f"{r}]]") for r in range(scale[0], scale[1] + 1)}
        return candidate_log_scores(self.model, prefix[-limit:], candidates)


def make_judge(settings: JudgeSettings, device: str = "cpu") -> OpenAIJudge | LocalJudge:
    if settings.backend == "openai":
        return OpenAIJudge(settings)
    return LocalJudge(settings, device)


# ----------------------------------------------------------------------------- cache + batch


@dataclass(frozen=True)
class JudgeRequest:
    """One judgment to obtain; `label` names it in errors and results (e.g. "q12 pairwise AB")."""

    label: str
    prompt: str  # judge prompt name
    messages: Messages
    scale: tuple[int, int] | None = None  # a rating request: the ratings it allows


@dataclass
class JudgeOutcome:
    request: JudgeRequest
    key: str
    text: str | None = None
    error: str | None = None
    cached: bool = False
    probabilities: dict[int, float] | None = None  # of each rating, where they were read


CACHE_ENV = "HARNESS_JUDGE_CACHE"


class JudgmentCache:
    """Judgments on disk, one JSON file per content key, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> "JudgmentCache":
        """$HARNESS_JUDGE_CACHE, else `judgments/` in the harness cache."""
        from harness.settings import cache_root

        return cls(Path(os.environ.get(CACHE_ENV) or cache_root() / "judgments"))

    @staticmethod
    def key(judge: dict[str, Any], messages: Messages) -> str:
        return hashlib.sha256(canonical_json({"judge": judge, "messages": messages}).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Judgment | None:
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
            probabilities = record.get("rating_probabilities")
            return Judgment(record["judgment"], None if probabilities is None else
                            {int(k): float(v) for k, v in probabilities.items()})
        except (OSError, ValueError, KeyError, AttributeError):
            return None

    def put(self, key: str, judge: dict[str, Any], request: JudgeRequest, judgment: Judgment
            ) -> None:
        probabilities = (None if judgment.probabilities is None
                         else {str(k): v for k, v in judgment.probabilities.items()})
        record = {"key": key, "judge": judge, "prompt": request.prompt, "label": request.label,
                  "messages": request.messages, "judgment": judgment.text,
                  "rating_probabilities": probabilities, "created": time.time()}
        atomic_write_text(self._path(key), json.dumps(redact_tree(record), ensure_ascii=False,
                                                      indent=1))


def run_judgments(settings: JudgeSettings, cache: JudgmentCache, requests: Sequence[JudgeRequest],
                  device: str = "cpu") -> list[JudgeOutcome]:
    """Every request's judgment, from the cache or the judge; failures are returned per
    request (with the reason), never raised, so one bad question does not lose the rest.
    The judge is only set up when something is missing from the cache."""
    identity = settings.identity()
    outcomes = [JudgeOutcome(r, JudgmentCache.key(identity, r.messages)) for r in requests]
    pending = []
    for outcome in outcomes:
        cached = cache.get(outcome.key)
        if cached is None:
            pending.append(outcome)
        else:
            outcome.text, outcome.probabilities, outcome.cached = (
                cached.text, cached.probabilities, True)

    def obtain(outcome: JudgeOutcome) -> None:
        try:
            judgment = judge.complete(outcome.request.messages, outcome.request.scale)
        except JudgeError as exc:
            outcome.error = redact(str(exc))
            return
        # an answer quoting the request's headers holds the key: used and cached redacted
        judgment = dataclasses.replace(judgment, text=redact(judgment.text))
        outcome.text, outcome.probabilities = judgment.text, judgment.probabilities
        cache.put(outcome.key, identity, outcome.request, judgment)

    if pending:
        log.info("judging %d request(s) (%d cached)", len(pending), len(outcomes) - len(pending))
        judge = make_judge(settings, device)
        with ThreadPoolExecutor(max_workers=max(1, settings.parallel)) as pool:
            list(pool.map(obtain, pending))
    return outcomes

