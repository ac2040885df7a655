"""`harness`: list plugins, run the method x task matrix, write leaderboards, inspect runs.

Exit status: 0 success, 1 a run failure (a cell failed, a model did not load, a plugin did
not import, a results folder is damaged), 2 a usage error (unknown name, bad option,
malformed suite). Errors are one line on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from harness.cli.arguments import build_parser
from harness.cli.boards import cmd_compare, cmd_leaderboard
from harness.cli.inspect import cmd_rescore, cmd_status, cmd_verify
from harness.cli.listing import cmd_list
from harness.cli.running import cmd_job, cmd_run
from harness.errors import HarnessError, first_line, redact
from harness.host import load_host

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
