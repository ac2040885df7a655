"""Leaderboards from result files only: no torch, no GPU, no datasets.

`build_board` reads every cell's result.json (and failure records) under a results root and
arranges them as method rows x task columns. Writers turn a board into Markdown, a static
HTML page, JSON with per-cell provenance and a PNG plot; they are contributed through the
`harness_report_writers` hook (this module is itself a plugin), so a third-party package can
add LaTeX or CSV the same way. Every text output is deterministic: regenerating it from the
same results gives the same bytes, which is what `harness leaderboard --check` relies on.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.errors import redact
from harness.hookspecs import ReportWriter
from harness.records import CellRecord
from harness.store import Problem, Store, atomic_write_text

COST_HEADER = "inference FLOPs/doc"
COST_NOTE = ("Inference FLOPs/doc: 2 × parameters × tokens of every model the method ran, plus its "
             "own extra work (logit fusion), per evaluated document, over the row's scored cells "
             "(— where the records predate cost counting).")
SMOKE_WARNING = ("Smoke numbers from {what}: they show that the pipeline runs and are "
                 "not comparable with published results.")


@dataclass
class BoardCell:
    status: str  # "ok", "n/a", "failed" or "missing"
    value: float | None = None
    stderr: float | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # e.g. computed by other code
    cost: dict[str, Any] | None = None  # the record's CellCost, when it was counted

    @property
    def flops_per_document(self) -> int | None:
        return self.cost.get("inference_flops_per_document") if self.cost else None

    def text(self, digits: int = 3, with_stderr: bool = True) -> str:
        if self.status == "ok" and self.value is not None:
            if self.stderr is None or not with_stderr:
                return f"{self.value:.{digits}f}"
            return f"{self.value:.{digits}f} ± {self.stderr:.{digits}f}"
        return {"n/a": "n/a", "failed": "failed"}.get(self.status, "—")

    def notes(self) -> list[str]:
        """Footnote texts for this cell: why it is n/a or failed, and its flags."""
        why = {"n/a": f"n/a: {self.reason}", "failed": f"failed: {self.reason}"}.get(self.status)
        return ([why] if why else []) + self.flags


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
    key: str
    label: str
    method: str
    models: list[str]
    trainable_params: int | None
    total_params: int | None
    cells: dict[str, BoardCell]
    mean_win_rate: float | None = None

    @property
    def flops_per_document(self) -> int | None:
        """Inference FLOPs per document over the row's scored cells that counted them."""
        counted = [c.cost for c in self.cells.values() if c.status == "ok" and c.cost
                   and c.cost.get("documents")]
        if not counted:
            return None
        return sum(c["inference"]["flops"] for c in counted) // sum(c["documents"] for c in counted)


@dataclass
class Board:
    tasks: list[BoardTask]
    rows: list[BoardRow]
    problems: list[Problem] = field(default_factory=list)  # result files not trusted

    def reasons(self) -> list[str]:
        """Distinct footnote texts, in first-seen order (footnote numbering)."""
        seen: list[str] = []
        for row in self.rows:
            for task in self.tasks:
                for note in row.cells[task.name].notes():
                    if note not in seen:
                        seen.append(note)
        return seen

    def markers(self, cell: BoardCell) -> list[int]:
        notes = self.reasons()
        return [notes.index(note) + 1 for note in cell.notes()]

    def smoke_warning(self) -> str:
        """Non-empty when any column rests on embedded samples or a --limit."""
        def which(names: list[str]) -> str:
            return "every task" if len(names) == len(self.tasks) else ", ".join(names)

        embedded = [t.name for t in self.tasks if "embedded" in t.data]
        limited = [t.name for t in self.tasks if "(limit " in t.data]
        parts = ([f"the embedded sample data ({which(embedded)})"] if embedded else []) + (
            [f"a --limit on the documents ({which(limited)})"] if limited else [])
        return SMOKE_WARNING.format(what=" and ".join(parts)) if parts else ""


def _latest_per_cell(records: list[CellRecord]) -> dict[tuple[str, str], CellRecord]:
    """The newest record of each (row, task); rows are keyed by their identity, never by
    their label, so two configurations that share a label both stay."""
    chosen: dict[tuple[str, str], CellRecord] = {}
    for record in sorted(records, key=lambda r: (r.finished_at, r.fingerprint)):
        chosen[record.row.key, record.task.name] = record
    return chosen


