"""The run's one live display: matrix progress, the current cell and its phase.

`LiveRun` is a pluggy plugin (it follows the run through the lifecycle hooks) and a
`harness.run.progress` sink (it follows the current cell's phases: load, fit with its loss,
lm-eval requests, score). It draws on a duplicate of the terminal's file descriptor taken
before the run starts, so that the library output the runner redirects into each cell's
log file never reaches it.

Where that stream is not a terminal (CI logs, `nohup`, Slurm, `| tee`) a display redrawn
in place would show nothing until the end, so it writes plain lines instead: the plan, each
cell as it starts and ends (with the counts and the ETA) and a line on the current cell's
phase at most every `HEARTBEAT_S` seconds. Failures go to `errors` as they happen, one line
each, in both modes (the CLI keeps them on stderr and plain progress on stdout).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from harness import hookimpl
from harness.errors import redact

HEARTBEAT_S = 30.0  # without a terminal: at most one line this often while a cell works


def terminal_console(stderr: bool = True) -> Console:
    """A console on a private duplicate of the terminal's stream: unaffected when the
    runner points file descriptors 1 and 2 at a cell's log."""
    stream: IO[str] = sys.stderr if stderr else sys.stdout
    try:
        duplicate: IO[str] = os.fdopen(os.dup(stream.fileno()), "w", buffering=1, encoding="utf-8",
                              errors="replace")
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        duplicate = stream
    return Console(file=duplicate, highlight=False, soft_wrap=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class LiveRun:
    """Progress of a whole run, redrawn in place."""

    def __init__(self, console: Console, total: int, heartbeat_s: float = HEARTBEAT_S,
                 errors: Console | None = None) -> None:
        self.console = console
        self.errors = errors or console  # where failures go as they happen
        self.total = total
        self.plain = not console.is_terminal  # lines, not a display redrawn in place
        self.heartbeat_s = heartbeat_s
        self.last_line = time.monotonic()
        self.counts = {"ok": 0, "skipped": 0, "n/a": 0, "failed": 0, "busy": 0}
        self.cell_title = ""
        self.phase_name = ""
        self.phase_total: int | None = None
        self.phase_done = 0
        self.facts: dict[str, Any] = {}
        self.started = time.monotonic()
        self.computed_seconds = 0.0
        self.cell_started = 0.0
        self.live = Live(self, console=console, refresh_per_second=4, transient=True,
                         redirect_stdout=False, redirect_stderr=False)

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def harness_run_started(self, plan: Any) -> None:
        if self.plain and plan.count("pending"):
            states = ", ".join(f"{plan.count(state)} {name}" for state, name in (
                ("pending", "to compute"), ("done", "done before"), ("n/a", "n/a"),
                ("error", "refused"), ("unavailable", "not run here")) if plan.count(state))
            self._line(f"run: {self.total} cells ({states})")

    @hookimpl
    def harness_cell_started(self, cell: Any) -> None:
        self.cell_title = cell.title
        self.cell_started = time.monotonic()
        self.phase("load")
        if self.plain:
            documents = f" ({cell.documents})" if cell.documents else ""
            self._line(f"[{self.finished + 1}/{self.total}] started {cell.title}{documents}")

    @hookimpl
    def harness_cell_finished(self, cell: Any, outcome: Any) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        took = time.monotonic() - self.cell_started if self.cell_started else None
        if outcome.status in ("ok", "failed") and took is not None:
            self.computed_seconds += took
        if outcome.status == "failed":
            self.errors.print(f"[red]failed[/red] {escape(cell.title)}: "
                               f"{escape(redact(outcome.error))}")
        elif self.plain and outcome.status == "ok":
            value = "" if outcome.headline is None else f" = {outcome.headline:.4g}"
            self._line(f"[{self.finished}/{self.total}] ok {cell.title}{value} in "
                       f"{_duration(took)} · {self._progress()}")
        self.cell_title, self.cell_started = "", 0.0

    # ------------------------------------------------------------------ progress sink

    def phase(self, name: str, total: int | None = None) -> None:
        self.phase_name, self.phase_total, self.phase_done, self.facts = name, total, 0, {}

    def advance(self, steps: int = 1, **facts: Any) -> None:
        self.phase_done += steps
        self.facts.update(facts)
        if self.plain and time.monotonic() - self.last_line >= self.heartbeat_s:
            self._line(f"  {self.cell_title}: {self._phase_text()} "
                       f"{self.phase_done}/{self.phase_total or '?'} · {self._progress()}")

    # ------------------------------------------------------------------ plain lines

    def _line(self, text: str) -> None:
        self.console.print(escape(text), soft_wrap=True)
        self.last_line = time.monotonic()

    def _progress(self) -> str:
        return (f"{self.finished}/{self.total} cells, {self.counts['failed']} failed, "
                f"elapsed {_duration(time.monotonic() - self.started)}, ETA {_duration(self.eta())}")

    def _phase_text(self) -> str:
        return (f"{self.phase_name} (loss {self.facts['loss']:.4f})" if "loss" in self.facts
                else self.phase_name)

    # ------------------------------------------------------------------ drawing

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> float | None:
        computed = self.counts["ok"] + self.counts["failed"]
        if not computed:
            return None
        remaining = self.total - self.finished
        return self.computed_seconds / computed * remaining

    def __rich__(self) -> Group:
        summary = Table.grid(padding=(0, 1))
        summary.add_row(
            ProgressBar(total=max(self.total, 1), completed=self.finished, width=24),
            Text(f"{self.finished}/{self.total} cells"),
            Text(f"elapsed {_duration(time.monotonic() - self.started)} · "
                 f"ETA {_duration(self.eta())}"))
        # the counts on a line of their own: beside the bar they wrap mid-phrase at 80 columns
        counts = Text.from_markup(f"[green]{self.counts['ok']} ok[/green] · "
                                  f"{self.counts['skipped']} done before · "
                                  f"{self.counts['n/a']} n/a · "
                                  f"[red]{self.counts['failed']} failed[/red]")
        parts: list[Any] = [summary, counts]
        if self.cell_title:
            now = Table.grid(padding=(0, 1))
            phase = self._phase_text()
            bar: Any = (ProgressBar(total=max(self.phase_total, 1), completed=self.phase_done,
                                    width=24)
                        if self.phase_total else Text(""))
            counter = (f"{self.phase_done}/{self.phase_total}" if self.phase_total
                       else f"{_duration(time.monotonic() - self.cell_started)}")
            now.add_row(Text(self.cell_title, style="bold"), Text(phase, style="cyan"), bar,
                        Text(counter))
            parts.append(now)
        return Group(*parts)

    def __enter__(self) -> "LiveRun":
        if not self.plain:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.plain:
            self.live.__exit__(*exc)
