"""`harness`: list plugins, run the method x task matrix, write leaderboards, inspect runs.

Exit status: 0 success, 1 a run failure (a cell failed, a model did not load, a plugin did
not import, a results folder is damaged), 2 a usage error (unknown name, bad option,
malformed suite). Errors are one line on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from harness import __version__
from harness.errors import HarnessError, UsageError, did_you_mean, first_line, redact
from harness.host import Host, load_host
from harness.options import build_options, option_infos, parse_pairs
from harness.report.board import DEFAULT_MAX_SAMPLES
from harness.report.significance import DEFAULT_RESAMPLES
from harness.settings import (DEFAULT_OUT, SETTING_NAMES, RunRequest, RunSettings, SuiteMethod,
                              SuiteTask)

SUITE_ONLY_KEYS = ("suite", "description", "methods", "tasks")
NAME_LISTS = frozenset({"models", "tasks"})  # keys of a suite's method entries that list names


def _split(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the harness."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"harness: error: {message} (see `{self.prog} --help`)\n")


def _board_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                        help="paired bootstrap resamples of the significance marks "
                             f"(default {DEFAULT_RESAMPLES})")
    parser.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES, metavar="N",
                        help="documents per cell the HTML explorer embeds "
                             f"(default {DEFAULT_MAX_SAMPLES})")


def board_options(host: Host, resamples: int = DEFAULT_RESAMPLES,
                  max_samples: int = DEFAULT_MAX_SAMPLES) -> Any:
    """The leaderboard's options with the loaded tasks' corpus metrics."""
    from harness.report.board import BoardOptions

    if resamples < 1:
        raise UsageError(f"--resamples must be at least 1, got {resamples}")
    if max_samples < 0:
        raise UsageError(f"--max-samples must be at least 0, got {max_samples}")
    return BoardOptions(resamples=resamples, max_samples=max_samples,
                        corpus_metrics={name: spec.corpus_metrics
                                        for name, spec in host.tasks.items()})


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="harness", description="Benchmark methods that compose, fuse and adapt LLMs.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load plugin module NAME, or block plugin with no:NAME (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show what the libraries print (otherwise it goes to each cell's "
                             "log.txt)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)

    listing = commands.add_parser("list", help="methods and tasks, or one plugin in full")
    listing.add_argument("name", nargs="?", help="a method or task to show in full")
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
                     help="task option (checked against the task's options), for every task "
                          "of the run; -O TASK.KEY=VALUE for one of them")
    for info in option_infos(RunSettings):
        run.add_argument(f"--{info.name.replace('_', '-')}", dest=info.name, metavar="VALUE",
                         help=f"{info.help} (default {info.default})" if info.default is not None
                         else info.help)
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N (1-based), e.g. one per GPU or array job; all "
                          "shards share --out, and a cell claimed by one process is skipped by "
                          "the others")
    run.add_argument("--executor", default="local", metavar="NAME",
                     help="where jobs run: local (default), ray or slurm (`harness list` of "
                          "executors: see the README)")
    run.add_argument("--jobs", type=int, metavar="N",
                     help="jobs at once (default: one per GPU, else 1); a job is a row's tasks "
                          "on one built model, or one training cell")
    run.add_argument("--gpus", metavar="IDS",
                     help="GPU ids to share out among jobs (default: every visible GPU when "
                          "--device is cuda)")
    run.add_argument("--job-timeout", type=float, metavar="S",
                     help="seconds before a job attempt is stopped (pool, ray and slurm)")
    run.add_argument("--retries", type=int, default=0, metavar="N",
                     help="further attempts of a job that failed or timed out (default 0)")
    run.add_argument("--dry-run", action="store_true", help="show the plan (done/pending/n/a) only")
    run.add_argument("--force", action="store_true", help="recompute finished cells")
    run.add_argument("--no-leaderboard", action="store_true",
                     help="do not write leaderboard files into --out after the run")

    board = commands.add_parser("leaderboard", help="leaderboards from result files (no GPU)")
    board.add_argument("--results", type=Path, default=Path(DEFAULT_OUT), help="results root")
    board.add_argument("--out", type=Path, help="where to write (default: the results root)")
    board.add_argument("--check", action="store_true",
                       help="fail if the committed leaderboard files differ from regenerated ones")
    _board_arguments(board)

    compare = commands.add_parser("compare",
                                  help="paired tests of two rows on every task they share")
    compare.add_argument("a", metavar="A", help="a row label or row key")
    compare.add_argument("b", metavar="B", help="another row label or row key")
    compare.add_argument("--results", type=Path, default=Path(DEFAULT_OUT), help="results root")
    compare.add_argument("--task", "-t", action="append", metavar="NAME",
                         help="only these tasks (repeatable or comma-separated)")
    compare.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                         help=f"paired bootstrap resamples (default {DEFAULT_RESAMPLES})")
    compare.add_argument("--json", action="store_true", help="machine-readable output")

    rescore = commands.add_parser(
        "rescore", help="recompute metrics from stored samples (no model is loaded)")
    rescore.add_argument("--results", type=Path, default=Path(DEFAULT_OUT),
                         help="results root to read")
    rescore.add_argument("--out", type=Path, required=True,
                         help="results root to write the rescored cells into")
    rescore.add_argument("--task", "-t", action="append", metavar="NAME",
                         help="only these tasks (repeatable or comma-separated)")
    rescore.add_argument("-O", "--task-option", action="append", default=[], metavar="KEY=VALUE",
                         help="task option to score with (e.g. a new judge); it must not "
                              "change what the model was asked")

    status = commands.add_parser("status", help="a matrix's state from its files alone")
    status.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="results root")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    verify = commands.add_parser("verify", help="check every result file of a results folder")
    verify.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="results root")
    verify.add_argument("--repair", action="store_true",
                        help="move untrusted files into <out>/quarantine/ (nothing is deleted)")

    worker = commands.add_parser("_job")  # an executor's worker, not for users
    worker.add_argument("spec", type=Path)
    return parser


# ----------------------------------------------------------------------------- suites


def load_suite(ref: str) -> RunRequest:
    """A suite file (path or built-in name), every entry validated like `-o` options."""
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
    allowed = (*SUITE_ONLY_KEYS, *SETTING_NAMES)
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise UsageError(f"suite {ref}: unknown key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    settings = {k: data[k] for k in SETTING_NAMES if k in data}
    build_options(RunSettings, settings, f"suite {ref}")  # bad values fail here, by name
    return RunRequest(_suite_entries(ref, data, "methods", "method", SuiteMethod),
                      _suite_entries(ref, data, "tasks", "task", SuiteTask), settings)


def _suite_entries(ref: str, data: dict[str, Any], key: str, name_key: str,
                   entry_type: type) -> list[Any]:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise UsageError(f"suite {ref}: {key} must be a list")
    entries = []
    for number, item in enumerate(items, 1):
        item = {name_key: item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get(name_key), str):
            found = item.get(name_key, item) if isinstance(item, dict) else item
            raise UsageError(f"suite {ref}: {key} entry {number} needs a {name_key!r} name, "
                             f"found {found!r}")
        lists = sorted(NAME_LISTS.intersection(item)) if entry_type is SuiteMethod else []
        for names in lists:  # names, never numbers read as names
            value = item[names]
            if not (isinstance(value, str) or isinstance(value, list) and
                    all(isinstance(v, str) for v in value)):
                raise UsageError(f"suite {ref}: {key} entry {item[name_key]!r}: {names} must be "
                                 f"a list of names, found {value!r}")
        entries.append(build_options(entry_type, {k: ({} if v is None and k == "options" else v)
                                                  for k, v in item.items()},
                                     f"suite {ref}: {key} entry {item[name_key]!r}"))
    return entries


def request_from_args(args: argparse.Namespace) -> RunRequest:
    request = load_suite(args.suite) if args.suite else RunRequest()
    method_options = parse_pairs(args.method_option, "-o")
    task_options = parse_pairs(args.task_option, "-O")
    models = tuple(_split(args.models))
    if args.method:
        request.methods = [SuiteMethod(method=name, models=models, options=method_options)
                           for name in _split(args.method)]
    elif models or method_options:
        request.methods = [dataclasses.replace(entry, models=models or entry.models,
                                               options={**entry.options, **method_options})
                           for entry in request.methods]
    shared, per_task = _scoped_task_options(task_options)
    if args.task:
        request.tasks = [SuiteTask(task=name) for name in _split(args.task)]
    unknown = sorted(set(per_task) - {entry.task for entry in request.tasks})
    if unknown:
        raise UsageError(f"-O {unknown[0]}.KEY=VALUE names task {unknown[0]!r}, which this run "
                         f"does not include (tasks: {', '.join(e.task for e in request.tasks)})")
    request.tasks = [dataclasses.replace(entry, options={**entry.options, **shared,
                                                         **per_task.get(entry.task, {})})
                     for entry in request.tasks]
    for name in SETTING_NAMES:
        value = getattr(args, name, None)
        if value is not None:
            request.settings[name] = value
    if not request.methods or not request.tasks:
        raise UsageError("name at least one --method and one --task, or a --suite")
    return request


def _scoped_task_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
    """`-O key=value` applies to every task of the run, `-O task.key=value` to that task."""
    shared: dict[str, Any] = {}
    per_task: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        task, dot, name = key.partition(".")
        if dot:
            per_task.setdefault(task, {})[name] = value
        else:
            shared[key] = value
    return shared, per_task


def resolve(host: Host, request: RunRequest) -> tuple[list[Any], list[Any], RunSettings]:
    from harness.models.loading import ModelRef
    from harness.run.runner import MethodRow, TaskColumn

    settings = build_options(RunSettings, request.settings, "run settings").resolved()
    rows = []
    for entry in request.methods:
        spec = host.method(entry.method)
        model_ids = entry.models or spec.default_models
        models = tuple(ModelRef.parse(m, device=settings.device or "cpu", dtype=settings.dtype)
                       for m in model_ids)
        options = build_options(spec.options, entry.options, f"method {spec.name!r}")
        for name in entry.tasks:
            host.task(name)  # unknown names fail here, with a suggestion
        rows.append(MethodRow(spec, models, options, entry.label, tuple(entry.tasks)))
    columns = []
    for task_entry in request.tasks:
        task_spec = host.task(task_entry.task)
        columns.append(TaskColumn(task_spec, build_options(task_spec.options, task_entry.options,
                                                           f"task {task_spec.name!r}")))
    return rows, columns, settings


# ----------------------------------------------------------------------------- list


def _plugin_entry(host: Host, spec: Any) -> dict[str, Any]:
    from harness.contract import MethodSpec

    options = [{"name": o.name, "type": o.type, "default": o.default, "help": o.help}
               for o in option_infos(spec.options)]
    entry: dict[str, Any] = {"name": spec.name, "origin": host.origin_of(spec.name),
                             "version": spec.version, "description": spec.description,
                             "options": options}
    if isinstance(spec, MethodSpec):
        entry.update(kind="method", models=spec.models.describe(),
                     default_models=list(spec.default_models),
                     capabilities=sorted(str(c) for c in spec.capabilities),
                     model_dependent_capabilities=spec.model_capabilities is not None,
                     trains=(None if spec.training is None else
                             {"data": spec.training.data,
                              "description": spec.training.description}))
    else:
        entry.update(kind="task", requires=sorted(str(c) for c in spec.requires),
                     headline={"key": spec.headline.key, "label": spec.headline.label,
                               "higher_is_better": spec.headline.higher_is_better},
                     metrics=[m.key for m in spec.metrics],
                     data={"hf": spec.hf_dataset or None, "local": spec.local_format or None,
                           "embedded": str(spec.embedded_data) if spec.embedded_data else None},
                     trains_on=spec.training_examples is not None)
    return entry


def cmd_list(host: Host, args: argparse.Namespace) -> int:
    if args.name:
        spec = host.methods.get(args.name) or host.tasks.get(args.name)
        if spec is None:
            known = [*host.methods, *host.tasks]
            raise UsageError(f"no method or task named {args.name!r}"
                             f"{did_you_mean(args.name, known)}; `harness list` shows them all")
        entry = _plugin_entry(host, spec)
        if args.json:
            print(json.dumps(entry, indent=2, default=str))
        else:
            _print_plugin(entry)
        return 0
    methods = [_plugin_entry(host, s) for s in sorted(host.methods.values(), key=lambda s: s.name)]
    tasks = [_plugin_entry(host, s) for s in sorted(host.tasks.values(), key=lambda s: s.name)]
    if args.json:
        print(json.dumps({"methods": methods, "tasks": tasks}, indent=2, default=str))
        return 0
    method_rows = [(m["name"], m["models"], "trains" if m["trains"] else "frozen",
                    _with_origin(m)) for m in methods]
    task_rows = [(t["name"], f"{t['headline']['label']} {'↑' if t['headline']['higher_is_better'] else '↓'}",
                  ", ".join(t["requires"]), _with_origin(t)) for t in tasks]
    # one line per plugin, names and short facts whole (grep and cut see them); on a
    # terminal the description is cut at its edge, `harness list NAME` has the rest
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for title, rows in (("methods", method_rows), ("tasks", task_rows)):
        print(f"{title}:")
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            line = "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]
            print(line if width is None or len(line) <= width else line[:width - 1] + "…")
    if width is not None:
        print("`harness list NAME`: a method's or task's options and details")
    return 0


def _with_origin(entry: dict[str, Any]) -> str:
    origin = "" if entry["origin"] == "built-in" else f" [{entry['origin']}]"
    return entry["description"] + origin


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_plugin(entry: dict[str, Any]) -> None:
    lines = [f"{entry['kind']} {entry['name']} (version {entry['version']}, {entry['origin']})",
             f"  {entry['description']}"]
    if entry["kind"] == "method":
        lines.append(f"  models: {entry['models']}; default: {', '.join(entry['default_models'])}")
        capabilities = ", ".join(entry["capabilities"])
        if entry["model_dependent_capabilities"]:
            capabilities += " (+ vision on vision-language models)"
        lines.append(f"  answers: {capabilities}")
        if entry["trains"]:
            lines.append(f"  trains on: {entry['trains']['data']}"
                         + (f"; {entry['trains']['description']}"
                            if entry['trains']['description'] else ""))
        else:
            lines.append("  trains: no (frozen)")
    else:
        headline = entry["headline"]
        lines.append(f"  headline: {headline['label']} ({headline['key']}, "
                     f"{'higher' if headline['higher_is_better'] else 'lower'} is better)")
        if entry["metrics"]:
            lines.append(f"  also: {', '.join(entry['metrics'])}")
        lines.append(f"  needs: {', '.join(entry['requires'])}")
        for kind, text in entry["data"].items():
            if text:
                lines.append(f"  data {kind}: {text}")
        lines.append(f"  training split: {'yes' if entry['trains_on'] else 'no'}")
    lines.append("  options:" if entry["options"] else "  options: none")
    for info in entry["options"]:
        default = json.dumps(info["default"], default=str)
        lines.append(f"    {info['name']} ({info['type']}, default {default})"
                     + (f": {info['help']}" if info["help"] else ""))
    print("\n".join(lines))


# ----------------------------------------------------------------------------- run


def cmd_run(host: Host, args: argparse.Namespace) -> int:
    from harness.cli.display import LiveRun, terminal_console
    from harness.run.progress import reporting_to
    from harness.run.runner import plan_cells, run_plan
    from harness.results.store import Store

    rows, columns, settings = resolve(host, request_from_args(args))
    out = Path(settings.out)
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
            console.print(f"{notices[outcome.status]} {_escape(outcome.cell.title)}: "
                          f"{_escape(redact(outcome.error))}")
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
            console.print(f"note: --limit counts per lm-eval task: {_escape(cell.task)} evaluates "
                          f"{_escape(cell.documents)} per cell",
                          soft_wrap=not console.is_terminal)  # a terminal wraps it at words


def _executor(host: Host, args: argparse.Namespace, plan: Any, settings: RunSettings) -> Any:
    """The chosen executor, bound to this run's slots, GPUs, timeout and retries."""
    from harness.run.executors import ExecutionContext, executor_named
    from harness.run.executors.local import visible_gpus

    spec = executor_named(host, args.executor)
    if args.gpus is not None:
        gpus = _split([args.gpus])
    else:
        gpus = visible_gpus() if (settings.device or "").startswith("cuda") else []
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.retries < 0:
        raise UsageError(f"--retries must be at least 0, got {args.retries}")
    if args.job_timeout is not None and args.job_timeout <= 0:
        raise UsageError(f"--job-timeout must be positive, got {args.job_timeout}")
    slots = args.jobs or max(1, len(gpus))

    def run(jobs: list[Any]) -> list[Any]:
        return spec.run(ExecutionContext(host, plan, jobs, list(args.plugins), slots, gpus,
                                         args.job_timeout, args.retries, not args.verbose))
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
        note = (f" — {_escape(cell.reason)}" if cell.reason
                else f" ({cell.documents})" if cell.state == "pending" and cell.documents else "")
        console.print(f"[{style}]{cell.state:<7}[/{style}] {cell.fingerprint[:12]} "
                      f"{_escape(cell.title)}{note}")
    unavailable = (f", {plan.count('unavailable')} not run here (a system tool is missing)"
                   if plan.count("unavailable") else "")
    console.print(f"{plan.count('done')} done, {plan.count('pending')} pending, "
                  f"{plan.count('n/a')} n/a, {plan.count('error')} with errors{unavailable} "
                  f"({out})")


