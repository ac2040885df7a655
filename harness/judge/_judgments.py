"""Running judgments: each request's verdict computed once and kept in a content-addressed
cache (one small JSON file per judgment, written atomically, no secret in it), so a rerun
or a crash loses nothing and no request is judged twice."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.content_cache import ContentCache, content_key
from harness.errors import redact, redact_tree
from harness.judge._backends import JudgeSettings, Judgment, make_judge
from harness.judge._verdicts import JudgeError, Messages, log


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


class JudgmentCache:
    """Judgments on disk, one JSON file per content key (a `ContentCache` entry)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._store = ContentCache(self.root, suffix=".json", fan_out=True,
                                   damage=(OSError, ValueError, KeyError, AttributeError))

    @classmethod
    def default(cls) -> "JudgmentCache":
        """`judgments/` in the harness cache ($HARNESS_CACHE)."""
        from harness.settings import cache_root

        return cls(cache_root() / "judgments")

    @staticmethod
    def key(judge: dict[str, Any], messages: Messages) -> str:
        return content_key({"judge": judge, "messages": messages})

    def get(self, key: str) -> Judgment | None:
        return self._store.load(key, _read_judgment)

    def put(self, key: str, judge: dict[str, Any], request: JudgeRequest, judgment: Judgment
            ) -> None:
        probabilities = (None if judgment.probabilities is None
                         else {str(k): v for k, v in judgment.probabilities.items()})
        record = {"key": key, "judge": judge, "prompt": request.prompt, "label": request.label,
                  "messages": request.messages, "judgment": judgment.text,
                  "rating_probabilities": probabilities, "created": time.time()}
        text = json.dumps(redact_tree(record), ensure_ascii=False, indent=1)
        self._store.publish(key, lambda path: path.write_text(text, encoding="utf-8"))


def _read_judgment(path: Path) -> Judgment:
    record = json.loads(path.read_text(encoding="utf-8"))
    probabilities = record.get("rating_probabilities")
    return Judgment(record["judgment"], None if probabilities is None else
                    {int(k): float(v) for k, v in probabilities.items()})


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
