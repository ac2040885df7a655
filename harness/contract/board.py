"""The board as every writer sees it: tasks as columns, method rows, and cells with their
score, spread, paired test, cost and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.results.store import Problem

COST_HEADER = "inference FLOPs/doc"
COST_NOTE = ("Inference FLOPs/doc: 2 × parameters × tokens of every model the method ran, plus its "
             "own extra work (logit fusion), per evaluated document, over the row's scored cells "
             "(— where the records predate cost counting).")
DEFAULT_RESAMPLES = 1000  # of the paired bootstrap
DEFAULT_ALPHA = 0.05
DEFAULT_MAX_SAMPLES = 50
SIGNIFICANCE_SEED = 0  # fixed, so committed leaderboards regenerate to the same bytes
SIGNIFICANT = "†"


@dataclass(frozen=True)
class BoardOptions:
    """What a board computes beyond its records: the paired tests against each row's
    reference row (`resamples` bootstrap draws from `seed`, Holm at `alpha`, the tasks'
    `CorpusMetric`s by task name) and the samples per cell the HTML explorer embeds."""

    resamples: int = DEFAULT_RESAMPLES
    max_samples: int = DEFAULT_MAX_SAMPLES
    seed: int = SIGNIFICANCE_SEED
    alpha: float = DEFAULT_ALPHA
    corpus_metrics: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")
        if self.max_samples < 0:
            raise ValueError(f"max_samples must be at least 0, got {self.max_samples}")


SMOKE_WARNING = ("Smoke numbers from {what}: they show that the pipeline runs and are "
                 "not comparable with published results.")


UNTRUSTED_NOTE = ("untrusted: its result file is damaged and left out (see the warning "
                  "above; `harness verify` lists it)")


@dataclass
class BoardCell:
    status: str  # "ok", "n/a", "failed", "untrusted" (a damaged result file) or "missing"
    value: float | None = None
    stderr: float | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # e.g. computed by other code
    cost: dict[str, Any] | None = None  # the record's CellCost, when it was counted
    seed_spread: float | None = None  # several seeds: the standard deviation of their values

    @property
    def flops_per_document(self) -> int | None:
        return self.cost.get("inference_flops_per_document") if self.cost else None
    # The paired test against the row's reference row (None: the row is its own reference
    # or the cell has no score); "unavailable" says why a cell could not be tested.
    comparison: dict[str, Any] | None = None
    significant: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)  # the explorer's, capped

    def text(self, digits: int = 3, with_stderr: bool = True) -> str:
        if self.status == "ok" and self.value is not None:
            if self.seed_spread is not None:
                seeds = len(self.provenance.get("seeds", ()))
                spread = f" ± {self.seed_spread:.{digits}f}" if with_stderr else ""
                return f"{self.value:.{digits}f}{spread} ({seeds} seeds)"
            if self.stderr is None or not with_stderr:
                return f"{self.value:.{digits}f}"
            return f"{self.value:.{digits}f} ± {self.stderr:.{digits}f}"
        return {"n/a": "n/a", "failed": "failed", "untrusted": "untrusted"}.get(self.status, "—")

    def notes(self) -> list[str]:
        """Footnote texts for this cell: why it is n/a, failed or untrusted, and its flags."""
        why = {"n/a": f"n/a: {self.reason}", "failed": f"failed: {self.reason}",
               "untrusted": UNTRUSTED_NOTE}.get(self.status)
        return ([why] if why else []) + self.flags


@dataclass
class BoardTask:
    name: str
    metric_key: str
    metric_label: str
    higher_is_better: bool
    data: str

    @property
    def header(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{self.name} ({self.metric_label} {arrow})"


@dataclass
class BoardRow:
    key: str
    label: str
    method: str
    models: list[str]
    trainable_params: int | None
    total_params: int | None
    cells: dict[str, BoardCell]
    mean_win_rate: float | None = None

    @property
    def flops_per_document(self) -> int | None:
        """Inference FLOPs per document over the row's scored cells that counted them."""
        counted = [c.cost for c in self.cells.values() if c.status == "ok" and c.cost
                   and c.cost.get("documents")]
        if not counted:
            return None
        return sum(c["inference"]["flops"] for c in counted) // sum(c["documents"] for c in counted)


@dataclass
class Board:
    tasks: list[BoardTask]
    rows: list[BoardRow]
    problems: list[Problem] = field(default_factory=list)  # result files not trusted
    options: BoardOptions = field(default_factory=BoardOptions)
    results_root: Path | None = None
    # task -> document -> {"prompt", "reference"}: shared by the explorer's cells
    documents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def comparisons(self) -> int:
        """How many paired tests the board shows (the Holm family)."""
        return sum(1 for row in self.rows for cell in row.cells.values()
                   if cell.comparison and "p_value" in cell.comparison)

    def reasons(self) -> list[str]:
        """Distinct footnote texts, in first-seen order (footnote numbering)."""
        seen: list[str] = []
        for row in self.rows:
            for task in self.tasks:
                for note in row.cells[task.name].notes():
                    if note not in seen:
                        seen.append(note)
        return seen

    def markers(self, cell: BoardCell) -> list[int]:
        notes = self.reasons()
        return [notes.index(note) + 1 for note in cell.notes()]

    def smoke_warning(self) -> str:
        """Non-empty when any column rests on embedded samples or a --limit."""
        def which(names: list[str]) -> str:
            return "every task" if len(names) == len(self.tasks) else ", ".join(names)

        embedded = [t.name for t in self.tasks if "embedded" in t.data]
        limited = [t.name for t in self.tasks if "(limit " in t.data]
        parts = ([f"the embedded sample data ({which(embedded)})"] if embedded else []) + (
            [f"a --limit on the documents ({which(limited)})"] if limited else [])
        return SMOKE_WARNING.format(what=" and ".join(parts)) if parts else ""

    def untrusted_warning(self) -> str:
        """Non-empty when result files under the root cannot be trusted: each by path,
        with the commands that list and resolve them."""
        if not self.problems:
            return ""
        root = self.results_root or Path(".")
        listed = "; ".join(
            problem.reason if problem.reason.startswith(str(problem.path)) else str(problem)
            for problem in self.problems)
        return (f"{len(self.problems)} untrusted result file(s), left out of this board: "
                f"{listed}. `harness verify --results {root}` lists them; the next run that "
                f"includes their cells recomputes them, `harness verify --results {root} --repair` "
                f"moves them into {root / 'quarantine'}.")


def mean_win_rates(rows: Sequence[BoardRow], tasks: Sequence[BoardTask]) -> dict[str, float | None]:
    """HELM's mean win rate: per task, the share of other rows a row beats (ties count half),
    averaged over the tasks where it has a score. Scale-free, so tasks with metrics on
    different scales weigh the same."""
    rates: dict[str, list[float]] = {row.key: [] for row in rows}
    for task in tasks:
        scored = [(row.key, row.cells[task.name].value) for row in rows
                  if row.cells[task.name].status == "ok"]
        if len(scored) < 2:
            continue
        sign = 1 if task.higher_is_better else -1
        for key, value in scored:
            assert value is not None
            wins = sum(1.0 if sign * value > sign * other else 0.5 if value == other else 0.0
                       for other_key, other in scored if other_key != key and other is not None)
            rates[key].append(wins / (len(scored) - 1))
    return {key: sum(values) / len(values) if values else None for key, values in rates.items()}
