"""The board on a terminal: blocks of rows that ran the same tasks, each a rich table that
fits the width."""

from __future__ import annotations

from typing import Any

from harness.contract.board import Board, BoardRow, BoardTask, mean_win_rates
from harness.report.formatting import format_flops, format_params, marked, significance_note


def rich_tables(board: Board, width: int = 80) -> list[Any]:
    """The board for a terminal `width` columns wide, as blocks: the rows that ran the same
    tasks form one table (a sparse matrix would be mostly dashes), blocks on real or
    generated data first, smoke blocks last. A block that is too wide with a column per
    task is drawn with a row per task instead, and cut into parts only when neither fits.
    Values keep their standard errors, † marks and footnote markers; the footnotes follow."""
    from rich.text import Text

    tables: list[Any] = []
    for rows, tasks in _blocks(board):
        smoke = any(_is_smoke(task) for task in tasks)
        names = ", ".join(t.name for t in tasks) if len(tasks) <= 3 else f"{len(tasks)} tasks"
        count = f"{len(rows)} row{'s' * (len(rows) > 1)}"
        title = f"{names}: " + ("smoke numbers" if smoke else count)
        tables += _block_tables(board, rows, tasks, title, width)
    warning = board.smoke_warning()
    if warning:
        tables.append(Text(warning, style="yellow"))
    if board.problems:
        tables.append(Text(board.untrusted_warning(), style="bold red"))
    notes = [significance_note(board)] if any(
        cell.significant for row in board.rows for cell in row.cells.values()) else []
    notes += [f"[{i}] {note}" for i, note in enumerate(board.reasons(), 1)]
    if notes:
        tables.append(Text("\n".join(notes), style="dim"))
    return tables


def _is_smoke(task: BoardTask) -> bool:
    return "embedded" in task.data


def _blocks(board: Board) -> list[tuple[list[BoardRow], list[BoardTask]]]:
    """Rows grouped by the tasks they have a cell on; blocks without smoke data first,
    then the larger ones. Rows in a block are ordered by their win rate within it."""
    groups: dict[tuple[str, ...], list[BoardRow]] = {}
    for row in board.rows:
        present = tuple(t.name for t in board.tasks if row.cells[t.name].status != "missing")
        groups.setdefault(present, []).append(row)
    by_name = {t.name: t for t in board.tasks}
    blocks = [(rows, [by_name[name] for name in names]) for names, rows in groups.items() if names]
    for rows, tasks in blocks:
        rates = mean_win_rates(rows, tasks)
        rows.sort(key=lambda r: -_or_below_all(rates[r.key]))
    blocks.sort(key=lambda b: (any(_is_smoke(t) for t in b[1]), -len(b[0]), b[1][0].name))
    return blocks


def _or_below_all(rate: float | None) -> float:
    return -1.0 if rate is None else rate


def _block_tables(board: Board, rows: list[BoardRow], tasks: list[BoardTask], title: str,
                  width: int) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table

    def value(row: BoardRow, task: BoardTask) -> str:
        cell = row.cells[task.name]
        text = escape(marked(board, cell, cell.text()))
        style = {"n/a": "dim", "failed": "red"}.get(cell.status, "")
        return f"[{style}]{text}[/{style}]" if style else text

    extras: list[tuple[str, Any]] = [("trainable", lambda r: format_params(r.trainable_params)),
                                     ("FLOPs/doc", lambda r: format_flops(r.flops_per_document))]
    if len(tasks) > 1 and len(rows) > 1:
        rates = mean_win_rates(rows, tasks)
        extras.insert(0, ("win rate", lambda r: "—" if rates[r.key] is None
                          else f"{rates[r.key]:.2f}"))
    label_width = min(32, max(len(r.label) for r in rows))
    value_width = max(len(marked(board, r.cells[t.name], r.cells[t.name].text()))
                      for r in rows for t in tasks)
    task_width = max(value_width, max(len(t.name) for t in tasks))
    wide = label_width + 4 + len(tasks) * (task_width + 3) + len(extras) * 12
    if wide > width:
        tall = max(len(t.name) for t in tasks) + 4 + len(rows) * (
            min(max(value_width, 12), 24) + 3)
        if tall <= width or len(rows) <= len(tasks):  # a row per task: methods as columns
            table = Table(title=escape(title), title_justify="left", expand=False)
            table.add_column("task", style="bold")
            for row in rows:
                table.add_column(escape(row.label), justify="right", overflow="fold")
            for task in tasks:
                table.add_row(escape(task.header), *(value(row, task) for row in rows))
            for name, render in extras:
                table.add_row(name, *(render(row) for row in rows), style="dim")
            return [table]
    per_table = max(1, (width - label_width - 4 - len(extras) * 12) // (task_width + 3))
    parts = [tasks[i:i + per_table] for i in range(0, len(tasks), per_table)]
    tables = []
    for number, part in enumerate(parts, 1):
        suffix = f" ({number}/{len(parts)})" if len(parts) > 1 else ""
        table = Table(title=escape(title + suffix), title_justify="left", expand=False)
        table.add_column("method", style="bold", overflow="fold", max_width=label_width)
        for task in part:
            arrow = "↑" if task.higher_is_better else "↓"
            table.add_column(f"{escape(task.name)}\n{escape(task.metric_label)} {arrow}",
                             justify="right", overflow="fold")
        last = number == len(parts)
        for name, _ in extras if last else []:
            table.add_column(name, justify="right")
        for row in rows:
            table.add_row(escape(row.label), *(value(row, task) for task in part),
                          *(render(row) for _, render in (extras if last else [])))
        tables.append(table)
    return tables
