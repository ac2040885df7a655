"""`harness compare`: one row against another on every task they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.contract.board import Board, BoardOptions, BoardRow, BoardTask
from harness.report.board import build_board
from harness.report.comparisons import paired_test
from harness.report.documents import CellData, latest_per_cell
from harness.report.significance import Comparison, holm
from harness.results.store import Store


@dataclass(frozen=True)
class RowComparison:
    """Two rows' paired test on one task, or why there is none (`unavailable`)."""

    task: BoardTask
    result: Comparison | None
    unavailable: str = ""


def compare_rows(results_root: Path, a: str, b: str, tasks: Sequence[str] = (),
                 options: BoardOptions | None = None
                 ) -> tuple[BoardRow, BoardRow, list[RowComparison]]:
    """Row `a` against row `b` (labels or row keys) on every task (or `tasks`) of the
    results, Holm-corrected over the tasks tested. Unknown names raise UsageError."""
    from harness.errors import UsageError

    options = options or BoardOptions(max_samples=0)
    store = Store(results_root)
    chosen = latest_per_cell([*store.results(), *store.failures()])
    board = build_board(results_root, dataclasses.replace(options, max_samples=0))
    rows = [find_row(board, name, results_root) for name in (a, b)]
    unknown = sorted(set(tasks) - {t.name for t in board.tasks})
    if unknown:
        raise UsageError(f"no task {', '.join(unknown)} in {results_root}; tasks: "
                         f"{', '.join(t.name for t in board.tasks)}")
    cells = CellData(store, chosen, options)
    found_comparisons: list[RowComparison] = []
    for task in board.tasks:
        if tasks and task.name not in tasks:
            continue
        statuses = [r.cells[task.name].status for r in rows]
        if statuses != ["ok", "ok"]:
            found_comparisons.append(RowComparison(task, None, "not scored in both rows ("
                                                   + " / ".join(statuses) + ")"))
            continue
        result = paired_test(cells, task, rows[0], rows[1], options)
        found_comparisons.append(RowComparison(task, None, result) if isinstance(result, str)
                                 else RowComparison(task, result))
    tested = [c for c in found_comparisons if c.result is not None]
    corrected = holm([c.result.p_value for c in tested if c.result is not None])
    by_task = {c.task.name: p for c, p in zip(tested, corrected)}
    return rows[0], rows[1], [
        dataclasses.replace(c, result=dataclasses.replace(c.result, p_holm=by_task[c.task.name]))
        if c.result is not None else c for c in found_comparisons]


def find_row(board: Board, name: str, results_root: Path) -> BoardRow:
    """The row `name` means: its label or key, else the one row of that method, else the
    one row whose label starts with `name`; anything else is a usage error naming the
    candidates."""
    from harness.errors import UsageError

    for matches in ([r for r in board.rows if name in (r.label, r.key)],
                    [r for r in board.rows if r.method == name],
                    [r for r in board.rows if r.label.startswith(name)]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"{name!r} matches {len(matches)} rows in {results_root}: "
                             + "; ".join(repr(r.label) for r in matches[:6])
                             + ("; ..." if len(matches) > 6 else "") + " (quote a longer label)")
    raise UsageError(f"no row {name!r} in {results_root}; rows: "
                     f"{', '.join(repr(r.label) for r in board.rows) or 'none'}")
