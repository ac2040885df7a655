"""The `instructed` LM: delegates to an lm-eval LM after prefixing each context."""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM


class InstructedLM(LM):
    def __init__(self, inner: LM, instruction: str) -> None:
        super().__init__()
        self.inner = inner
        self.instruction = instruction.rstrip() + "\n\n"

    def _prefixed(self, requests: list[Instance]) -> list[Instance]:
        for request in requests:
            context, *rest = request.arguments
            request.arguments = (self.instruction + context, *rest)
        return requests

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return self.inner.loglikelihood(self._prefixed(requests))

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        return self.inner.loglikelihood_rolling(requests)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        return self.inner.generate_until(self._prefixed(requests))

    def __getattr__(self, name: str) -> Any:  # tokenizer_name, chat templates, ...
        return getattr(self.__dict__["inner"], name)
