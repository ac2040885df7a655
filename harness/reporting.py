"""Leaderboards from result files only: no torch, no GPU, no datasets.

`build_board` reads every cell's result.json (and failure records) under a results root and
arranges them as method rows x task columns. Writers turn a board into Markdown, a static
HTML page, JSON with per-cell provenance and a PNG plot; they are contributed through the
`harness_report_writers` hook (this module is itself a plugin), so a third-party package can
add LaTeX or CSV the same way. Every text output is deterministic: regenerating it from the
same results gives the same bytes, which is what `harness leaderboard --check` relies on.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.hookspecs import ReportWriter
from harness.store import Store, atomic_write_text


@dataclass
class BoardCell:
    status: str  # "ok", "n/a", "failed" or "missing"
    value: float | None = None
    stderr: float | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def text(self, digits: int = 3) -> str:
        if self.status == "ok" and self.value is not None:
            if self.stderr is None:
                return f"{self.value:.{digits}f}"
            return f"{self.value:.{digits}f} ± {self.stderr:.{digits}f}"
        return {"n/a": "n/a", "failed": "failed"}.get(self.status, "—")


@dataclass
class BoardTask:
    name: str
    metric_key: str
    metric_label: str
    higher_is_better: bool
    data: str

    @property
    def header(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{self.name} ({self.metric_label} {arrow})"


@dataclass
class BoardRow:
    label: str
    method: str
    models: list[str]
    trainable_params: int | None
    total_params: int | None
    cells: dict[str, BoardCell]
    mean_win_rate: float | None = None


@dataclass
class Board:
    tasks: list[BoardTask]
    rows: list[BoardRow]

    def reasons(self) -> list[str]:
        """Distinct n/a and failure reasons, in first-seen order (footnote numbering)."""
        seen: list[str] = []
        for row in self.rows:
            for task in self.tasks:
                cell = row.cells[task.name]
                note = _note(cell)
                if note and note not in seen:
                    seen.append(note)
        return seen


def _note(cell: BoardCell) -> str:
    if cell.status == "n/a":
        return f"n/a: {cell.reason}"
    if cell.status == "failed":
        return f"failed: {cell.reason}"
    return ""


def _latest_per_cell(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (record["method"]["label"], record["task"]["name"])
        if key not in chosen or record.get("finished_at", "") > chosen[key].get("finished_at", ""):
            chosen[key] = record
    return chosen


def _data_description(record: dict[str, Any]) -> str:
    limit = record.get("limit", record.get("identity", {}).get("limit"))
    data = record["task"].get("data", "")
    return data if limit is None else f"{data} (limit {limit})"


def build_board(results_root: Path) -> Board:
    """The newest record (result or failure) of every row x task, arranged as a board."""
    store = Store(results_root)
    chosen = _latest_per_cell([*store.results(), *store.failures()])

    tasks: dict[str, BoardTask] = {}
    rows: dict[str, BoardRow] = {}
    for (label, task_name), record in sorted(chosen.items()):
        headline = record["task"]["headline"]
        column = tasks.setdefault(task_name, BoardTask(
            task_name, headline["key"], headline["label"], headline["higher_is_better"], ""))
        sources = set(filter(None, column.data.removeprefix("mixed: ").split("; ")))
        sources.add(_data_description(record))
        # rows run on different data or limits are not comparable: say so in the table
        column.data = ("mixed: " if len(sources) > 1 else "") + "; ".join(sorted(sources))
        row = rows.setdefault(label, BoardRow(
            label=label, method=record["method"]["name"],
            models=[m["id"] for m in record["method"]["models"]],
            trainable_params=None, total_params=None, cells={}))
        report = record.get("method_report") or {} if record["status"] == "ok" else {}
        if row.trainable_params is None and report.get("trainable_params") is not None:
            row.trainable_params = report["trainable_params"]
            row.total_params = report.get("total_params")
        row.cells[task_name] = _board_cell(record)

    ordered_tasks = [tasks[name] for name in sorted(tasks)]
    for row in rows.values():
        for task in ordered_tasks:
            row.cells.setdefault(task.name, BoardCell("missing", reason="not run"))
    board = Board(ordered_tasks, list(rows.values()))
    _add_mean_win_rates(board)
    board.rows.sort(key=lambda r: (-(r.mean_win_rate if r.mean_win_rate is not None else -1),
                                   r.label))
    return board


def _board_cell(record: dict[str, Any]) -> BoardCell:
    status = record["status"]
    provenance = {"fingerprint": record.get("fingerprint"), "data": record["task"].get("data"),
                  "n_samples": record.get("n_samples"), "limit": record.get("limit"),
                  "seed": record.get("seed"), "git_commit": record.get("git_commit"),
                  "versions": record.get("identity", {}).get("versions")}
    if status == "ok":
        value = record["headline"]["value"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            reason = ((record.get("score_details") or {}).get("headline_unavailable")
                      or "no score could be computed (NaN)")
            return BoardCell("failed", reason=reason, provenance=provenance)
        return BoardCell("ok", value, record["headline"]["stderr"], provenance=provenance)
    reason = record.get("reason") or record.get("error") or ""
    return BoardCell(status, reason=reason, provenance=provenance)


def _add_mean_win_rates(board: Board) -> None:
    """HELM's mean win rate: per task, the share of other rows a row beats (ties count half),
    averaged over the tasks where it has a score. Scale-free, so tasks with metrics on
    different scales weigh the same."""
    rates: dict[str, list[float]] = {row.label: [] for row in board.rows}
    for task in board.tasks:
        scored = [(row.label, row.cells[task.name].value) for row in board.rows
                  if row.cells[task.name].status == "ok"]
        if len(scored) < 2:
            continue
        sign = 1 if task.higher_is_better else -1
        for label, value in scored:
            wins = sum(1.0 if sign * value > sign * other else 0.5 if value == other else 0.0
                       for other_label, other in scored if other_label != label)
            rates[label].append(wins / (len(scored) - 1))
    for row in board.rows:
        row.mean_win_rate = sum(rates[row.label]) / len(rates[row.label]) if rates[row.label] else None


# ----------------------------------------------------------------------------- writers


def _format_params(count: int | None) -> str:
    if count is None:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def _win_rate_text(row: BoardRow) -> str:
    return "—" if row.mean_win_rate is None else f"{row.mean_win_rate:.2f}"


def markdown(board: Board) -> str:
    notes = board.reasons()
    header = ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params"]
    lines = ["# Leaderboard", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in board.rows:
        cells = []
        for task in board.tasks:
            cell = row.cells[task.name]
            note = _note(cell)
            cells.append(cell.text() + (f" [{notes.index(note) + 1}]" if note else ""))
        lines.append("| " + " | ".join([row.label, *cells, _win_rate_text(row),
                                        _format_params(row.trainable_params)]) + " |")
    lines += ["", "Cells show the headline metric ± its standard error. Mean win rate: the share of "
              "other methods a method beats on a task, averaged over tasks.", ""]
    lines += ["Data: " + "; ".join(f"{t.name}: {t.data}" for t in board.tasks) + ".", ""]
    lines += [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def board_json(board: Board) -> str:
    payload = {
        "tasks": [{"name": t.name, "metric": t.metric_key, "label": t.metric_label,
                   "higher_is_better": t.higher_is_better, "data": t.data} for t in board.tasks],
        "rows": [{"label": r.label, "method": r.method, "models": r.models,
                  "trainable_params": r.trainable_params, "total_params": r.total_params,
                  "mean_win_rate": r.mean_win_rate,
                  "cells": {name: {"status": c.status, "value": c.value, "stderr": c.stderr,
                                   "reason": c.reason, "provenance": c.provenance}
                            for name, c in r.cells.items()}}
                 for r in board.rows],
    }
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness leaderboard</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse}}th,td{{padding:.35rem .7rem;border-bottom:1px solid #ddd;text-align:right}}
th{{cursor:pointer;background:#f4f4f4;position:sticky;top:0}}th:after{{content:" ⇅";color:#aaa}}
td:first-child,th:first-child{{text-align:left}}td.na{{color:#888}}td.failed{{color:#b00}}
.notes{{color:#555;font-size:.9rem}}
</style></head><body>
<h1>Leaderboard</h1>
<p>Headline metric ± standard error per task; click a column to sort. Hover a cell for its provenance.</p>
<table id="board"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<div class="notes">{notes}</div>
<script type="application/json" id="data">{data}</script>
<script>
document.querySelectorAll("#board th").forEach((th, col) => th.addEventListener("click", () => {{
  const body = document.querySelector("#board tbody");
  const rows = [...body.rows];
  const dir = th.dataset.dir === "desc" ? 1 : -1;
  th.dataset.dir = dir === 1 ? "asc" : "desc";
  const key = r => {{ const v = r.cells[col].dataset.sort; return v === undefined ? r.cells[col].textContent : parseFloat(v); }};
  rows.sort((a, b) => {{ const x = key(a), y = key(b);
    if (typeof x === "number" && typeof y === "number") return dir * (x - y);
    if (typeof x === "number") return -1; if (typeof y === "number") return 1;
    return dir * String(x).localeCompare(String(y)); }});
  rows.forEach(r => body.appendChild(r));
}}));
</script></body></html>
"""


