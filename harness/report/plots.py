"""The board as PNG plots: score against trainable parameters, and against inference FLOPs
with the Pareto front."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.contract.board import Board, BoardCell, BoardRow
from harness.report.json_board import board_digest


def plot_png(board: Board, path: Path) -> None:
    """Score vs trainable parameters, one panel per task, one colour per method row (shared
    legend); symlog x so frozen methods sit at 0 beside adapters with thousands of params."""
    widest = max([row.trainable_params or 0 for row in board.rows] + [10])

    def trainable(row: BoardRow, cell: BoardCell) -> float:
        return row.trainable_params or 0

    def axis_style(axis: Any) -> None:
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(-0.5, widest * 5)

    _score_panels(board, path, trainable, "trainable parameters", axis_style, pareto=False)


def plot_cost_png(board: Board, path: Path) -> None:
    """Score vs inference FLOPs per document (log x), one panel per task, the Pareto front
    (no other row is as cheap and at least as good) joined by a step line and ringed."""
    def flops(row: BoardRow, cell: BoardCell) -> float | None:
        value = cell.flops_per_document
        return float(value) if value else None

    def axis_style(axis: Any) -> None:
        from matplotlib.ticker import NullFormatter

        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide

    _score_panels(board, path, flops, "inference FLOPs per document", axis_style, pareto=True)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point dominates (as cheap or cheaper, at least as
    good, better in one), ordered by cost; of equal points the first is kept."""
    sign = 1 if higher_is_better else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1], i))
    front: list[int] = []
    for index in order:
        if not front or sign * points[index][1] > sign * points[front[-1]][1]:
            front.append(index)
    return front


def _score_panels(board: Board, path: Path, x_of: Any, x_label: str, axis_style: Any,
                  pareto: bool) -> None:
    """One panel per task of each scored cell's headline against `x_of(row, cell)`, one
    colour and number per row, the legend beside the panels (never over them). Rows at
    the same point are drawn side by side and labelled with their numbers; a scored cell
    with no x (no cost recorded) is named under its panel, so every row is accounted for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import offset_copy

    tasks = board.tasks
    columns = max(1, min(3, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows),
                                squeeze=False)
    palette = plt.get_cmap("tab20")
    colours = {row.key: palette(i % 20) for i, row in enumerate(board.rows)}
    numbers = {row.key: i for i, row in enumerate(board.rows, 1)}
    for index, axis in enumerate(axes.flat):
        if index >= len(tasks):
            axis.set_visible(False)
            continue
        task = tasks[index]
        placed: dict[tuple[float, float], list[tuple[BoardRow, BoardCell]]] = {}
        unplaced = []
        for row in board.rows:
            cell = row.cells[task.name]
            if cell.status != "ok" or cell.value is None:
                continue
            x = x_of(row, cell)
            if x is None:
                unplaced.append(row)
                continue
            placed.setdefault((x, round(cell.value, 9)), []).append((row, cell))
        for (x, y), group in placed.items():
            spread = max(cell.stderr or 0.0 for _, cell in group)
            axis.update_datalim([(x, y - spread), (x, y + spread)])  # shifted artists do not
            for slot, (row, cell) in enumerate(group):  # side by side, 5 px apart
                shift = offset_copy(axis.transData, fig=figure, units="points",
                                    x=5 * (slot - (len(group) - 1) / 2))
                axis.errorbar([x], [cell.value], yerr=[cell.stderr or 0], fmt="o", capsize=3,
                              color=colours[row.key], transform=shift)
            if len(group) > 1:
                axis.annotate(",".join(str(numbers[r.key]) for r, _ in group), (x, y),
                              xytext=(4 + 2.5 * len(group), 3), textcoords="offset points",
                              fontsize=7, color="0.25")
        points = list(placed)
        if pareto and points:
            front = [points[i] for i in pareto_front(points, task.higher_is_better)]
            axis.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.3",
                      linewidth=1, linestyle="--")
            axis.scatter([p[0] for p in front], [p[1] for p in front], s=140,
                         facecolors="none", edgecolors="0.3")
        elif pareto:
            axis.text(0.5, 0.5, "no cost recorded", ha="center", va="center",
                      transform=axis.transAxes, color="0.5")
        axis.autoscale_view()
        if points or not pareto:
            axis_style(axis)
        axis.set_xlabel(x_label + ("\nnot shown, no cost recorded: " + ", ".join(
            str(numbers[r.key]) for r in unplaced) if unplaced else ""))
        axis.set_ylabel(task.metric_label)
        axis.set_title(task.name)
        axis.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[row.key])
               for row in board.rows]
    labels = [f"{numbers[row.key]}  {row.label}" for row in board.rows]
    if pareto:
        handles.append(plt.Line2D([], [], marker="o", markersize=10, markerfacecolor="none",
                                  color="0.3", linestyle="--"))
        labels.append("Pareto front")
    figure.tight_layout()
    legend = figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                           fontsize=7, frameon=False)
    # the canvas grows to hold the legend beside the panels
    figure.savefig(path, dpi=110, metadata={"Software": None, BOARD_DIGEST_KEY: board_digest(board)},
                   bbox_inches="tight", bbox_extra_artists=[legend])
    plt.close(figure)


PNG_FILES = ("leaderboard.png", "leaderboard-cost.png")


# Pixels depend on matplotlib's and FreeType's versions, so `leaderboard --check` does not
# compare a plot's bytes: each PNG carries the digest of the board it was drawn from.
BOARD_DIGEST_KEY = "harness-board-sha256"


def drawn_from(path: Path) -> str | None:
    """The board digest a plot was drawn from (None: not a harness plot, or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(BOARD_DIGEST_KEY)
    except OSError:
        return None
