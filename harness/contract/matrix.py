"""The matrix a run works through, as hooks and executors see it: rows (a method with its
models and options) x task columns = cells; a plan of cells with their states; jobs (cells
that share one built LM) and each cell's outcome."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.contract.specs import LmEvalPlan, MethodSpec, TaskSpec, options_to_dict
from harness.errors import UsageError
from harness.models.loading import ModelRef
from harness.results.records import CodeInfo, row_key
from harness.results.store import Store
from harness.settings import RunSettings

# "unavailable": a system tool the cell needs is missing here and the run skips such cells;
# nothing is recorded, so the cell runs once the tool is installed.
State = Literal["done", "pending", "n/a", "error", "unavailable"]


@dataclass(frozen=True)
class MethodRow:
    """A leaderboard row: a method with its base models and options."""

    spec: MethodSpec
    models: tuple[ModelRef, ...]
    options: Any
    label: str = ""  # empty: derived from the method, its non-default options and models
    only_tasks: tuple[str, ...] = ()  # a suite row restricted to some of the tasks

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", row_label(self.spec, self.models, self.options))

    @property
    def key(self) -> str:
        return row_key(self.spec.name, [dataclasses.asdict(m) for m in self.models],
                       options_to_dict(self.options))


@dataclass(frozen=True)
class TaskColumn:
    spec: TaskSpec
    options: Any


@dataclass
class Cell:
    row: MethodRow
    column: TaskColumn
    settings: RunSettings
    state: State = "pending"
    reason: str = ""
    fingerprint: str = ""
    lm_eval_plan: LmEvalPlan | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    code: dict[str, CodeInfo] = field(default_factory=dict)
    several_seeds: bool = False  # one of the run's seeds: titles name it

    @property
    def method(self) -> str:
        return self.row.spec.name

    @property
    def task(self) -> str:
        return self.column.spec.name

    @property
    def title(self) -> str:
        seed = f" (seed {self.settings.seed})" if self.several_seeds else ""
        return f"{self.row.label} × {self.task}{seed}"

    @property
    def documents(self) -> str:
        """How many documents the cell evaluates, as far as planning knows: `--limit`
        counts per lm-eval task, and a task such as MMLU runs one lm-eval task per subject."""
        subtasks = len(self.lm_eval_plan.tasks) if self.lm_eval_plan else 0
        limit = self.settings.limit
        if not subtasks:
            return ""
        if limit is None:
            return f"all documents of {subtasks} lm-eval task{'s' * (subtasks > 1)}"
        if subtasks == 1:
            return f"up to {limit} document{'s' * (limit > 1)}"
        return f"up to {limit * subtasks} documents ({limit} in each of {subtasks} lm-eval tasks)"


@dataclass
class Plan:
    cells: list[Cell]
    store: Store
    force: bool = False

    def count(self, state: State) -> int:
        return sum(c.state == state for c in self.cells)

    def shard(self, index: int, count: int) -> "Plan":
        """The cells of shard `index` (1-based) of `count`, split by fingerprint so every
        process of an array job computes the same partition without talking to the others."""
        if not 1 <= index <= count:
            raise UsageError(f"--shard {index}/{count}: need 1 <= K <= N")
        return Plan([c for c in self.cells if int(c.fingerprint, 16) % count == index - 1],
                    self.store, self.force)


@dataclass
class CellOutcome:
    cell: Cell
    status: Literal["ok", "n/a", "failed", "skipped", "busy", "shard", "unavailable"]
    path: Path | None = None
    headline: float | None = None
    error: str = ""


def _option_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_option_text(v) for v in value)
    return str(value)


def row_label(spec: MethodSpec, models: tuple[ModelRef, ...], options: Any = None) -> str:
    """`method[options that differ from the defaults] (model + model)`."""
    changed = []
    if options is not None and dataclasses.is_dataclass(options):
        defaults = options_to_dict(spec.options())
        changed = [f"{k}={_option_text(v)}" for k, v in options_to_dict(options).items()
                   if defaults.get(k) != v]
    options_text = f"[{', '.join(changed)}]" if changed else ""
    return f"{spec.name}{options_text} ({' + '.join(m.short_name for m in models)})"


@dataclass
class Job:
    """Cells that share one built LM: every pending task of a row that does not train (its
    models load once, as lm-eval evaluates several tasks on one model); a training row's
    cells are jobs of their own (each task fits its own adapter)."""

    cells: list[Cell]
    shard: tuple[int, int] | None = None  # (index, count): one document shard of one cell

    @property
    def title(self) -> str:
        return f"{self.cells[0].row.label} × {', '.join(c.task for c in self.cells)}"
