"""The hook contract between the harness host and its plugins.

A plugin is any module (or object) whose functions carry `harness.hookimpl` and whose
names match a specification below. Built-in methods and tasks are plugins exactly like
third-party ones: each registers under the ``harness`` entry-point group, e.g. in its
pyproject.toml::

    [project.entry-points.harness]
    my_method = "my_package.my_method"

The host loads every entry point of that group at start-up (``-p no:NAME`` blocks one,
``-p module.path`` loads an extra module, ``HARNESS_DISABLE_PLUGIN_AUTOLOAD=1`` loads only
the ``-p`` ones), then validates that each implementation names a known hook; a typo in a
hook name is an error, not a silently ignored function.

Plugin modules must stay cheap to import: no torch, transformers or lm-eval at module
level. Import them inside ``MethodSpec.build`` and the task callables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from harness.contract import (Cell, CellOutcome, ExecutorSpec, MethodSpec, Plan, ReportWriter,
                                  TaskSpec)

hookspec = pluggy.HookspecMarker("harness")


# --------------------------------------------------------------------------- registry


@hookspec
def harness_methods() -> list[MethodSpec]:
    """Return the methods this plugin contributes.

    Called once per process; every plugin's lists are concatenated. Two plugins that
    contribute the same method name is an error naming both.
    """


@hookspec
def harness_tasks() -> list[TaskSpec]:
    """Return the tasks this plugin contributes (same rules as `harness_methods`)."""


# --------------------------------------------------------------------------- planning


@hookspec(firstresult=True)
def harness_cell_incompatibility(method: MethodSpec, task: TaskSpec) -> str | None:
    """Refuse a method x task cell with a short reason, e.g. "needs vision".

    The host already refuses cells whose task requires a capability the method lacks;
    implement this to add finer rules. The first non-None answer wins. A refused cell is
    recorded and shown as "n/a (reason)" in leaderboards, never run.
    """


# --------------------------------------------------------------------------- run lifecycle


@hookspec
def harness_run_started(plan: Plan) -> None:
    """A run begins; `plan.cells` lists every cell with its state (done, pending, n/a)."""


@hookspec
def harness_cell_started(cell: Cell) -> None:
    """A pending cell is about to load its models and evaluate."""


@hookspec
def harness_cell_finished(cell: Cell, outcome: CellOutcome) -> None:
    """A cell ended: `outcome.status` is "ok", "n/a" or "failed" (results are on disk), or
    "busy" when another process holds the cell."""


@hookspec
def harness_run_finished(plan: Plan, outcomes: list[CellOutcome]) -> None:
    """Every cell of the run has been attempted."""


# --------------------------------------------------------------------------- execution


@hookspec
def harness_executors() -> list[ExecutorSpec]:
    """Return executors: named ways to run a plan's jobs (`harness run --executor NAME`).

    An executor receives an `ExecutionContext` (the plan, its jobs, slots, GPUs, timeout,
    retries) and returns every job cell's `CellOutcome`. Jobs travel as JSON job specs
    (`harness.run.executors.job_spec`) that a worker runs with `run_job_spec`, so an executor
    only has to start workers somewhere that shares the --results folder. The host's own
    executors (local, ray, slurm) are contributed the same way.
    """


# --------------------------------------------------------------------------- reporting


@hookspec
def harness_report_writers() -> list[ReportWriter]:
    """Return extra leaderboard writers (name + function writing files into a folder).

    The host's own writers (Markdown, HTML, JSON, PNG) are contributed the same way.
    """