# ----------------------------------------------------------------------------- leaderboards


def write_leaderboards(host: Host, results: Path, out: Path, console: Any = None,
                       options: Any = None) -> list[Path]:
    from harness.report.board import build_board, rich_tables

    board = build_board(results, options or board_options(host))
    written = [path for writer in host.report_writers() for path in writer.write(board, out)]
    if console is not None:
        for table in rich_tables(board, console.width):
            console.print(table, soft_wrap=False)  # notes wrap at words, not at the edge
    return written


def cmd_leaderboard(host: Host, args: argparse.Namespace) -> int:
    from harness.cli.display import terminal_console
    from harness.report.board import board_digest, build_board, drawn_from, rich_tables

    if not (args.results / "cells").is_dir():
        raise UsageError(f"{args.results}: no results (expected a cells/ folder)")
    out = args.out or args.results
    console = terminal_console(stderr=False)
    options = board_options(host, args.resamples, args.max_samples)
    if not args.check:
        for path in write_leaderboards(host, args.results, out, console, options):
            console.print(f"wrote {path}")
        return 0
    board = build_board(args.results, options)
    if board.problems:
        raise HarnessError(f"leaderboard --check: {len(board.problems)} result file(s) in "
                           f"{args.results} cannot be trusted (`harness verify --out "
                           f"{args.results}` lists them)")
    checked = [w for w in host.report_writers() if w.checked]
    if not checked:
        raise HarnessError("leaderboard --check: no checked leaderboard writer is loaded")
    stale, regenerated = [], set()
    with tempfile.TemporaryDirectory() as scratch:
        for writer in checked:
            for fresh in writer.write(board, Path(scratch)):
                regenerated.add(fresh.name)
                committed = out / fresh.name
                if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                    stale.append(str(committed))
                    _print_short_diff(committed, fresh)
    unchecked = {name for w in host.report_writers() if not w.checked for name in w.outputs}
    digest = board_digest(board)
    for name in sorted(unchecked):  # plots: the board they were drawn from, not their pixels
        if name.endswith(".png") and drawn_from(out / name) != digest:
            stale.append(str(out / name))
    orphans = sorted(str(p) for p in out.glob("leaderboard*.*")
                     if p.name not in regenerated and p.name not in unchecked)
    if stale or orphans:
        problems = ([f"out of date: {', '.join(stale)}"] if stale else []) + (
            [f"not regenerated by any loaded writer: {', '.join(orphans)}"] if orphans else [])
        raise HarnessError(f"leaderboard {'; '.join(problems)} (regenerate with "
                           f"`harness leaderboard --results {args.results}`)")
    for table in rich_tables(board, console.width):
        console.print(table, soft_wrap=False)
    console.print("leaderboard files match the results")
    return 0