def build_board(results_root: Path) -> Board:
    """The newest record (result or failure) of every row x task, arranged as a board."""
    store = Store(results_root)
    problems: list[Problem] = []
    chosen = _latest_per_cell([*store.results(problems), *store.failures(problems)])
    tasks: dict[str, BoardTask] = {}
    rows: dict[str, BoardRow] = {}
    newest_label: dict[str, tuple[str, str]] = {}
    for (key, task_name), record in sorted(chosen.items()):
        column = tasks.setdefault(task_name, BoardTask(
            task_name, record.task.headline_key, record.task.headline_label,
            record.task.higher_is_better, ""))
        sources = set(filter(None, column.data.removeprefix("mixed: ").split("; ")))
        sources.add(record.data_description)
        # rows run on different data or limits are not comparable: say so in the table
        column.data = ("mixed: " if len(sources) > 1 else "") + "; ".join(sorted(sources))
        row = rows.setdefault(key, BoardRow(
            key=key, label=record.row.label, method=record.row.method,
            models=record.row.model_ids, trainable_params=None, total_params=None, cells={}))
        if record.finished_at >= newest_label.get(key, ("", ""))[0]:
            newest_label[key] = (record.finished_at, record.row.label)
        report = record.method_report if record.status == "ok" else {}
        if row.trainable_params is None and report.get("trainable_params") is not None:
            row.trainable_params = report["trainable_params"]
            row.total_params = report.get("total_params")
        row.cells[task_name] = cell = _board_cell(record)
        if cell.status == "ok" and record.cost is not None:
            cell.cost = dataclasses.asdict(record.cost)
    for key, row in rows.items():
        row.label = newest_label[key][1]
    _disambiguate_labels(list(rows.values()))
    _flag_mixed_code(list(rows.values()), chosen)

    ordered_tasks = [tasks[name] for name in sorted(tasks)]
    for row in rows.values():
        for task in ordered_tasks:
            row.cells.setdefault(task.name, BoardCell("missing", reason="not run"))
    board = Board(ordered_tasks, list(rows.values()), problems)
    _add_mean_win_rates(board)
    board.rows.sort(key=lambda r: (-(r.mean_win_rate if r.mean_win_rate is not None else -1),
                                   r.label, r.key))
    return board