def html_page(board: Board) -> str:
    notes = board.reasons()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params"])
    body = []
    for row in board.rows:
        tds = [f"<td>{html.escape(row.label)}</td>"]
        for task in board.tasks:
            cell = row.cells[task.name]
            note = _note(cell)
            title = html.escape(json.dumps(cell.provenance, sort_keys=True) if cell.status == "ok"
                                else note or cell.reason, quote=True)
            sort = f' data-sort="{cell.value!r}"' if cell.value is not None else ""
            css = {"n/a": ' class="na"', "failed": ' class="failed"'}.get(cell.status, "")
            marker = f"<sup>{notes.index(note) + 1}</sup>" if note else ""
            tds.append(f'<td{css}{sort} title="{title}">{html.escape(cell.text())}{marker}</td>')
        rate = f' data-sort="{row.mean_win_rate!r}"' if row.mean_win_rate is not None else ""
        params = f' data-sort="{row.trainable_params}"' if row.trainable_params is not None else ""
        tds.append(f"<td{rate}>{_win_rate_text(row)}</td>")
        tds.append(f"<td{params}>{_format_params(row.trainable_params)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes_html = "<br>".join(f"<sup>{i}</sup> {html.escape(n)}" for i, n in enumerate(notes, 1))
    data = board_json(board).replace("</", "<\\/")
    return PAGE.format(head=head, body="\n".join(body), notes=notes_html, data=data)


def plot_png(board: Board, path: Path) -> None:
    """Score vs trainable parameters, one panel per task, one colour per method row (shared
    legend); symlog x so frozen methods sit at 0 beside adapters with thousands of params."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = board.tasks
    columns = max(1, min(3, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 3.2, 3.4 * rows),
                                squeeze=False)
    palette = plt.get_cmap("tab20")
    colours = {row.label: palette(i % 20) for i, row in enumerate(board.rows)}
    widest = max([row.trainable_params or 0 for row in board.rows] + [10])
    for index, axis in enumerate(axes.flat):
        if index >= len(tasks):
            axis.set_visible(False)
            continue
        task = tasks[index]
        for row in board.rows:
            cell = row.cells[task.name]
            if cell.status != "ok":
                continue
            axis.errorbar([row.trainable_params or 0], [cell.value], yerr=[cell.stderr or 0],
                          fmt="o", capsize=3, color=colours[row.label], label=row.label)
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(-0.5, widest * 5)
        axis.set_xlabel("trainable parameters")
        axis.set_ylabel(task.metric_label)
        axis.set_title(task.name)
        axis.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[row.label])
               for row in board.rows]
    figure.legend(handles, [row.label for row in board.rows], loc="center right", fontsize=7,
                  frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - 3.2 / (4.6 * columns + 3.2), 1))
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _text_writer(name: str, filename: str, render: Any) -> ReportWriter:
    def write(board: Board, out_dir: Path) -> list[Path]:
        target = Path(out_dir) / filename
        atomic_write_text(target, render(board))
        return [target]

    return ReportWriter(name, write, checked=True)


def _png_writer(board: Board, out_dir: Path) -> list[Path]:
    target = Path(out_dir) / "leaderboard.png"
    plot_png(board, target)
    return [target]


@hookimpl
def harness_report_writers() -> list[ReportWriter]:
    return [_text_writer("markdown", "leaderboard.md", markdown),
            _text_writer("html", "leaderboard.html", html_page),
            _text_writer("json", "leaderboard.json", board_json),
            ReportWriter("png", _png_writer, checked=False)]


def rich_table(board: Board) -> Any:
    from rich.table import Table

    table = Table(title="Leaderboard", show_lines=False)
    table.add_column("method", style="bold")
    for task in board.tasks:
        table.add_column(task.header, justify="right")
    table.add_column("mean win rate", justify="right")
    table.add_column("trainable", justify="right")
    for row in board.rows:
        cells = []
        for task in board.tasks:
            cell = row.cells[task.name]
            text = cell.text()
            if cell.status == "n/a":
                text = f"[dim]n/a ({cell.reason})[/dim]"
            elif cell.status == "failed":
                text = "[red]failed[/red]"
            cells.append(text)
        table.add_row(row.label, *cells, _win_rate_text(row), _format_params(row.trainable_params))
    return table