def _print_short_diff(committed: Path, fresh: Path, most: int = 20) -> None:
    """What changed in a stale leaderboard file, at most `most` lines of a unified diff."""
    import difflib

    if not committed.exists():
        print(f"missing: {committed}", file=sys.stderr)
        return
    try:
        old = committed.read_text(encoding="utf-8").splitlines()
        new = fresh.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        print(f"differs: {committed} (not text)", file=sys.stderr)
        return
    diff = list(difflib.unified_diff(old, new, str(committed), "regenerated", n=0, lineterm=""))
    for line in diff[:most]:
        print(redact(line[:200]), file=sys.stderr)
    if len(diff) > most:
        print(f"... {len(diff) - most} more diff lines", file=sys.stderr)


# ----------------------------------------------------------------------------- compare


def cmd_compare(host: Host, args: argparse.Namespace) -> int:
    from harness.report.board import compare_rows

    if not (args.results / "cells").is_dir():
        raise UsageError(f"{args.results}: no results (expected a cells/ folder)")
    options = dataclasses.replace(board_options(host, args.resamples), max_samples=0)
    row_a, row_b, comparisons = compare_rows(args.results, args.a, args.b, _split(args.task),
                                             options)
    if args.json:
        print(json.dumps({"a": {"key": row_a.key, "label": row_a.label},
                          "b": {"key": row_b.key, "label": row_b.label},
                          "tasks": {c.task.name: c.result.to_dict() if c.result
                                    else {"unavailable": c.unavailable} for c in comparisons}},
                         indent=2, sort_keys=True))
        return 0
    # a block of short lines per task: it fits any terminal, whatever the labels
    print(f"A = {row_a.label}\nB = {row_b.label}")
    tested, unscored = 0, []
    for comparison in comparisons:
        result, task = comparison.result, comparison.task
        arrow = "↑" if task.higher_is_better else "↓"
        if result is None and "missing / missing" in comparison.unavailable:
            unscored.append(task.name)  # neither row ran it: one line for all of them below
            continue
        if result is None:
            print(f"{task.name} ({task.metric_label} {arrow}): no test ({comparison.unavailable})")
            continue
        tested += 1
        unpaired = (f" (+{result.only_a} only in A, +{result.only_b} only in B, left out)"
                    if result.docs_differ else "")
        print(f"{task.name} ({task.metric_label} {arrow}), {result.n} paired documents{unpaired}:")
        print(f"  A {result.score_a:.4g}  B {result.score_b:.4g}  A-B {result.difference:+.4g} "
              f"[95% CI {result.ci_low:+.4g}, {result.ci_high:+.4g}]")
        print(f"  {result.test} p {result.p_value:.3g}, Holm {result.p_holm:.3g}"
              + (" *" if result.significant() else "")
              + f"; A wins/losses/ties {result.wins}/{result.losses}/{result.ties}")
    width = shutil.get_terminal_size().columns
    if unscored:
        print(textwrap.fill(f"neither row ran: {', '.join(unscored)}", width))
    print(textwrap.fill(f"* Holm-corrected p < 0.05 over the {tested} task(s) tested; paired "
                        f"bootstrap of {args.resamples} resamples for the intervals (and the p "
                        f"of non-0/1 metrics); documents paired by id.", width))
    return 0


