"""An lm-eval `LM` that puts a fixed text before every request of another one."""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM


class PrefixedLM(LM):
    """`inner` with `prefix` before each context (and before the scored text of rolling
    log-likelihoods, which becomes a log-likelihood given the prefix)."""

    def __init__(self, inner: LM, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def _prefixed(self, requests: list[Instance], request_type: str | None = None) -> list[Instance]:
        prefixed = []
        for request in requests:
            args = (self.prefix, *request.args) if request_type else \
                (self.prefix + request.args[0], *request.args[1:])
            prefixed.append(Instance(request_type or request.request_type, request.doc, args,
                                     request.idx, request.metadata))
        return prefixed

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[Any]:
        return self._cached("loglikelihood", requests,
                            self.inner.loglikelihood(self._prefixed(requests), disable_tqdm))

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[Any]:
        scored = self.inner.loglikelihood(self._prefixed(requests, "loglikelihood"), disable_tqdm)
        return self._cached("loglikelihood_rolling", requests, [logprob for logprob, _ in scored])

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        return self._cached("generate_until", requests,
                            self.inner.generate_until(self._prefixed(requests), disable_tqdm))

    def _cached(self, kind: str, requests: list[Instance], results: list[Any]) -> list[Any]:
        for request, result in zip(requests, results):
            self.cache_hook.add_partial(kind, request.args, result)
        return results
