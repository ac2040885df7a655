"""How counts, win rates and markers read in every text format."""

from __future__ import annotations

from harness.contract.board import SIGNIFICANT, Board, BoardCell, BoardRow
from harness.report.significance import BOOTSTRAP, MCNEMAR


def format_params(count: int | None) -> str:
    return _format_count(count, (("B", 1e9), ("M", 1e6), ("K", 1e3)))


def format_flops(count: int | None) -> str:
    return _format_count(count, (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)))


def _format_count(count: int | None, units: tuple[tuple[str, float], ...]) -> str:
    if count is None:
        return "—"
    for unit, size in units:
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def win_rate_text(row: BoardRow) -> str:
    return "—" if row.mean_win_rate is None else f"{row.mean_win_rate:.2f}"


def marked(board: Board, cell: BoardCell, text: str) -> str:
    markers = board.markers(cell)
    return text + (f" {SIGNIFICANT}" if cell.significant else "") + "".join(
        f" [{m}]" for m in markers)


def significance_note(board: Board) -> str:
    """What the significance mark means, for the board's footer ("" when nothing was
    tested)."""
    if not board.comparisons:
        return ""
    return (f"{SIGNIFICANT}: differs from the row's reference row on that task (the best "
            f"`single` row of the row's own models, else the top row) by a paired test over "
            f"the documents both evaluated ({MCNEMAR} for 0/1 metrics, {BOOTSTRAP} of "
            f"{board.options.resamples} resamples otherwise), Holm-corrected p < "
            f"{board.options.alpha:g} over the {board.comparisons} comparisons shown; "
            f"differences, 95% intervals and p-values are in leaderboard.json and the HTML "
            f"cell details.")