# ----------------------------------------------------------------------------- rescore


def cmd_rescore(host: Host, args: argparse.Namespace) -> int:
    from harness.results.rescore import rescore

    if not (args.results / "cells").is_dir():
        raise UsageError(f"{args.results}: no results (expected a cells/ folder)")
    done = rescore(host, args.results, args.out, _split(args.task),
                   parse_pairs(args.task_option, "-O"))
    for item in done:
        record = item.record
        change = ", ".join(f"{k} {_number_text(a)} -> {_number_text(b)}"
                           for k, (a, b) in item.changed.items()) or "metrics unchanged"
        print(f"{record.row.label} × {record.task.name}: {change}")
    print(f"rescored {len(done)} cell(s) from {args.results} into {args.out}")
    return 0


def _number_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


# ----------------------------------------------------------------------------- status, verify


def cmd_status(host: Host, args: argparse.Namespace) -> int:
    from harness.results.status import matrix_status, print_status

    status = matrix_status(host, args.out)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in status], indent=2, default=str))
    else:
        print_status(status, args.out)
    return 0


def cmd_verify(host: Host, args: argparse.Namespace) -> int:
    from harness.results.store import Store

    if not args.out.is_dir():
        raise UsageError(f"{args.out}: no such results folder")
    store = Store(args.out)
    problems = store.verify()
    if args.repair:
        for problem, target in store.quarantine(problems):
            print(f"moved {problem.path} to {target} ({problem.reason})")
        problems = store.verify()
    for problem in problems:
        print(f"untrusted: {problem}")
    if problems and args.repair:
        raise HarnessError(f"{len(problems)} file(s) in {args.out} were left in place (listed "
                           f"above: records of a newer harness)")
    if problems:
        raise HarnessError(f"{len(problems)} file(s) in {args.out} cannot be trusted (listed "
                           f"above); the next run that includes their cells recomputes them, "
                           f"or `harness verify --out {args.out} --repair` moves them into "
                           f"{args.out / 'quarantine'}")
    print(f"{args.out}: every result matches its checksum and schema")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "leaderboard": cmd_leaderboard,
            "compare": cmd_compare, "rescore": cmd_rescore,
            "status": cmd_status, "verify": cmd_verify, "_job": cmd_job}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        host = load_host(args.plugins)
        return COMMANDS[args.command](host, args)
    except HarnessError as exc:
        if args.debug:
            raise
        print(redact(f"harness: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `harness list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 0
    except (OSError, ValueError) as exc:  # the file system or a library refused: still one line
        if args.debug:
            raise
        print(redact(f"harness: error: {type(exc).__name__}: {first_line(exc)}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted; finished cells are kept, rerun the same command to resume",
              file=sys.stderr)
        return 130

