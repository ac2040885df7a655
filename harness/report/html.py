"""The board as one self-contained HTML page (leaderboard.html): the sortable table and
the explorer, from the page template shipped as package data."""

from __future__ import annotations

import html
import json
import re
from importlib import resources

from harness.contract.board import COST_HEADER, SIGNIFICANT, Board
from harness.report.formatting import format_flops, format_params, significance_note, win_rate_text
from harness.report.json_board import board_json

PAGE_TEMPLATE = "leaderboard.html"  # in harness/templates, package data


_SLOT = re.compile(r"@([A-Z]+)@")


def page_template() -> str:
    """The page's HTML, CSS and JavaScript, with an @NAME@ slot for each generated part."""
    return resources.files("harness.report.templates").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")


def html_page(board: Board) -> str:
    """One self-contained page (no network, no build step): the sortable table, and per
    cell a panel with its score, paired test, cost, caveats and provenance, and up to
    `max_samples` documents (a multiple choice as its question and options with each
    row's pick), with a filter to the documents where two chosen rows differ."""
    notes = board.reasons()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
                    COST_HEADER])
    body = []
    for row in board.rows:
        tds = [f"<td>{html.escape(row.label)}</td>"]
        for task in board.tasks:
            cell = row.cells[task.name]
            title = html.escape("; ".join(cell.notes()) or "click for details", quote=True)
            sort = f' data-sort="{cell.value!r}"' if cell.value is not None else ""
            markers = (f"<sup>{SIGNIFICANT}</sup>" if cell.significant else "") + "".join(
                f"<sup>{m}</sup>" for m in board.markers(cell))
            tds.append(f'<td class="cell" tabindex="0"{sort} '
                       f'data-status="{html.escape(cell.status)}" data-row="{html.escape(row.key)}" '
                       f'data-task="{html.escape(task.name)}" title="{title}">'
                       f'{html.escape(cell.text())}{markers}</td>')
        rate = f' data-sort="{row.mean_win_rate!r}"' if row.mean_win_rate is not None else ""
        params = f' data-sort="{row.trainable_params}"' if row.trainable_params is not None else ""
        tds.append(f"<td{rate}>{win_rate_text(row)}</td>")
        tds.append(f"<td{params}>{format_params(row.trainable_params)}</td>")
        flops = row.flops_per_document
        sort_flops = f' data-sort="{flops}"' if flops is not None else ""
        tds.append(f"<td{sort_flops}>{format_flops(flops)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes_html = "<br>".join(f"<sup>{i}</sup> {html.escape(n)}" for i, n in enumerate(notes, 1))
    warning_html = "".join(f'<p class="warning"><strong>{html.escape(warning)}</strong></p>\n'
                           for warning in (board.untrusted_warning(), board.smoke_warning())
                           if warning)
    explorer = {"max_samples": board.options.max_samples, "documents": board.documents,
                "cells": {row.key: {task: cell.samples for task, cell in row.cells.items()
                                    if cell.samples} for row in board.rows}}
    parts = {"HEAD": head, "BODY": "\n".join(body), "NOTES": notes_html, "WARNING": warning_html,
             "SIGNIFICANCE": html.escape(significance_note(board)),
             "DATA": _script_json(board_json(board)),
             "EXPLORER": _script_json(json.dumps(explorer, sort_keys=True, ensure_ascii=False,
                                                 default=str))}
    # one pass, so a slot's text (a row label, a prompt) is never searched for slots itself
    return _SLOT.sub(lambda slot: parts.get(slot[1], slot[0]), page_template())


def _script_json(text: str) -> str:
    """JSON safe inside a <script> element (no "</script>" can end it early)."""
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")
