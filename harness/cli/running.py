"""`harness run`: plan the matrix, show the plan or run it (here or through an executor),
then write the leaderboards; `harness _job`: a worker running one job spec."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.arguments import request_from_args
from harness.cli.boards import write_leaderboards
from harness.cli.listing import escape_markup
from harness.errors import UsageError, redact
from harness.host import Host
from harness.run.request import resolve
from harness.settings import RunSettings


def cmd_run(host: Host, args: argparse.Namespace) -> int:
    from harness.cli.display import LiveRun, terminal_console
    from harness.results.store import Store
    from harness.run.jobs import run_plan
    from harness.run.plan import plan_cells
    from harness.run.progress import reporting_to

    rows, columns, settings = resolve(host, request_from_args(args))
    out = Path(settings.results)
    plan = plan_cells(host, rows, columns, settings, Store(out), force=args.force)
    if args.shard:
        index, _, count = args.shard.partition("/")
        if not (index.isdigit() and count.isdigit()):
            raise UsageError(f"--shard expects K/N, got {args.shard!r}")
        plan = plan.shard(int(index), int(count))
    if args.dry_run:
        _print_plan(plan, out)
        return 0

    executor = _executor(host, args, plan, settings)
    console = terminal_console(stderr=False)  # the leaderboard and the summary
    # on a terminal, the live display draws on stderr; elsewhere (a log, a pipe) progress is
    # plain lines on stdout, so stderr carries nothing but errors
    errors = terminal_console()
    progress_console = errors if errors.is_terminal else console
    _note_limit_per_subtask(plan, progress_console)
    live = LiveRun(progress_console, len(plan.cells), errors=errors)
    host.pm.register(live, name="harness-cli-live")
    try:
        with live, reporting_to(live):
            outcomes = run_plan(host, plan, capture_logs=not args.verbose, executor=executor)
    finally:
        host.pm.unregister(name="harness-cli-live")

    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("ok", "skipped", "n/a", "failed", "busy", "unavailable")}
    if not args.no_leaderboard:
        write_leaderboards(host, out, out, console)
    notices = {"busy": "[yellow]left to another process[/yellow]",
               "unavailable": "[yellow]not run here[/yellow]"}
    for outcome in outcomes:
        if outcome.status in notices:
            console.print(f"{notices[outcome.status]} {escape_markup(outcome.cell.title)}: "
                          f"{escape_markup(redact(outcome.error))}")
    busy = (f", {counts['busy']} left to other processes (rerun later to collect them)"
            if counts["busy"] else "")
    unavailable = (f", {counts['unavailable']} not run here (a system tool is missing; install "
                   f"it and rerun)" if counts["unavailable"] else "")
    summary = (f"{counts['ok']} computed, {counts['skipped']} already done, {counts['n/a']} n/a, "
               f"{counts['failed']} failed{busy}{unavailable}; results in {out}")
    if counts["failed"]:
        summary += f" (logs beside the failure records in {out / 'failed'})"
    console.print(summary)
    return 1 if counts["failed"] else 0


def _note_limit_per_subtask(plan: Any, console: Any) -> None:
    """`--limit` counts per lm-eval task: say so where a task runs several (MMLU's subjects),
    before hours go into what looked like a two-document smoke run."""
    noted = set()
    for cell in plan.cells:
        subtasks = len(cell.lm_eval_plan.tasks) if cell.lm_eval_plan else 0
        if cell.state == "pending" and cell.settings.limit and subtasks > 1 \
                and cell.task not in noted:
            noted.add(cell.task)
            console.print(f"note: --limit counts per lm-eval task: {escape_markup(cell.task)} evaluates "
                          f"{escape_markup(cell.documents)} per cell",
                          soft_wrap=not console.is_terminal)  # a terminal wraps it at words


def _executor(host: Host, args: argparse.Namespace, plan: Any, settings: RunSettings) -> Any:
    """The chosen executor, bound to this run's slots, GPUs, timeout and retries."""
    from harness.contract import ExecutionContext
    from harness.run.executors.local import visible_gpus
    from harness.run.executors.registry import executor_named

    spec = executor_named(host, settings.executor)
    gpus = list(settings.gpus) or (visible_gpus() if settings.torch_device.startswith("cuda")
                                   else [])
    slots = settings.jobs or max(1, len(gpus))

    def run(jobs: list[Any]) -> list[Any]:
        return spec.run(ExecutionContext(host, plan, jobs, list(args.plugins), slots, gpus,
                                         settings.job_timeout, settings.retries,
                                         not args.verbose))
    return run


def cmd_job(host: Host, args: argparse.Namespace) -> int:
    from harness.run.executors import worker_main

    return worker_main(args.spec, capture_logs=not args.verbose)


def _print_plan(plan: Any, out: Path) -> None:
    from harness.cli.display import terminal_console

    console = terminal_console(stderr=False)
    styles = {"done": "green", "pending": "yellow", "n/a": "dim", "error": "red",
              "unavailable": "yellow"}
    for cell in plan.cells:
        style = styles[cell.state]
        note = (f" — {escape_markup(cell.reason)}" if cell.reason
                else f" ({cell.documents})" if cell.state == "pending" and cell.documents else "")
        console.print(f"[{style}]{cell.state:<7}[/{style}] {cell.fingerprint[:12]} "
                      f"{escape_markup(cell.title)}{note}")
    unavailable = (f", {plan.count('unavailable')} not run here (a system tool is missing)"
                   if plan.count("unavailable") else "")
    console.print(f"{plan.count('done')} done, {plan.count('pending')} pending, "
                  f"{plan.count('n/a')} n/a, {plan.count('error')} with errors{unavailable} "
                  f"({out})")
