"""Leaderboards from result files only: no torch, no GPU, no datasets.

`build_board` reads every cell's result.json (and failure records) under a results root and
arranges them as method rows x task columns, the newest record of each row x task x seed;
a cell over several seeds shows their mean and spread. Each scored cell carries its paired
test against its row's reference row (`harness.report.comparisons`) and the explorer's
documents (`harness.report.samples`). Writers (`harness.report.writers`) turn a board into
Markdown, HTML, JSON and PNG plots; every text output is deterministic (the bootstrap is
seeded), which is what `harness leaderboard --check` relies on."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from harness.contract.board import (Board, BoardCell, BoardOptions, BoardRow, BoardTask,
                                    mean_win_rates)
from harness.errors import DataError
from harness.report.comparisons import add_comparisons
from harness.report.documents import CellData, latest_per_cell, newest_record
from harness.report.samples import add_samples
from harness.results.records import CellRecord
from harness.results.store import Problem, Store


def build_board(results_root: Path, options: BoardOptions | None = None) -> Board:
    """The newest record (result or failure) of every row x task, arranged as a board,
    with each cell's paired test against its row's reference row and its samples."""
    options = options or BoardOptions()
    store = Store(results_root)
    problems: list[Problem] = []
    chosen = latest_per_cell([*store.results(problems), *store.failures(problems)])
    tasks: dict[str, BoardTask] = {}
    rows: dict[str, BoardRow] = {}
    newest_label: dict[str, tuple[str, str]] = {}
    for (key, task_name), seed_records in sorted(chosen.items()):
        record = newest_record(seed_records)
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
        report = record.method_report
        if (record.status == "ok" and row.trainable_params is None
                and report.trainable_params is not None):
            row.trainable_params, row.total_params = report.trainable_params, report.total_params
        row.cells[task_name] = cell = _board_cell(seed_records)
        if cell.status == "ok" and record.cost is not None:
            cell.cost = dataclasses.asdict(record.cost)
    for key, row in rows.items():
        row.label = newest_label[key][1]
    _mark_untrusted(rows, tasks, problems, store)
    _disambiguate_labels(list(rows.values()))
    _flag_mixed_code(list(rows.values()), chosen)

    ordered_tasks = [tasks[name] for name in sorted(tasks)]
    for row in rows.values():
        for task in ordered_tasks:
            row.cells.setdefault(task.name, BoardCell("missing", reason="not run"))
    board = Board(ordered_tasks, list(rows.values()), problems, options, results_root=results_root)
    _add_mean_win_rates(board)
    board.rows.sort(key=lambda r: (-(r.mean_win_rate if r.mean_win_rate is not None else -1),
                                   r.label, r.key))
    cells = CellData(store, chosen, options)
    add_comparisons(board, cells)
    add_samples(board, cells)
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


def _flag_mixed_code(rows: list[BoardRow],
                     chosen: dict[tuple[str, str], list[CellRecord]]) -> None:
    """Mark cells of a row computed by another version of the method's code than the
    row's other cells (a fix landed between runs): their numbers may not be comparable."""
    latest = {cell: newest_record(records) for cell, records in chosen.items()}
    for row in rows:
        hashes = {task: record.code["method"].source_sha256
                  for (key, task), record in latest.items()
                  if key == row.key and "method" in record.code and record.status != "n/a"}
        if len(set(hashes.values())) < 2:
            continue
        newest = max(((latest[row.key, t].finished_at, h) for t, h in hashes.items()))[1]
        for task, digest in hashes.items():
            if digest != newest:
                row.cells[task].flags.append(
                    f"computed by other {row.method} code (source {digest[:8]}) than the "
                    f"row's newest cell (source {newest[:8]})")


def _mark_untrusted(rows: dict[str, BoardRow], tasks: dict[str, BoardTask],
                    problems: list[Problem], store: Store) -> None:
    """Show the cells whose result file cannot be trusted as "untrusted" where nothing
    else is known of them, in the row the last run's plan names (a row only the plan
    knows gets a row of its own)."""
    planned = {str(e.get("fingerprint", ""))[:16]: e for e in _plan_entries(store)}
    for problem in problems:
        name = problem.path.name
        fp16 = name if problem.path.parent.parent.parent.name == "cells" else name[:-5][-16:]
        entry = planned.get(fp16)
        if entry is None or str(entry.get("task")) not in tasks:
            continue
        key = str(entry.get("row_key", ""))
        row = rows.setdefault(key, BoardRow(key=key, label=str(entry.get("label", key)),
                                            method=str(entry.get("method", "?")), models=[],
                                            trainable_params=None, total_params=None, cells={}))
        task = str(entry["task"])
        if task not in row.cells:
            row.cells[task] = BoardCell("untrusted", reason=problem.reason)


def _plan_entries(store: Store) -> list[dict[str, Any]]:
    try:
        return store.read_plan()
    except DataError:
        return []


def _board_cell(records: list[CellRecord]) -> BoardCell:
    """One board cell from the newest record of each of its seeds: with several seeds,
    the mean of their headlines and their standard deviation (the spread a new training
    run would show); a seed that failed makes the cell fail."""
    cells = [_seed_cell(record) for record in records]
    if len(cells) == 1:
        return cells[0]
    for cell, record in zip(cells, records):
        if cell.status != "ok":
            cell.reason = f"seed {record.seed}: {cell.reason}"
            return cell
    values = [cell.value for cell in cells if cell.value is not None]
    merged = _seed_cell(newest_record(records))
    merged.value, merged.stderr = statistics.fmean(values), None
    merged.seed_spread = statistics.stdev(values) if len(values) > 1 else 0.0
    merged.provenance["seeds"] = {str(r.seed): c.value for r, c in zip(records, cells)}
    merged.provenance["fingerprints"] = [r.fingerprint for r in records]
    merged.flags = list(dict.fromkeys(flag for cell in cells for flag in cell.flags))
    return merged


def _seed_cell(record: CellRecord) -> BoardCell:
    provenance = {"fingerprint": record.fingerprint, "data": record.task.data,
                  "n_samples": record.n_samples, "limit": record.limit, "seed": record.seed,
                  "git_commit": record.git_commit,
                  "versions": record.identity.get("versions"),
                  "code": {k: {"version": v.version, "distribution": v.distribution,
                               "source_sha256": v.source_sha256} for k, v in record.code.items()}}
    if record.status == "ok":
        if not record.has_score:
            reason = (record.score_details.headline_unavailable
                      or "no score could be computed (NaN)")
            return BoardCell("failed", reason=reason, provenance=provenance)
        assert record.headline is not None
        caveats = [str(c) for c in record.score_details.caveats]
        return BoardCell("ok", record.headline.value, record.headline.stderr,
                         provenance=provenance, flags=caveats)
    return BoardCell(record.status, reason=record.reason, provenance=provenance)


def _add_mean_win_rates(board: Board) -> None:
    rates = mean_win_rates(board.rows, board.tasks)
    for row in board.rows:
        row.mean_win_rate = rates[row.key]
