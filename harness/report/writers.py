"""The host's leaderboard writers, contributed through the `harness_report_writers` hook
like a third-party writer would be (LaTeX, CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.contract import ReportWriter
from harness.contract.board import Board
from harness.errors import redact
from harness.files import atomic_write_text
from harness.report.html import html_page
from harness.report.json_board import board_json
from harness.report.markdown import markdown
from harness.report.plots import PNG_FILES, plot_cost_png, plot_png


def _text_writer(name: str, filename: str, render: Any) -> ReportWriter:
    def write(board: Board, out_dir: Path) -> list[Path]:
        target = Path(out_dir) / filename
        atomic_write_text(target, redact(render(board)))
        return [target]

    return ReportWriter(name, write, checked=True)


def _png_writer(board: Board, out_dir: Path) -> list[Path]:
    targets = [Path(out_dir) / name for name in PNG_FILES]
    plot_png(board, targets[0])
    plot_cost_png(board, targets[1])
    return targets


@hookimpl
def harness_report_writers() -> list[ReportWriter]:
    return [_text_writer("markdown", "leaderboard.md", markdown),
            _text_writer("html", "leaderboard.html", html_page),
            _text_writer("json", "leaderboard.json", board_json),
            ReportWriter("png", _png_writer, checked=False, outputs=PNG_FILES)]
