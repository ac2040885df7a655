"""Commands that read a run back: `harness status`, `harness verify`, `harness rescore`."""

from __future__ import annotations

import argparse
import dataclasses
import json

from harness.cli.arguments import split_names
from harness.cli.boards import number_text
from harness.errors import HarnessError, UsageError
from harness.host import Host
from harness.options import parse_pairs


def cmd_rescore(host: Host, args: argparse.Namespace) -> int:
    from harness.results.rescore import rescore

    if not (args.results / "cells").is_dir():
        raise UsageError(f"{args.results}: no results (expected a cells/ folder)")
    done = rescore(host, args.results, args.out, split_names(args.task),
                   parse_pairs(args.task_option, "-O"))
    for item in done:
        record = item.record
        change = ", ".join(f"{k} {number_text(a)} -> {number_text(b)}"
                           for k, (a, b) in item.changed.items()) or "metrics unchanged"
        print(f"{record.row.label} × {record.task.name}: {change}")
    print(f"rescored {len(done)} cell(s) from {args.results} into {args.out}")
    return 0


def cmd_status(host: Host, args: argparse.Namespace) -> int:
    from harness.results.status import matrix_status, print_status

    status = matrix_status(host, args.results)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in status], indent=2, default=str))
    else:
        print_status(status, args.results)
    return 0


def cmd_verify(host: Host, args: argparse.Namespace) -> int:
    from harness.results.store import Store

    if not args.results.is_dir():
        raise UsageError(f"{args.results}: no such results folder")
    store = Store(args.results)
    problems = store.verify()
    if args.repair:
        for problem, target in store.quarantine(problems):
            print(f"moved {problem.path} to {target} ({problem.reason})")
        problems = store.verify()
    for problem in problems:
        print(f"untrusted: {problem}")
    if problems and args.repair:
        raise HarnessError(f"{len(problems)} file(s) in {args.results} were left in place (listed "
                           f"above: records of a newer harness)")
    if problems:
        raise HarnessError(f"{len(problems)} file(s) in {args.results} cannot be trusted (listed "
                           f"above); the next run that includes their cells recomputes them, "
                           f"or `harness verify --results {args.results} --repair` moves them into "
                           f"{args.results / 'quarantine'}")
    print(f"{args.results}: every result matches its checksum and schema")
    return 0
