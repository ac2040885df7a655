"""What executor and leaderboard-writer plugins receive and return: an executor's context
(the plan, its jobs and the resources to share out) and spec, and a writer's descriptor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import pluggy

from harness.contract.matrix import CellOutcome, Job, Plan

if TYPE_CHECKING:
    from harness.contract.board import Board


class PluginHost(Protocol):
    """The loaded plugins as an executor sees them: the hooks to call."""

    @property
    def hook(self) -> pluggy.HookRelay: ...


JOBS_FOLDER = "jobs"


@dataclass
class ExecutionContext:
    """Everything an executor needs to run a plan's jobs."""

    host: PluginHost  # the loaded plugins: lifecycle hooks fire through host.hook
    plan: Plan
    jobs: list[Job]
    switches: list[str]  # the -p plugin switches the workers must load too
    slots: int = 1  # jobs at once
    gpus: list[str] = field(default_factory=list)  # visible GPU ids to share out
    timeout_s: float | None = None  # per job attempt
    retries: int = 0  # further attempts of a job that failed or timed out
    capture_logs: bool = True

    def finished_elsewhere(self, outcomes: list[CellOutcome]) -> None:
        """Cells that ran in another process: the lifecycle hooks (the live display among
        them) hear of them here, as they hear of cells run in this process."""
        for outcome in outcomes:
            self.host.hook.harness_cell_finished(cell=outcome.cell, outcome=outcome)

    @property
    def folder(self) -> Path:
        return self.plan.store.root / JOBS_FOLDER


@dataclass(frozen=True)
class ExecutorSpec:
    name: str
    description: str
    run: Callable[[ExecutionContext], list[CellOutcome]]


class ReportWriter:
    """A named leaderboard writer: `write(board, out_dir)` returns the files it wrote.

    `checked` writers produce deterministic text that `harness leaderboard --check`
    compares byte for byte against the committed copy; an unchecked writer (a PNG plot)
    lists the file names it writes in `outputs`, so --check knows they are accounted for.
    """

    def __init__(self, name: str, write: "Callable[[Board, Path], list[Path]]",
                 checked: bool = True, outputs: tuple[str, ...] = ()) -> None:
        self.name = name
        self.write = write
        self.checked = checked
        self.outputs = outputs
