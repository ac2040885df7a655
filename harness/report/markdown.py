"""The board as a Markdown table (leaderboard.md)."""

from __future__ import annotations

from harness.contract.board import COST_HEADER, COST_NOTE, Board
from harness.report.formatting import (format_flops, format_params, marked, significance_note,
                                       win_rate_text)


def markdown(board: Board) -> str:
    notes = board.reasons()
    header = ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
              COST_HEADER]
    lines = ["# Leaderboard", ""]
    for warning in (board.untrusted_warning(), board.smoke_warning()):
        if warning:
            lines += [f"> **{warning}**", ""]
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in board.rows:
        cells = [marked(board, row.cells[t.name], row.cells[t.name].text()) for t in board.tasks]
        lines.append("| " + " | ".join([row.label, *cells, win_rate_text(row),
                                        format_params(row.trainable_params),
                                        format_flops(row.flops_per_document)]) + " |")
    seeds = any(cell.seed_spread is not None for row in board.rows for cell in row.cells.values())
    lines += ["", "Cells show the headline metric ± its standard error"
              + ("; a cell over several seeds (\"(3 seeds)\") shows their mean ± the standard "
                 "deviation over seeds" if seeds else "")
              + ". Mean win rate: the share of other methods a method beats on a task, averaged "
              "over tasks. " + COST_NOTE, ""]
    note = significance_note(board)
    if note:
        lines += [note, ""]
    lines += ["Data: " + "; ".join(f"{t.name}: {t.data}" for t in board.tasks) + ".", ""]
    lines += [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"
