"""`harness`: list plugins, run the method x task matrix, write leaderboards.

Exit status: 0 success, 1 a run failure (a cell failed, a model did not load, a plugin did
not import), 2 a usage error (unknown name, bad option, malformed suite). Errors are one line
on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from harness import __version__
from harness.errors import HarnessError, UsageError, first_line
from harness.host import Host, load_host
from harness.options import build_options, describe_options, parse_pairs

DEFAULT_OUT = "harness_out"


def _split(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Benchmark methods that compose, fuse and adapt LLMs.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load plugin module NAME, or block plugin with no:NAME (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list methods and tasks with their origin")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    run = commands.add_parser("run", help="run cells of the method x task matrix (resumable)")
    run.add_argument("--method", "-m", action="append", metavar="NAME",
                     help="method name (repeatable or comma-separated)")
    run.add_argument("--task", "-t", action="append", metavar="NAME",
                     help="task name (repeatable or comma-separated)")
    run.add_argument("--suite", metavar="NAME|FILE", help="suite YAML (built-in name or path)")
    run.add_argument("--models", action="append", metavar="IDS",
                     help="base models for the methods: hub ids, local dirs or harness-zoo/* "
                          "(comma-separated, in the method's order; id@revision pins a revision)")
    run.add_argument("-o", "--method-option", action="append", default=[], metavar="KEY=VALUE",
                     help="method option (checked against the method's options)")
    run.add_argument("-O", "--task-option", action="append", default=[], metavar="KEY=VALUE",
                     help="task option (checked against the task's options)")
    run.add_argument("--limit", type=int, help="documents per lm-eval task (smoke runs)")
    run.add_argument("--seed", type=int, help="seed for sampling, few-shot order and training")
    run.add_argument("--data", choices=["hf", "local", "embedded"],
                     help="hf: Hugging Face ids (default); local: --data-dir; embedded: samples "
                          "shipped with each task (offline smoke runs)")
    run.add_argument("--data-dir", type=Path, help="root holding each task's original files")
    run.add_argument("--out", type=Path, help=f"results root (default {DEFAULT_OUT})")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--dtype", help="model dtype: auto, float32, bfloat16, float16")
    run.add_argument("--batch-size", type=int, help="lm-eval batch size (default 1)")
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N (1-based), e.g. one per GPU or array job; all "
                          "shards share --out, and a cell claimed by one process is skipped by "
                          "the others")
    run.add_argument("--dry-run", action="store_true", help="show the plan (done/pending/n/a) only")
    run.add_argument("--force", action="store_true", help="recompute finished cells")
    run.add_argument("--no-leaderboard", action="store_true",
                     help="do not write leaderboard files into --out after the run")

    board = commands.add_parser("leaderboard", help="leaderboards from result files (no GPU)")
    board.add_argument("--results", type=Path, default=Path(DEFAULT_OUT), help="results root")
    board.add_argument("--out", type=Path, help="where to write (default: the results root)")
    board.add_argument("--check", action="store_true",
                       help="fail if the committed leaderboard files differ from regenerated ones")
    return parser


# ----------------------------------------------------------------------------- suites


@dataclass
class RunRequest:
    """A matrix request, from the command line or a suite file (CLI values win)."""

    methods: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


SUITE_KEYS = {"suite", "description", "methods", "tasks", "limit", "seed", "data", "data_dir",
              "out", "device", "dtype", "batch_size"}


def load_suite(ref: str) -> RunRequest:
    path = Path(ref)
    if not path.is_file():
        builtin = resources.files("harness.suites") / f"{ref}.yaml"
        if not builtin.is_file():
            names = sorted(p.name.removesuffix(".yaml")
                           for p in resources.files("harness.suites").iterdir()
                           if p.name.endswith(".yaml"))
            raise UsageError(f"no suite file {ref!r} and no built-in suite of that name "
                             f"(built-in: {', '.join(names)})")
        text = builtin.read_text(encoding="utf-8")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"suite {ref}: unreadable ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"suite {ref}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"suite {ref}: expected a mapping with methods and tasks")
    unknown = set(data) - SUITE_KEYS
    if unknown:
        raise UsageError(f"suite {ref}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(SUITE_KEYS))}")

    def entries(key: str, name_key: str) -> list[dict[str, Any]]:
        items = data.get(key) or []
        if not isinstance(items, list):
            raise UsageError(f"suite {ref}: {key} must be a list")
        out = []
        for item in items:
            item = {name_key: item} if isinstance(item, str) else item
            if not isinstance(item, dict) or name_key not in item:
                raise UsageError(f"suite {ref}: each {key} entry needs a {name_key!r} key")
            if not isinstance(item.get("options") or {}, dict):
                raise UsageError(f"suite {ref}: options of {item[name_key]!r} must be a mapping")
            models = item.get("models")
            if models is not None and not (isinstance(models, str) or (
                    isinstance(models, list) and all(isinstance(m, str) for m in models))):
                raise UsageError(f"suite {ref}: models of {item[name_key]!r} must be a list of ids")
            out.append(item)
        return out

    settings = {k: data[k] for k in SUITE_KEYS - {"suite", "description", "methods", "tasks"}
                if k in data}
    return RunRequest(entries("methods", "method"), entries("tasks", "task"), settings)


def _request_from_args(args: argparse.Namespace) -> RunRequest:
    request = load_suite(args.suite) if args.suite else RunRequest()
    method_options = parse_pairs(args.method_option, "-o")
    task_options = parse_pairs(args.task_option, "-O")
    if args.method:
        models = _split(args.models)
        request.methods = [{"method": name, **({"models": models} if models else {}),
                            "options": method_options} for name in _split(args.method)]
    elif args.models or method_options:
        for entry in request.methods:
            if args.models:
                entry["models"] = _split(args.models)
            entry["options"] = {**(entry.get("options") or {}), **method_options}
    if args.task:
        request.tasks = [{"task": name, "options": task_options} for name in _split(args.task)]
    elif task_options:
        for entry in request.tasks:
            entry["options"] = {**(entry.get("options") or {}), **task_options}
    for key in ("limit", "seed", "data", "data_dir", "out", "device", "dtype", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            request.settings[key] = value
    if not request.methods or not request.tasks:
        raise UsageError("name at least one --method and one --task, or a --suite")
    return request


def _resolve(host: Host, request: RunRequest) -> tuple[list[Any], list[Any], Any, Path]:
    from harness.models import ModelRef, default_device
    from harness.runner import MethodRow, Settings, TaskColumn, row_label
    from harness.specs import DataSource

    settings = request.settings
    device = settings.get("device") or default_device()
    dtype = settings.get("dtype") or "auto"
    data_dir = settings.get("data_dir")
    kind = settings.get("data") or ("local" if data_dir else "hf")
    if kind not in ("hf", "local", "embedded"):
        raise UsageError(f"data must be hf, local or embedded, got {kind!r}")
    limit = settings.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be a positive integer, got {limit!r}")
    if kind == "local" and not data_dir:
        raise UsageError("--data local needs --data-dir")
    if data_dir and kind != "local":
        raise UsageError(f"--data-dir conflicts with --data {kind}")
    if data_dir and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such directory")
    data = DataSource(kind, Path(data_dir).resolve() if data_dir else None)

    rows = []
    for entry in request.methods:
        spec = host.method(entry["method"])
        model_ids = entry.get("models") or list(spec.default_models)
        if isinstance(model_ids, str):
            model_ids = _split([model_ids])
        models = tuple(ModelRef.parse(m, device=device, dtype=dtype) for m in model_ids)
        options = build_options(spec.options, entry.get("options") or {}, f"method {spec.name!r}")
        only = tuple(_split([entry["tasks"]] if isinstance(entry.get("tasks"), str)
                            else entry.get("tasks") or []))
        for name in only:
            host.task(name)  # unknown names fail here, with a suggestion
        rows.append(MethodRow(spec, models, options, entry.get("label") or row_label(spec, models),
                              only))
    columns = []
    for entry in request.tasks:
        spec = host.task(entry["task"])
        columns.append(TaskColumn(spec, build_options(spec.options, entry.get("options") or {},
                                                      f"task {spec.name!r}")))
    try:
        run_settings = Settings(data=data, limit=settings.get("limit"),
                                seed=int(settings.get("seed", 1234)),
                                batch_size=int(settings.get("batch_size", 1)), device=device)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad run setting: {exc}") from None
    out = Path(settings.get("out") or DEFAULT_OUT)
    return rows, columns, run_settings, out


# ----------------------------------------------------------------------------- commands


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def cmd_list(host: Host, args: argparse.Namespace) -> int:
    methods = [{"name": s.name, "origin": host.origin_of(s.name), "description": s.description,
                "capabilities": sorted(str(c) for c in s.capabilities),
                "models": s.models.describe(), "trains": s.training.data if s.training else None,
                "options": describe_options(s.options)}
               for s in sorted(host.methods.values(), key=lambda s: s.name)]
    tasks = [{"name": s.name, "origin": host.origin_of(s.name), "description": s.description,
              "requires": sorted(str(c) for c in s.requires), "headline": s.headline.key,
              "higher_is_better": s.headline.higher_is_better,
              "options": describe_options(s.options)}
             for s in sorted(host.tasks.values(), key=lambda s: s.name)]
    if args.json:
        print(json.dumps({"methods": methods, "tasks": tasks}, indent=2))
        return 0
    from rich.table import Table

    method_table = Table(title="Methods")
    for column in ("name", "origin", "capabilities", "models", "trains", "description"):
        method_table.add_column(column)
    for m in methods:
        method_table.add_row(m["name"], m["origin"], ", ".join(m["capabilities"]), m["models"],
                             m["trains"] or "—", m["description"])
    task_table = Table(title="Tasks")
    for column in ("name", "origin", "requires", "headline", "description"):
        task_table.add_column(column)
    for t in tasks:
        arrow = "↑" if t["higher_is_better"] else "↓"
        task_table.add_row(t["name"], t["origin"], ", ".join(t["requires"]),
                           f"{t['headline']} {arrow}", t["description"])
    console = _console()
    console.print(method_table)
    console.print(task_table)
    return 0


def _quiet_libraries(debug: bool) -> None:
    if debug:
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_run(host: Host, args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.runner import plan_cells, run_plan
    from harness.store import Store

    request = _request_from_args(args)
    rows, columns, settings, out = _resolve(host, request)
    console = _console()
    plan = plan_cells(host, rows, columns, settings, Store(out), force=args.force)
    if args.shard:
        index, _, count = args.shard.partition("/")
        if not (index.isdigit() and count.isdigit()):
            raise UsageError(f"--shard expects K/N, got {args.shard!r}")
        plan = plan.shard(int(index), int(count))

    if args.dry_run:
        table = Table(title=f"Plan ({out})")
        for column in ("method", "task", "state", "fingerprint", "note"):
            table.add_column(column)
        styles = {"done": "green", "pending": "yellow", "n/a": "dim", "error": "red"}
        for cell in plan.cells:
            table.add_row(cell.row.label, cell.task,
                          f"[{styles[cell.state]}]{cell.state}[/{styles[cell.state]}]",
                          cell.fingerprint[:12], cell.reason)
        console.print(table)
        console.print(f"{plan.count('done')} done, {plan.count('pending')} pending, "
                      f"{plan.count('n/a')} n/a, {plan.count('error')} with errors")
        return 0

    _quiet_libraries(args.debug)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = _console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} cells"), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        bar = progress.add_task("running", total=len(plan.cells))

        class ProgressReporter:
            @staticmethod
            def harness_cell_started(cell: Any) -> None:
                progress.update(bar, description=f"{cell.row.label} × {cell.task}")

        host.pm.register(ProgressReporter(), name="harness-cli-progress")
        try:
            outcomes = run_plan(host, plan, progress=lambda: progress.advance(bar))
        finally:
            host.pm.unregister(name="harness-cli-progress")
        progress.update(bar, completed=len(plan.cells), description="done")

    for outcome in outcomes:
        if outcome.status == "failed":
            err.print(f"[red]failed[/red] {outcome.cell.row.label} × {outcome.cell.task}: "
                      f"{outcome.error}", soft_wrap=True)
        elif outcome.status == "busy":
            err.print(f"[yellow]skipped[/yellow] {outcome.cell.row.label} × {outcome.cell.task}: "
                      f"{outcome.error}", soft_wrap=True)
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("ok", "skipped", "n/a", "failed", "busy")}
    if not args.no_leaderboard:
        write_leaderboards(host, out, out, console)
    busy = f", {counts['busy']} running elsewhere" if counts["busy"] else ""
    console.print(f"{counts['ok']} computed, {counts['skipped']} already done, {counts['n/a']} n/a, "
                  f"{counts['failed']} failed{busy}; results in {out}")
    return 1 if counts["failed"] else 0


def write_leaderboards(host: Host, results: Path, out: Path, console: Any = None) -> list[Path]:
    from harness.reporting import build_board, rich_table

    board = build_board(results)
    written = [path for writer in host.report_writers() for path in writer.write(board, out)]
    if console is not None:
        console.print(rich_table(board))
    return written


def cmd_leaderboard(host: Host, args: argparse.Namespace) -> int:
    from harness.reporting import build_board, rich_table

    if not (args.results / "cells").is_dir():
        raise UsageError(f"{args.results}: no results (expected a cells/ folder)")
    out = args.out or args.results
    console = _console()
    if not args.check:
        for path in write_leaderboards(host, args.results, out, console):
            console.print(f"wrote {path}")
        return 0
    board = build_board(args.results)
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        for writer in (w for w in host.report_writers() if w.checked):
            for fresh in writer.write(board, Path(scratch)):
                committed = out / fresh.name
                if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                    stale.append(str(committed))
    if stale:
        raise HarnessError(f"leaderboard out of date: {', '.join(stale)} (regenerate with "
                           f"`harness leaderboard --results {args.results}`)")
    console.print(rich_table(board))
    console.print("leaderboard files match the results")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "leaderboard": cmd_leaderboard}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        host = load_host(args.plugins)
        return COMMANDS[args.command](host, args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:  # the file system or a library refused: still one line
        if args.debug:
            raise
        print(f"harness: error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted; finished cells are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
