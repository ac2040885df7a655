"""The typed record of one cell: what the runner writes, reporting and plugins read.

One `CellRecord` per finished cell (`result.json`) and per failed attempt
(`failed/*.json`). The JSON form is `CellRecord.to_dict()`; `CellRecord.from_dict` reads it
back, migrating records written by older harness versions (schema 1 kept the row under
"method" and had no row key), and turns any malformed file into one `DataError` line.

Importing this module stays cheap: leaderboards are built from records alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from harness.contract.reports import MethodReport, ScoreDetails
from harness.errors import DataError

SCHEMA_VERSION = 2
NEWER_SCHEMA = "is newer than this harness reads"  # such a record is kept, never replaced
Status = Literal["ok", "n/a", "failed"]
STATUSES = ("ok", "n/a", "failed")


def row_key(method: str, models: list[Mapping[str, Any]], options: Mapping[str, Any]) -> str:
    """The identity of a leaderboard row: method, base models (id, revision, dtype asked
    for) and every option value. Rows that differ in anything but their label differ here."""
    payload = {"method": method,
               "models": [{k: m.get(k) for k in ("id", "revision", "dtype")} for m in models],
               "options": dict(options)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Score:
    """A metric value and its standard error; None where it could not be computed (NaN
    never reaches a file: strict JSON has no NaN)."""

    value: float | None
    stderr: float | None = None

    def __post_init__(self) -> None:
        for name in ("value", "stderr"):
            number = getattr(self, name)
            if isinstance(number, float) and math.isnan(number):
                object.__setattr__(self, name, None)

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, (int, float))


@dataclass(frozen=True)
class RowInfo:
    """The leaderboard row a cell belongs to."""

    key: str
    method: str
    label: str
    options: dict[str, Any]
    models: list[dict[str, Any]]
    capabilities: list[str] = field(default_factory=list)
    trains: bool = False

    @property
    def model_ids(self) -> list[str]:
        return [m["id"] for m in self.models]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    options: dict[str, Any]
    headline_key: str
    headline_label: str
    higher_is_better: bool = True
    data: str = ""  # the data source, e.g. "embedded" or "local:/data"


@dataclass(frozen=True)
class CodeInfo:
    """Which code computed a cell: the plugin's version and providing distribution (both
    in the fingerprint) and a hash of its source files (provenance only: `harness status`
    flags cells whose plugin source has changed since)."""

    plugin: str
    version: str
    distribution: str
    source_sha256: str


@dataclass(frozen=True)
class ModelCost:
    """What one model computed in one phase of a cell. `parameters` counts the weights that
    enter a matrix product at every position (all but the input-embedding lookup; a tied
    output head counts once), so `flops` = 2 * parameters * (prompt + generated tokens)."""

    model: str
    parameters: int
    prompt_tokens: int  # positions computed without a KV cache: prompts, scored texts
    generated_tokens: int  # positions computed on top of a KV cache: one per decoding step
    forward_passes: int
    flops: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens


@dataclass(frozen=True)
class PhaseCost:
    """The models' work in one phase (inference, build, scoring) plus the method's extra
    work outside the models (e.g. {"fusion": FLOPs of PackLLM's weighted logit sums})."""

    models: list[ModelCost] = field(default_factory=list)
    extra_flops: dict[str, int] = field(default_factory=dict)
    flops: int = 0

    @property
    def forward_passes(self) -> int:
        return sum(m.forward_passes for m in self.models)

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.models)


@dataclass(frozen=True)
class CellCost:
    """What a cell cost: FLOPs by phase and model, wall times, peak memory, training budget.

    `inference` is lm-eval's evaluation (what a reader of the leaderboard pays per
    document), `build` every model call while the method was built (training steps, a
    teacher's logits), `scoring` the task's scorer (a local judge). Training FLOPs are
    estimated by `harness.models.cost.training_flops`."""

    inference: PhaseCost
    build: PhaseCost
    scoring: PhaseCost
    documents: int
    inference_flops_per_document: int | None
    wall_s: dict[str, float]  # build (fit included), fit, evaluate, score
    peak_memory_bytes: int | None
    peak_memory_kind: str  # "cuda_max_allocated" or "process_max_rss" (whole process so far)
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    training_tokens: int | None = None
    training_flops: int | None = None
    fit_cached: bool | None = None


@dataclass
class CellRecord:
    status: Status
    fingerprint: str
    row: RowInfo
    task: TaskInfo
    identity: dict[str, Any]
    finished_at: str
    schema: int = SCHEMA_VERSION
    reason: str = ""  # why a cell is n/a or failed
    traceback: str = ""
    headline: Score | None = None
    metrics: dict[str, Score] = field(default_factory=dict)
    score_details: ScoreDetails = field(default_factory=ScoreDetails)
    n_samples: int | None = None
    lm_eval: dict[str, Any] = field(default_factory=dict)
    method_report: MethodReport = field(default_factory=MethodReport)
    timings: dict[str, float] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    limit: int | None = None
    git_commit: str | None = None
    code: dict[str, CodeInfo] = field(default_factory=dict)  # "method", "task"
    # What the numbers were computed with (scores can drift with these; lm-eval #1645):
    # batch size asked for and used, model dtypes, attention implementations, device.
    numerics: dict[str, Any] = field(default_factory=dict)
    cost: CellCost | None = None  # absent in records written before costs were counted
    # Set by `harness rescore`: the cell whose stored samples these metrics were recomputed
    # from (its fingerprint, results root, finish time, task options and task code).
    rescored_from: dict[str, Any] = field(default_factory=dict)

    @property
    def has_score(self) -> bool:
        return self.status == "ok" and self.headline is not None and self.headline.is_number

    @property
    def data_description(self) -> str:
        return self.task.data if self.limit is None else f"{self.task.data} (limit {self.limit})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"score_details": self.score_details.to_dict(),
                                           "method_report": self.method_report.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str = "record") -> "CellRecord":
        """A record from its JSON form (any schema this harness ever wrote)."""
        if not isinstance(data, dict):
            raise DataError(f"{source}: not a cell record (expected a JSON object, got "
                            f"{type(data).__name__})")
        try:
            if data.get("schema", 1) == 1:
                data = _migrate_v1(data)
            return _build(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{source}: malformed cell record ({type(exc).__name__}: {exc})") from None


def _build(data: dict[str, Any]) -> CellRecord:
    if data["schema"] != SCHEMA_VERSION:
        newer = isinstance(data["schema"], int) and data["schema"] > SCHEMA_VERSION
        raise ValueError(f"schema {data['schema']!r} "
                         + (NEWER_SCHEMA if newer else "is unknown to this harness")
                         + f" ({SCHEMA_VERSION})")
    if data["status"] not in STATUSES:
        raise ValueError(f"status {data['status']!r}")
    if not isinstance(data["fingerprint"], str):
        raise TypeError("fingerprint must be a string")

    def score(value: Any) -> Score | None:
        if value is None:
            return None
        number, stderr = value["value"], value.get("stderr")
        for part in (number, stderr):
            if part is not None and (isinstance(part, bool) or not isinstance(part, (int, float))):
                raise TypeError(f"score {part!r}")
        return Score(None if number is None else float(number), stderr)

    metrics = {str(k): score(v) for k, v in (data.get("metrics") or {}).items()}
    return CellRecord(
        status=data["status"], fingerprint=data["fingerprint"],
        row=RowInfo(**data["row"]), task=TaskInfo(**data["task"]),
        identity=dict(data.get("identity") or {}), finished_at=str(data.get("finished_at", "")),
        reason=str(data.get("reason") or ""), traceback=str(data.get("traceback") or ""),
        headline=score(data.get("headline")),
        metrics={k: v for k, v in metrics.items() if v is not None},
        score_details=ScoreDetails.from_dict(data.get("score_details")), n_samples=data.get("n_samples"),
        lm_eval=dict(data.get("lm_eval") or {}), method_report=MethodReport.from_dict(data.get("method_report")),
        timings=dict(data.get("timings") or {}), hardware=dict(data.get("hardware") or {}),
        seed=data.get("seed"), limit=data.get("limit"), git_commit=data.get("git_commit"),
        code={k: CodeInfo(**v) for k, v in (data.get("code") or {}).items()},
        numerics=dict(data.get("numerics") or {}),
        cost=cell_cost(data["cost"]) if data.get("cost") else None,
        rescored_from=dict(data.get("rescored_from") or {}))


def phase_cost(data: Mapping[str, Any]) -> PhaseCost:
    return PhaseCost(models=[ModelCost(**m) for m in data.get("models") or []],
                     extra_flops={str(k): int(v) for k, v in (data.get("extra_flops") or {}).items()},
                     flops=int(data.get("flops") or 0))


def cell_cost(data: Mapping[str, Any]) -> CellCost:
    """A `CellCost` from its JSON form."""
    rest = {k: v for k, v in data.items() if k not in ("inference", "build", "scoring")}
    return CellCost(inference=phase_cost(data.get("inference") or {}),
                    build=phase_cost(data.get("build") or {}),
                    scoring=phase_cost(data.get("scoring") or {}), **rest)


def _migrate_v1(old: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (harness 0.1): the row under "method" (no row key), the headline metric
    under task.headline, failure text under "error"."""
    method, task = old["method"], old["task"]
    headline = task["headline"]
    new = {k: v for k, v in old.items() if k not in {"method", "task", "error", "headline"}}
    new.update(
        schema=SCHEMA_VERSION,
        row={"key": row_key(method["name"], method.get("models", []), method.get("options", {})),
             "method": method["name"], "label": method["label"],
             "options": method.get("options", {}), "models": method.get("models", []),
             "capabilities": method.get("capabilities", []), "trains": method.get("trains", False)},
        task={"name": task["name"], "options": task.get("options", {}),
              "headline_key": headline["key"], "headline_label": headline["label"],
              "higher_is_better": headline.get("higher_is_better", True),
              "data": task.get("data", "")},
        reason=old.get("reason") or old.get("error") or "",
        headline=({"value": old["headline"]["value"], "stderr": old["headline"].get("stderr")}
                  if old.get("headline") else None))
    return new
