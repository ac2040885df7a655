"""The command line: the parser of every command, and a run's request read from its
arguments (and its suite file, which the arguments override)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from harness import __version__
from harness.contract.board import DEFAULT_MAX_SAMPLES, DEFAULT_RESAMPLES
from harness.errors import UsageError
from harness.host import Host
from harness.options import option_infos, parse_pairs
from harness.run.request import load_suite
from harness.settings import (DEFAULT_RESULTS, SETTING_NAMES, RunRequest, RunSettings, SuiteMethod,
                              SuiteTask)


def split_names(values: Sequence[str] | None) -> list[str]:
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
    from harness.contract.board import BoardOptions

    if resamples < 1:
        raise UsageError(f"--resamples must be at least 1, got {resamples}")
    if max_samples < 0:
        raise UsageError(f"--max-samples must be at least 0, got {max_samples}")
    return BoardOptions(resamples=resamples, max_samples=max_samples,
                        corpus_metrics={name: spec.corpus_metrics
                                        for name, spec in host.tasks.items()})


def _former_out(parser: argparse.ArgumentParser, kind: Callable[[str], Any] = str) -> None:
    """`--out`: what run, status and verify called the results root before every command
    said `--results`; still read so that existing scripts keep working, no longer shown."""
    parser.add_argument("--out", dest="results", type=kind, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


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
                          "shards share --results, and a cell claimed by one process is skipped by "
                          "the others")
    run.add_argument("--dry-run", action="store_true", help="show the plan (done/pending/n/a) only")
    run.add_argument("--force", action="store_true", help="recompute finished cells")
    run.add_argument("--no-leaderboard", action="store_true",
                     help="do not write leaderboard files into --results after the run")
    _former_out(run)

    board = commands.add_parser("leaderboard", help="leaderboards from result files (no GPU)")
    board.add_argument("--results", type=Path, default=Path(DEFAULT_RESULTS), help="results root")
    board.add_argument("--out", type=Path, help="where to write (default: the results root)")
    board.add_argument("--check", action="store_true",
                       help="fail if the committed leaderboard files differ from regenerated ones")
    _board_arguments(board)

    compare = commands.add_parser("compare",
                                  help="paired tests of two rows on every task they share")
    compare.add_argument("a", metavar="A", help="a row label or row key")
    compare.add_argument("b", metavar="B", help="another row label or row key")
    compare.add_argument("--results", type=Path, default=Path(DEFAULT_RESULTS), help="results root")
    compare.add_argument("--task", "-t", action="append", metavar="NAME",
                         help="only these tasks (repeatable or comma-separated)")
    compare.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                         help=f"paired bootstrap resamples (default {DEFAULT_RESAMPLES})")
    compare.add_argument("--json", action="store_true", help="machine-readable output")

    rescore = commands.add_parser(
        "rescore", help="recompute metrics from stored samples (no model is loaded)")
    rescore.add_argument("--results", type=Path, default=Path(DEFAULT_RESULTS),
                         help="results root to read")
    rescore.add_argument("--out", type=Path, required=True,
                         help="results root to write the rescored cells into")
    rescore.add_argument("--task", "-t", action="append", metavar="NAME",
                         help="only these tasks (repeatable or comma-separated)")
    rescore.add_argument("-O", "--task-option", action="append", default=[], metavar="KEY=VALUE",
                         help="task option to score with (e.g. a new judge); it must not "
                              "change what the model was asked")

    status = commands.add_parser("status", help="a matrix's state from its files alone")
    status.add_argument("--results", type=Path, default=Path(DEFAULT_RESULTS),
                        help="results root")
    _former_out(status, Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    verify = commands.add_parser("verify", help="check every result file of a results folder")
    verify.add_argument("--results", type=Path, default=Path(DEFAULT_RESULTS),
                        help="results root")
    _former_out(verify, Path)
    verify.add_argument("--repair", action="store_true",
                        help="move untrusted files into <results>/quarantine/ (nothing is deleted)")

    worker = commands.add_parser("_job")  # an executor's worker, not for users
    worker.add_argument("spec", type=Path)
    return parser


def request_from_args(args: argparse.Namespace) -> RunRequest:
    request = load_suite(args.suite) if args.suite else RunRequest()
    method_options = parse_pairs(args.method_option, "-o")
    task_options = parse_pairs(args.task_option, "-O")
    models = tuple(split_names(args.models))
    if args.method:
        request.methods = [SuiteMethod(method=name, models=models, options=method_options)
                           for name in split_names(args.method)]
    elif models or method_options:
        request.methods = [dataclasses.replace(entry, models=models or entry.models,
                                               options={**entry.options, **method_options})
                           for entry in request.methods]
    shared, per_task = _scoped_task_options(task_options)
    if args.task:
        request.tasks = [SuiteTask(task=name) for name in split_names(args.task)]
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
