"""LLM-as-a-judge machinery: judge backends, a content-addressed judgment cache, verdict parsing.

Two backends: any OpenAI-compatible chat-completions endpoint through the official
`openai` client, and a local transformers causal LM (a hub id, local folder or zoo model).
Both judge greedily (temperature 0 by default) and are identified by what changes their
output (backend, model, endpoint, temperature, token limit), never by the API key, which is
read from an environment variable at call time and appears in no result, cache or log.

Every judgment is stored on disk under a key hashing that identity together with the exact
messages sent (judge prompt template, question, answers in their order, reference), one
small JSON file per judgment written atomically: a rerun or a crash loses nothing and no
judgment is paid for twice. Failed calls are not cached, so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from harness.data import read_jsonl_rows
from harness.errors import DataError, HarnessError, UsageError
from harness.store import atomic_write_text, canonical_json

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


# ----------------------------------------------------------------------------- backends


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

    def identity(self) -> dict[str, Any]:
        """What determines a judgment, for cache keys and results (no key, no retry policy)."""
        base_url = self.base_url or (os.environ.get("OPENAI_BASE_URL", "")
                                     if self.backend == "openai" else "")
        return {"backend": self.backend, "model": self.model, "base_url": base_url,
                "temperature": self.temperature, "max_tokens": self.max_tokens}


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
        self._client = openai.OpenAI(base_url=settings.base_url or None, api_key=api_key,
                                     max_retries=0, timeout=settings.timeout_s)

    def _retryable(self, exc: Exception) -> bool:
        openai = self._openai
        if isinstance(exc, (openai.RateLimitError, openai.InternalServerError,
                            openai.APIConnectionError, openai.APIResponseValidationError,
                            ValueError)):  # ValueError: a body that is not JSON
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409)

    def complete(self, messages: Messages) -> str:
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                response = self._client.chat.completions.create(
                    model=self.settings.model, messages=messages,
                    temperature=self.settings.temperature, max_tokens=self.settings.max_tokens)
                content = response.choices[0].message.content
                if content is None:
                    raise ValueError("response without message content")
                return content
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
        from harness.models import ModelRef, load_causal_lm

        self.settings = settings
        self.model, self.tokenizer = load_causal_lm(ModelRef.parse(settings.model, device=device))
        self._lock = threading.Lock()  # one generate at a time on one model

    def _prompt_ids(self, messages: Messages) -> Any:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text, return_tensors="pt")

    def complete(self, messages: Messages) -> str:
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
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


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


@dataclass
class JudgeOutcome:
    request: JudgeRequest
    key: str
    text: str | None = None
    error: str | None = None
    cached: bool = False


CACHE_ENV = "HARNESS_JUDGE_CACHE"


class JudgmentCache:
    """Judgments on disk, one JSON file per content key, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> "JudgmentCache":
        """$HARNESS_JUDGE_CACHE, else `judgments/` in the harness cache."""
        from harness.zoo import cache_root

        return cls(Path(os.environ.get(CACHE_ENV) or cache_root() / "judgments"))

    @staticmethod
    def key(judge: dict[str, Any], messages: Messages) -> str:
        return hashlib.sha256(canonical_json({"judge": judge, "messages": messages}).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["judgment"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, judge: dict[str, Any], request: JudgeRequest, judgment: str) -> None:
        record = {"key": key, "judge": judge, "prompt": request.prompt, "label": request.label,
                  "messages": request.messages, "judgment": judgment, "created": time.time()}
        atomic_write_text(self._path(key), json.dumps(record, ensure_ascii=False, indent=1))


def run_judgments(settings: JudgeSettings, cache: JudgmentCache, requests: Sequence[JudgeRequest],
                  device: str = "cpu") -> list[JudgeOutcome]:
    """Every request's judgment, from the cache or the judge; failures are returned per
    request (with the reason), never raised, so one bad question does not lose the rest.
    The judge is only set up when something is missing from the cache."""
    identity = settings.identity()
    outcomes = [JudgeOutcome(r, JudgmentCache.key(identity, r.messages)) for r in requests]
    pending = []
    for outcome in outcomes:
        outcome.text = cache.get(outcome.key)
        outcome.cached = outcome.text is not None
        if not outcome.cached:
            pending.append(outcome)

    def obtain(outcome: JudgeOutcome) -> None:
        try:
            outcome.text = judge.complete(outcome.request.messages)
        except JudgeError as exc:
            outcome.error = str(exc)
            return
        cache.put(outcome.key, identity, outcome.request, outcome.text)

    if pending:
        log.info("judging %d request(s) (%d cached)", len(pending), len(outcomes) - len(pending))
        judge = make_judge(settings, device)
        with ThreadPoolExecutor(max_workers=max(1, settings.parallel)) as pool:
            list(pool.map(obtain, pending))
    return outcomes

