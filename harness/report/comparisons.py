"""The board's paired tests: every scored cell against its row's reference row on the same
task, Holm-corrected over all the comparisons the board shows."""

from __future__ import annotations

import dataclasses

from harness.contract.board import Board, BoardOptions, BoardRow, BoardTask
from harness.errors import DataError
from harness.report.documents import CellData
from harness.report.significance import Comparison, DocumentScores, compare, holm, pair_seed


def paired_test(cells: "CellData", task: BoardTask, row: BoardRow, other: BoardRow,
            options: BoardOptions) -> Comparison | str:
    """The paired test of `row` against `other` on `task`, or why there is none."""
    mine, theirs = cells.scores(row.key, task.name), cells.scores(other.key, task.name)
    for scores in (mine, theirs):
        if isinstance(scores, str):
            return scores
    assert isinstance(mine, DocumentScores) and isinstance(theirs, DocumentScores)
    try:
        return compare(task.name, task.metric_key, mine, theirs, task.higher_is_better,
                       options.resamples, pair_seed(options.seed, task.name, row.key, other.key))
    except DataError as exc:
        return str(exc)


def reference_row(board: Board, row: BoardRow, task: BoardTask) -> BoardRow | None:
    """The row `row` is tested against on `task`: the best `single` row among its own
    models, else the board's first row with a score there."""
    scored = [r for r in board.rows if r.cells[task.name].status == "ok"]
    members = [r for r in scored if r.method == "single" and set(r.models) <= set(row.models)]
    if members:
        sign = 1 if task.higher_is_better else -1
        return max(members, key=lambda r: sign * (r.cells[task.name].value or 0.0))
    return scored[0] if scored else None


def add_comparisons(board: Board, cells: CellData) -> None:
    """Every scored cell against its row's reference row on the same task, Holm-corrected
    over all the comparisons of the board."""
    tested = []
    for task in board.tasks:
        for row in board.rows:
            cell = row.cells[task.name]
            reference = reference_row(board, row, task) if cell.status == "ok" else None
            if reference is None or reference is row:
                continue
            base = {"reference": reference.label, "reference_key": reference.key}
            result = paired_test(cells, task, row, reference, board.options)
            if isinstance(result, str):
                cell.comparison = base | {"unavailable": result}
                continue
            cell.comparison = base
            tested.append((cell, result))
            if result.docs_differ:
                cell.flags.append(
                    f"tested against {reference.label} on the {result.n} documents both "
                    f"evaluated ({result.only_a} only here, {result.only_b} only there)")
    for (cell, result), p_holm in zip(tested, holm([r.p_value for _, r in tested])):
        result = dataclasses.replace(result, p_holm=p_holm)
        cell.significant = result.significant(board.options.alpha)
        assert cell.comparison is not None
        cell.comparison.update(result.to_dict(), significant=cell.significant,
                               alpha=board.options.alpha)
