"""What a person reads: `harness list` whole and within 80 columns, the terminal
leaderboard within 80 columns, a run that keeps library chatter in the cell logs."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli
from harness.host import load_host
from harness.report.board import build_board
from harness.report.terminal import rich_tables
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key
from harness.results.store import Store

from support import HOST_FIXTURES, run_cli

PLUGINS = HOST_FIXTURES / "plugins"


def _names() -> list[str]:
    host = load_host()
    return [*host.methods, *host.tasks]


def test_plain_list_keeps_every_name_whole() -> None:
    result = run_cli("list", env={"COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    first_words = {line.split()[0] for line in result.stdout.splitlines()
                   if line.startswith("  ")}
    assert set(_names()) <= first_words
    assert "…" not in result.stdout


def test_terminal_list_fits_80_columns(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert cli.main(["list"]) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # colours are not columns
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    # one line per plugin, each name whole at its start; the details are `harness list NAME`
    assert {line.split()[0] for line in lines if line.startswith("  ")} == set(_names())
    assert len(lines) == len(_names()) + 3 and "harness list NAME" in lines[-1]


def test_list_one_plugin_in_full_and_as_json() -> None:
    shown = run_cli("list", "packllm")
    assert shown.returncode == 0
    assert "method packllm (version" in shown.stdout
    assert "options:" in shown.stdout and "fusion (sim|opt" in shown.stdout
    task = json.loads(run_cli("list", "lora", "--json").stdout)
    assert {o["name"] for o in task["options"]} >= {"r", "lr", "max_steps"}
    assert all(o["help"] for o in task["options"] if o["name"] in ("lr", "max_steps"))
    unknown = run_cli("list", "packlm")
    assert unknown.returncode == 2 and "did you mean 'packllm'" in unknown.stderr


def _board_with_long_labels(root: Path) -> Path:
    store = Store(root)
    tasks = ["coco_captioning", "flores", "gsm8k", "humaneval", "mmlu", "vicuna_bench"]
    for number, label in enumerate(["packllm[fusion=opt, weights_on=sequence] (tiny-llama + "
                                    "tiny-gpt2 + tiny-llama-b)", "single (tiny-llama)"]):
        models = [{"id": "m", "revision": "main", "dtype": "auto"}]
        for task in tasks:
            record = CellRecord(
                status="n/a" if task == "coco_captioning" else "ok",
                fingerprint=f"{number}{task}".ljust(16, "0")[:16],
                row=RowInfo(row_key(label, models, {}), label.split("[")[0].split()[0], label,
                            {}, models),
                task=TaskInfo(task, {}, "x", "exact match (strict)", True, "embedded"),
                identity={}, finished_at="2026-01-01T00:00:00", limit=4,
                reason="needs vision" if task == "coco_captioning" else "")
            if record.status == "ok":
                record.headline = Score(0.123456 * (number + 1), 0.01)
            store.commit_cell(record, [])
    return root


def test_terminal_leaderboard_fits_80_columns_with_markers(tmp_path: Path) -> None:
    board = build_board(_board_with_long_labels(tmp_path))
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, color_system=None)
    for table in rich_tables(board, 80):
        console.print(table)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "n/a [1]" in text and "[1] n/a: needs vision" in text
    assert "Smoke numbers" in text
    for task in ("coco_captioning", "flores", "gsm8k", "humaneval", "mmlu", "vicuna_bench"):
        assert task in text


def test_a_run_keeps_library_output_in_the_cell_log(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    shutil.copytree(PLUGINS, plugins)
    out = tmp_path / "out"
    result = run_cli("-p", "constant_plugin", "run", "-m", "constant", "-t", "mmlu",
                     "--data", "embedded", "--limit", "1", "--results", str(out),
                     env={"PYTHONPATH": str(plugins)})
    assert result.returncode == 0, result.stderr
    for noise in ("WARNING", "Warning", "it/s]", "fatal: not a git repository"):
        assert noise not in result.stderr and noise not in result.stdout
    # no terminal here (as in CI or under nohup): plain progress lines on stdout, as they
    # happen, and stderr kept for errors
    assert result.stderr == ""
    progress = result.stdout.splitlines()
    assert progress[0] == ("note: --limit counts per lm-eval task: mmlu evaluates up to 3 "
                           "documents (1 in each of 3 lm-eval tasks) per cell")
    assert progress[1] == "run: 1 cells (1 to compute)"
    assert progress[2] == ("[1/1] started constant (tiny-llama) × mmlu (up to 3 documents "
                           "(1 in each of 3 lm-eval tasks))")
    assert progress[3].startswith("[1/1] ok constant (tiny-llama) × mmlu = 0.3333 in ")
    [log] = (out / "cells" / "constant" / "mmlu").glob("*/log.txt")
    assert "WARNING" in log.read_text()  # lm-eval's own warnings went here
    # but not its advice on `--metadata`, repeated for every task built from a callable
    assert "Custom kwargs can be passed" not in log.read_text()
    verbose = run_cli("-p", "constant_plugin", "-v", "run", "-m", "constant", "-t", "mmlu",
                      "--data", "embedded", "--limit", "1", "--results", str(tmp_path / "v"),
                      env={"PYTHONPATH": str(plugins)})
    assert verbose.returncode == 0 and "it/s]" in verbose.stderr
    assert "Custom kwargs can be passed" not in verbose.stderr


@pytest.mark.parametrize("args,needle", [
    (["verify", "--results", "{out}"], "every result matches its checksum"),
    (["status", "--results", "{out}"], "1 done"),
    (["status", "--out", "{out}"], "1 done"),  # the former name still reads the same folder
])
def test_verify_and_status_on_a_healthy_folder(args, needle, tmp_path: Path) -> None:
    root = tmp_path / "out"
    models = [{"id": "m", "revision": "main", "dtype": "auto"}]
    Store(root).commit_cell(CellRecord(
        status="ok", fingerprint="f" * 64, row=RowInfo(row_key("single", models, {}), "single",
                                                       "single (m)", {}, models),
        task=TaskInfo("mmlu", {}, "acc,none", "accuracy"), identity={},
        finished_at="2026-01-01T00:00:00", headline=Score(0.5)), [])
    result = run_cli(*[a.format(out=root) for a in args])
    assert result.returncode == 0, result.stderr
    assert needle in result.stdout


def test_without_a_terminal_progress_is_plain_lines_with_a_heartbeat() -> None:
    from types import SimpleNamespace

    from harness.cli.display import LiveRun

    buffer = io.StringIO()
    live = LiveRun(Console(file=buffer, width=80, force_terminal=False), total=2,
                   heartbeat_s=0.0)
    cell = SimpleNamespace(title="single (m) × mmlu", documents="up to 4 documents")
    plan = SimpleNamespace(count=lambda state: {"pending": 1, "done": 1}.get(state, 0))
    with live:
        live.harness_run_started(plan)
        live.harness_cell_finished(cell, SimpleNamespace(status="skipped", error="",
                                                         headline=None))
        live.harness_cell_started(cell)
        live.phase("requests", total=8)
        live.advance(4)
        live.harness_cell_finished(cell, SimpleNamespace(status="ok", error="", headline=0.25))
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "run: 2 cells (1 to compute, 1 done before)"
    assert lines[1] == "[2/2] started single (m) × mmlu (up to 4 documents)"
    assert lines[2].startswith("  single (m) × mmlu: requests 4/8 · 1/2 cells, 0 failed")
    assert lines[3].startswith("[2/2] ok single (m) × mmlu = 0.25 in 0:00 · 2/2 cells")


def test_task_options_can_name_one_task_of_several() -> None:
    from harness.cli.arguments import build_parser, request_from_args

    args = build_parser().parse_args(["run", "-m", "single", "-t", "mmlu,gsm8k", "-O",
                                      "num_fewshot=0", "-O", "gsm8k.max_gen_toks=8"])
    options = {entry.task: entry.options for entry in request_from_args(args).tasks}
    assert options == {"mmlu": {"num_fewshot": 0}, "gsm8k": {"num_fewshot": 0, "max_gen_toks": 8}}
    result = run_cli("run", "-m", "single", "-t", "mmlu", "-O", "flores.directions=x",
                     "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: -O flores.KEY=VALUE names task 'flores', which this run does not "
        "include (tasks: mmlu)")


def test_the_console_script_finds_plugins_in_the_current_folder_and_survives_a_closed_pipe(
        tmp_path: Path) -> None:
    shutil.copy(PLUGINS / "constant_plugin.py", tmp_path)
    script = str(Path(sys.executable).with_name("harness"))  # unlike `python -m`, no cwd on sys.path
    listed = subprocess.run([script, "-p", "constant_plugin", "list"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "constant" in listed.stdout
    # `true` has exited before harness writes: every write meets a closed pipe
    piped = subprocess.run(f"set -o pipefail; {script} list | true", shell=True,
                           executable="/bin/bash", capture_output=True, text=True)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr, piped.stderr
