"""Judge backends: an OpenAI-compatible endpoint, or a local causal LM scored on the
rating scale, chosen by the judge settings."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from harness.errors import UsageError, register_secret
from harness.judge._verdicts import (TOP_LOGPROBS, JudgeError, Messages, RatingMode,
                                     candidate_log_scores, log, rating_distribution,
                                     rating_from_top_logprobs, rating_prefix)


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
        from harness.contract import ModelRef
        from harness.models.loading import load_causal_lm

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
