"""What a method and a task tell the host beside their numbers: typed records, stored flat.

A method fills `BuildContext.report` (a `MethodReport`) while it builds its LM; a task's
`score` fills `TaskContext.score_details` (a `ScoreDetails`). The host reads only their typed
fields; `facts` holds whatever else the plugin wants kept in the cell's record. Both are
stored as one flat JSON object (the typed fields that are set, beside the facts), the form
records have always had, so stored results read the same before and after.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

FACTS = "facts"

Flat = TypeVar("Flat", bound="_FlatRecord")


class _FlatRecord:
    """Typed fields plus a `facts` mapping, stored as one flat mapping."""

    facts: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the facts and every typed field that differs from its default."""
        typed = {f.name: getattr(self, f.name) for f in _typed_fields(type(self))
                 if getattr(self, f.name) != _default(f)}
        shadowed = sorted(set(typed) & set(self.facts))
        if shadowed:
            raise ValueError(f"{type(self).__name__}: facts {shadowed} shadow typed fields; "
                             "set the fields instead")
        return dict(self.facts) | typed

    def merge(self: Flat, other: Flat) -> None:
        """Take every typed field `other` sets, and its facts."""
        for spec in _typed_fields(type(self)):
            if getattr(other, spec.name) != _default(spec):
                setattr(self, spec.name, getattr(other, spec.name))
        self.facts.update(other.facts)

    @classmethod
    def from_dict(cls: type[Flat], data: Mapping[str, Any] | None) -> Flat:
        """A record from its stored form; keys that name no typed field become facts."""
        data = dict(data or {})
        names = {f.name for f in _typed_fields(cls)}
        typed = {k: data.pop(k) for k in list(data) if k in names}
        return cls(**typed, facts=data)  # type: ignore[call-arg]


def _typed_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != FACTS]


def _default(spec: dataclasses.Field[Any]) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


@dataclass
class MethodReport(_FlatRecord):
    """What a method reports about the LM it built; saved as the cell's `method_report`.

    trainable_params, total_params: parameters the method trained and the parameters its LM
        holds (every member of a pack counted); leaderboards plot them, the cost meter
        checks them against the models it saw run.
    train_tokens, train_flops, train_seconds, fit_cached: the training path's figures
        (`harness.training.fit` sets them); they enter the cell's cost.
    doc_shards: set by the host when the cell was evaluated in that many document shards.
    facts: anything else worth keeping (fusion weights, CALM's connections, a discovered
        prompt, the fit's losses); shown as stored, never interpreted by the host.
    """

    trainable_params: int | None = None
    total_params: int | None = None
    train_tokens: int | None = None
    train_flops: int | None = None
    train_seconds: float | None = None
    fit_cached: bool | None = None
    doc_shards: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreDetails(_FlatRecord):
    """What a task's `score` records beside its metrics; saved as the cell's `score_details`.

    headline_unavailable: why the headline metric is NaN (the cell is then reported failed,
        with this reason).
    caveats: sentences shown on the cell in every leaderboard (e.g. generated code ran with
        weak isolation).
    facts: anything else worth keeping and what a `CorpusMetric` recomputes from (sacrebleu
        signatures, per-document judge ratings or sandbox verdicts, metrics that could not
        be computed and why).
    """

    headline_unavailable: str | None = None
    caveats: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
