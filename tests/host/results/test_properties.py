"""Property-based tests: the suite parser never crashes, fingerprints are functions of
their content, and the leaderboard renders any set of records."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from harness.errors import HarnessError
from harness.contract import MethodReport
from harness.files import fingerprint
from harness.report.board import build_board
from harness.report.html import html_page
from harness.report.json_board import board_json
from harness.report.markdown import markdown
from harness.report.terminal import rich_tables
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key
from harness.results.store import Store
from harness.run.request import load_suite

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@SETTINGS
@given(st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "methods": st.one_of(json_values, st.lists(st.one_of(
            st.sampled_from(["single", "packllm", "nope"]),
            st.dictionaries(st.sampled_from(["method", "models", "options", "label", "tasks",
                                             "extra"]), json_values, max_size=4)), max_size=3)),
        "tasks": st.one_of(json_values, st.lists(st.one_of(
            st.sampled_from(["mmlu", "gsm8k", "nope"]),
            st.dictionaries(st.sampled_from(["task", "options", "extra"]), json_values,
                            max_size=3)), max_size=3)),
        "seed": json_values, "limit": json_values, "data": json_values, "device": json_values,
        "batch_size": json_values, "dtype": json_values, "out": json_values})))
def test_the_suite_parser_accepts_or_refuses_with_one_line(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "suite.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            request = load_suite(str(path))
        except HarnessError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert all(isinstance(m.method, str) for m in request.methods)
            assert all(isinstance(t.task, str) for t in request.tasks)


identities = st.dictionaries(st.text(min_size=1, max_size=6), json_values, min_size=1, max_size=6)


@SETTINGS
@given(identities, st.data())
def test_fingerprints_are_functions_of_content(identity: dict[str, Any], data: Any) -> None:
    reordered = dict(reversed(list(identity.items())))
    assert fingerprint(identity) == fingerprint(reordered)
    key = data.draw(st.sampled_from(sorted(identity)))
    changed = dict(identity)
    changed[key] = data.draw(json_values.filter(lambda v: v != identity[key] and not (
        isinstance(v, float) and isinstance(identity[key], int) and v == identity[key])))
    assert fingerprint(changed) != fingerprint(identity)


record_fields = st.fixed_dictionaries({
    "label": st.text(min_size=1, max_size=30),
    "method": st.sampled_from(["single", "packllm", "lora", "x_y"]),
    "task": st.sampled_from(["mmlu", "gsm8k", "flores", "t[/INST]"]),
    "status": st.sampled_from(["ok", "n/a", "failed"]),
    "value": st.one_of(st.none(), st.floats(-1e6, 1e6)),
    "stderr": st.one_of(st.none(), st.floats(0, 1e3)),
    "reason": st.text(max_size=40),
    "higher": st.booleans(),
    "limit": st.one_of(st.none(), st.integers(1, 100)),
    "data": st.sampled_from(["embedded", "hf", "local:/data"]),
    "trainable": st.one_of(st.none(), st.integers(0, 10**10)),
})


@SETTINGS
@given(st.lists(record_fields, max_size=8))
def test_any_set_of_records_renders(fields: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        for number, f in enumerate(fields):
            models = [{"id": "m", "revision": "main", "dtype": "auto"}]
            record = CellRecord(
                status=f["status"], fingerprint=f"{number:016x}" + "0" * 48,
                row=RowInfo(row_key(f["method"], models, {"n": f["label"]}), f["method"],
                            f["label"], {}, models),
                task=TaskInfo(f["task"], {}, "metric", "metric [b]", f["higher"], f["data"]),
                identity={}, finished_at=f"2026-01-01T00:00:{number:02d}", limit=f["limit"],
                reason=f["reason"])
            if f["status"] == "ok":
                record.headline = Score(f["value"], f["stderr"])
                record.method_report = MethodReport(trainable_params=f["trainable"])
                store.commit_cell(record, [])
            else:
                store.record_failure(record) if f["status"] == "failed" else store.commit_cell(
                    record, [])
        board = build_board(Path(folder))
        assert markdown(board).startswith("# Leaderboard")
        assert "<table" in html_page(board) and board_json(board)
        console = Console(file=io.StringIO(), width=80)
        for table in rich_tables(board, 80):
            console.print(table)