def _disambiguate_labels(rows: list[BoardRow]) -> None:
    """Rows from different runs may share a label: suffix their row keys, never merge."""
    by_label: dict[str, list[BoardRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for same in by_label.values():
        if len(same) > 1:
            for row in same:
                row.label = f"{row.label} #{row.key[:6]}"


def _flag_mixed_code(rows: list[BoardRow], chosen: dict[tuple[str, str], CellRecord]) -> None:
    """Mark cells of a row computed by another version of the method's code than the
    row's other cells (a fix landed between runs): their numbers may not be comparable."""
    for row in rows:
        hashes = {task: record.code["method"].source_sha256
                  for (key, task), record in chosen.items()
                  if key == row.key and "method" in record.code and record.status != "n/a"}
        if len(set(hashes.values())) < 2:
            continue
        newest = max(((chosen[row.key, t].finished_at, h) for t, h in hashes.items()))[1]
        for task, digest in hashes.items():
            if digest != newest:
                row.cells[task].flags.append(
                    f"computed by other {row.method} code (source {digest[:8]}) than the "
                    f"row's newest cell (source {newest[:8]})")


def _board_cell(record: CellRecord) -> BoardCell:
    provenance = {"fingerprint": record.fingerprint, "data": record.task.data,
                  "n_samples": record.n_samples, "limit": record.limit, "seed": record.seed,
                  "git_commit": record.git_commit,
                  "versions": record.identity.get("versions"),
                  "code": {k: {"version": v.version, "distribution": v.distribution,
                               "source_sha256": v.source_sha256} for k, v in record.code.items()}}
    if record.status == "ok":
        if not record.has_score:
            reason = (record.score_details.get("headline_unavailable")
                      or "no score could be computed (NaN)")
            return BoardCell("failed", reason=reason, provenance=provenance)
        assert record.headline is not None
        caveats = [str(c) for c in record.score_details.get("caveats", [])]
        return BoardCell("ok", record.headline.value, record.headline.stderr,
                         provenance=provenance, flags=caveats)
    return BoardCell(record.status, reason=record.reason, provenance=provenance)


def _add_mean_win_rates(board: Board) -> None:
    """HELM's mean win rate: per task, the share of other rows a row beats (ties count half),
    averaged over the tasks where it has a score. Scale-free, so tasks with metrics on
    different scales weigh the same."""
    rates: dict[str, list[float]] = {row.key: [] for row in board.rows}
    for task in board.tasks:
        scored = [(row.key, row.cells[task.name].value) for row in board.rows
                  if row.cells[task.name].status == "ok"]
        if len(scored) < 2:
            continue
        sign = 1 if task.higher_is_better else -1
        for key, value in scored:
            assert value is not None
            wins = sum(1.0 if sign * value > sign * other else 0.5 if value == other else 0.0
                       for other_key, other in scored if other_key != key and other is not None)
            rates[key].append(wins / (len(scored) - 1))
    for row in board.rows:
        row.mean_win_rate = sum(rates[row.key]) / len(rates[row.key]) if rates[row.key] else None


# ----------------------------------------------------------------------------- writers


def _format_params(count: int | None) -> str:
    return _format_count(count, (("B", 1e9), ("M", 1e6), ("K", 1e3)))


def _format_flops(count: int | None) -> str:
    return _format_count(count, (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)))


def _format_count(count: int | None, units: tuple[tuple[str, float], ...]) -> str:
    if count is None:
        return "—"
    for unit, size in units:
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def _win_rate_text(row: BoardRow) -> str:
    return "—" if row.mean_win_rate is None else f"{row.mean_win_rate:.2f}"


def _marked(board: Board, cell: BoardCell, text: str) -> str:
    markers = board.markers(cell)
    return text + "".join(f" [{m}]" for m in markers)


def markdown(board: Board) -> str:
    notes = board.reasons()
    header = ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
              COST_HEADER]
    lines = ["# Leaderboard", ""]
    warning = board.smoke_warning()
    if warning:
        lines += [f"> **{warning}**", ""]
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in board.rows:
        cells = [_marked(board, row.cells[t.name], row.cells[t.name].text()) for t in board.tasks]
        lines.append("| " + " | ".join([row.label, *cells, _win_rate_text(row),
                                        _format_params(row.trainable_params),
                                        _format_flops(row.flops_per_document)]) + " |")
    lines += ["", "Cells show the headline metric ± its standard error. Mean win rate: the share of "
              "other methods a method beats on a task, averaged over tasks. " + COST_NOTE, ""]
    lines += ["Data: " + "; ".join(f"{t.name}: {t.data}" for t in board.tasks) + ".", ""]
    lines += [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def board_json(board: Board) -> str:
    payload = {
        "warning": board.smoke_warning() or None,
        "tasks": [{"name": t.name, "metric": t.metric_key, "label": t.metric_label,
                   "higher_is_better": t.higher_is_better, "data": t.data} for t in board.tasks],
        "rows": [{"key": r.key, "label": r.label, "method": r.method, "models": r.models,
                  "trainable_params": r.trainable_params, "total_params": r.total_params,
                  "mean_win_rate": r.mean_win_rate,
                  "inference_flops_per_document": r.flops_per_document,
                  "cells": {name: {"status": c.status, "value": c.value, "stderr": c.stderr,
                                   "reason": c.reason, "flags": c.flags,
                                   "provenance": c.provenance, "cost": c.cost}
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
.notes{{color:#555;font-size:.9rem}}.warning{{background:#fff3cd;border:1px solid #e0c36c;padding:.6rem .9rem}}
</style></head><body>
<h1>Leaderboard</h1>
{warning}<p>Headline metric ± standard error per task; click a column to sort. Hover a cell for its provenance.</p>
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
                   ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
                    COST_HEADER])
    body = []
    for row in board.rows:
        tds = [f"<td>{html.escape(row.label)}</td>"]
        for task in board.tasks:
            cell = row.cells[task.name]
            title = html.escape(json.dumps(cell.provenance, sort_keys=True) if cell.status == "ok"
                                else "; ".join(cell.notes()) or cell.reason, quote=True)
            sort = f' data-sort="{cell.value!r}"' if cell.value is not None else ""
            css = {"n/a": ' class="na"', "failed": ' class="failed"'}.get(cell.status, "")
            markers = "".join(f"<sup>{m}</sup>" for m in board.markers(cell))
            tds.append(f'<td{css}{sort} title="{title}">{html.escape(cell.text())}{markers}</td>')
        rate = f' data-sort="{row.mean_win_rate!r}"' if row.mean_win_rate is not None else ""
        params = f' data-sort="{row.trainable_params}"' if row.trainable_params is not None else ""
        tds.append(f"<td{rate}>{_win_rate_text(row)}</td>")
        tds.append(f"<td{params}>{_format_params(row.trainable_params)}</td>")
        flops = row.flops_per_document
        sort_flops = f' data-sort="{flops}"' if flops is not None else ""
        tds.append(f"<td{sort_flops}>{_format_flops(flops)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes_html = "<br>".join(f"<sup>{i}</sup> {html.escape(n)}" for i, n in enumerate(notes, 1))
    warning = board.smoke_warning()
    warning_html = f'<p class="warning"><strong>{html.escape(warning)}</strong></p>\n' if warning else ""
    data = board_json(board).replace("</", "<\\/")
    return PAGE.format(head=head, body="\n".join(body), notes=notes_html, data=data,
                       warning=warning_html)


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
    """One panel per task of each scored cell's headline against `x_of(row, cell)` (cells
    where it is None are left out), one colour per row with a shared legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = board.tasks
    columns = max(1, min(3, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 3.2, 3.4 * rows),
                                squeeze=False)
    palette = plt.get_cmap("tab20")
    colours = {row.key: palette(i % 20) for i, row in enumerate(board.rows)}
    for index, axis in enumerate(axes.flat):
        if index >= len(tasks):
            axis.set_visible(False)
            continue
        task = tasks[index]
        points = []
        for row in board.rows:
            cell = row.cells[task.name]
            x = x_of(row, cell) if cell.status == "ok" else None
            if x is None or cell.value is None:
                continue
            points.append((x, cell.value))
            axis.errorbar([x], [cell.value], yerr=[cell.stderr or 0],
                          fmt="o", capsize=3, color=colours[row.key], label=row.label)
        if pareto and points:
            front = [points[i] for i in pareto_front(points, task.higher_is_better)]
            axis.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.3",
                      linewidth=1, linestyle="--", label="Pareto front")
            axis.scatter([p[0] for p in front], [p[1] for p in front], s=140,
                         facecolors="none", edgecolors="0.3")
        elif pareto:
            axis.text(0.5, 0.5, "no cost recorded", ha="center", va="center",
                      transform=axis.transAxes, color="0.5")
        if points or not pareto:
            axis_style(axis)
        axis.set_xlabel(x_label)
        axis.set_ylabel(task.metric_label)
        axis.set_title(task.name)
        axis.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[row.key])
               for row in board.rows]
    labels = [row.label for row in board.rows]
    if pareto:
        handles.append(plt.Line2D([], [], marker="o", markersize=10, markerfacecolor="none",
                                  color="0.3", linestyle="--"))
        labels.append("Pareto front")
    figure.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - 3.2 / (4.6 * columns + 3.2), 1))
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _text_writer(name: str, filename: str, render: Any) -> ReportWriter:
    def write(board: Board, out_dir: Path) -> list[Path]:
        target = Path(out_dir) / filename
        atomic_write_text(target, redact(render(board)))
        return [target]

    return ReportWriter(name, write, checked=True)


PNG_FILES = ("leaderboard.png", "leaderboard-cost.png")


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


def rich_tables(board: Board, width: int = 80) -> list[Any]:
    """The board for a terminal `width` columns wide: as many task columns per table as
    fit beside the method column (the rest in further tables), values without their
    standard errors, the same footnote markers as the Markdown, then the footnotes."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    label_width = min(28, max([len(r.label) for r in board.rows] + [6]))
    texts = {(row.key, task.name): _marked(board, row.cells[task.name],
                                           row.cells[task.name].text(with_stderr=False))
             for row in board.rows for task in board.tasks}
    columns: list[tuple[str, Any, int]] = [
        (task.header, task.name, max([len(task.name) + 2] + [len(texts[r.key, task.name])
                                                            for r in board.rows]))
        for task in board.tasks]
    columns += [("win rate", "__win", 8), ("trainable", "__params", 9), ("FLOPs/doc", "__flops", 9)]
    chunks: list[list[tuple[str, Any, int]]] = [[]]
    used = label_width + 4
    for column in columns:
        if chunks[-1] and used + column[2] + 3 > width:
            chunks.append([])
            used = label_width + 4
        chunks[-1].append(column)
        used += column[2] + 3
    tables: list[Any] = []
    warning = board.smoke_warning()
    if warning:
        tables.append(Text(warning, style="bold yellow"))
    for number, chunk in enumerate(chunks, 1):
        title = "Leaderboard" + (f" ({number}/{len(chunks)})" if len(chunks) > 1 else "")
        table = Table(title=title, show_lines=False, expand=False)
        table.add_column("method", style="bold", overflow="fold", max_width=label_width)
        for header, _, column_width in chunk:
            table.add_column(escape(header), justify="right", overflow="fold",
                             min_width=min(column_width, 12), max_width=max(column_width, 12))
        for row in board.rows:
            values = []
            for _, name, _ in chunk:
                if name == "__win":
                    values.append(_win_rate_text(row))
                elif name == "__params":
                    values.append(_format_params(row.trainable_params))
                elif name == "__flops":
                    values.append(_format_flops(row.flops_per_document))
                else:
                    cell = row.cells[name]
                    style = {"n/a": "dim", "failed": "red"}.get(cell.status, "")
                    text = escape(texts[row.key, name])
                    values.append(f"[{style}]{text}[/{style}]" if style else text)
            table.add_row(escape(row.label), *values)
        tables.append(table)
    notes = board.reasons()
    if notes:
        tables.append(Text("\n".join(f"[{i}] {note}" for i, note in enumerate(notes, 1)),
                           style="dim"))
    return tables
