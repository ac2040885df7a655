"""lm-eval's response cache, with what each response cost and without secrets.

lm-eval keeps every answered request in a SQLite file (`use_cache`), so a killed
evaluation resumes without asking the model again. Its answers come back free, so a resumed
cell would count no work for them. While a cell evaluates, the harness puts its own
subclass of lm-eval's `CachingLM` in place, whose store keeps with each response the work
(tokens, forward passes, FLOPs by model, extra work) the cell's meter counted for it, and
adds that work back to the meter when the response is served from the cache.

Responses answered by the same model calls (a batch; MMLU's choices scored from one
forward pass over their shared context) are written in one transaction once the model
moves on, so a kill never splits them: each group is either cached with its work, or
recomputed and counted then. A resumed cell thus counts exactly what the uninterrupted one
did. Text responses are redacted before they are stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

from harness.errors import redact
from harness.models import cost
from harness.results.records import PhaseCost, phase_cost

RESPONSE = "harness_response"  # marks a response stored with its cost


class MeteredResponses:
    """The SQLite mapping `CachingLM` and its cache hook read and write, keeping costs."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.accounted = cost.spent()  # the meter's reading at the last response
        self.work: dict[str, PhaseCost] = {}  # of each response answered here
        self.pending: dict[str, Any] = {}  # answered since the model last worked
        self.restored: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.pending or key in self.store

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            return self.pending[key]
        value = self.store[key]
        if not (isinstance(value, dict) and RESPONSE in value):
            return value  # stored by lm-eval itself, without its cost
        if key not in self.restored:  # a repeated request's work was stored once
            self.restored.add(key)
            work = phase_cost(value["cost"])
            cost.restore(work)
            self.accounted = cost.combined([self.accounted, work])
        return value[RESPONSE]

    def __setitem__(self, key: str, response: Any) -> None:
        now = cost.spent()
        work = cost.difference(now, self.accounted)
        if work.models or work.extra_flops:  # the model worked again: earlier answers are whole
            self.flush()
        self.accounted = now
        self.work[key] = cost.combined([self.work.get(key, PhaseCost()), work])
        self.pending[key] = redact(response) if isinstance(response, str) else response

    def flush(self) -> None:
        """Write the pending responses with their work, in one transaction."""
        if self.pending:
            self.store.update({key: {RESPONSE: response,
                                     "cost": dataclasses.asdict(self.work[key])}
                               for key, response in self.pending.items()})
            self.pending = {}

    def commit(self) -> None:
        self.flush()
        self.store.commit()

    def __getattr__(self, name: str) -> Any:  # close, ...
        if name == "store":  # not set yet
            raise AttributeError(name)
        return getattr(self.store, name)


def _metered_caching_lm() -> type:
    from lm_eval.api.model import CacheHook, CachingLM

    class MeteredCachingLM(CachingLM):
        def __init__(self, lm: Any, cache_db: str) -> None:
            super().__init__(lm, cache_db)
            self.dbdict: Any = MeteredResponses(self.dbdict)
            lm.set_cache_hook(CacheHook(self))  # the hook writes through the metered mapping

    return MeteredCachingLM


@contextlib.contextmanager
def metered_response_cache() -> Iterator[None]:
    """lm-eval's `use_cache` keeps costs while the block runs (one cell at a time)."""
    import lm_eval.api.model

    original = lm_eval.api.model.CachingLM
    setattr(lm_eval.api.model, "CachingLM", _metered_caching_lm())
    try:
        yield
    finally:
        setattr(lm_eval.api.model, "CachingLM", original)
