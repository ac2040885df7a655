"""The whole tiny matrix end to end, resume after SIGKILL, and response-cache isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn, row_label
from harness.files import read_jsonl
from harness.host import load_host
from harness.results.store import Store
from harness.run.cell import evaluate_cell
from harness.run.plan import plan_cells
from harness.settings import RunSettings

from support import HOST_FIXTURES, run_cli

pytestmark = pytest.mark.slow
MATRIX = ["run", "--suite", str(HOST_FIXTURES / "tiny_matrix.yaml")]


def _result_files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in (root / "cells").glob("*/*/*/result.json")}


def test_full_tiny_matrix_end_to_end_then_resume_recomputes_nothing(tmp_path: Path) -> None:
    first = run_cli(*MATRIX, "--results", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "4 computed, 0 already done" in first.stdout
    results = _result_files(tmp_path)
    assert len(results) == 4

    record = json.loads((tmp_path / next(iter(results))).read_text())
    for key in ("fingerprint", "identity", "metrics", "headline", "timings", "hardware", "seed",
                "git_commit", "row", "task", "code", "n_samples"):
        assert key in record
    assert record["identity"]["versions"]["lm_eval"]
    for cell_result in results:
        samples = read_jsonl(tmp_path / Path(cell_result).parent / "samples.jsonl")
        assert samples and all("doc_id" in s and "prompt" in s for s in samples)
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.json", "leaderboard.png"):
        assert (tmp_path / name).exists()

    again = run_cli(*MATRIX, "--results", str(tmp_path))
    assert again.returncode == 0
    assert "0 computed, 4 already done" in again.stdout
    assert _result_files(tmp_path) == results

    plan = run_cli(*MATRIX, "--results", str(tmp_path), "--dry-run")
    assert "4 done, 0 pending" in plan.stdout

    changed = run_cli(*MATRIX, "--results", str(tmp_path), "--dry-run", "--seed", "7")
    assert "0 done, 4 pending" in changed.stdout  # the seed is part of the fingerprint


def test_resume_after_sigkill_mid_matrix(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "harness.cli", *MATRIX, "--results", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while not _result_files(tmp_path) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = _result_files(tmp_path)
    assert 1 <= len(finished) < 4, "the kill should land mid-matrix"

    resumed = run_cli(*MATRIX, "--results", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    summary = f"{4 - len(finished)} computed, {len(finished)} already done"
    # the whole story when it fails: which cells the kill left, what the resumed run said
    # of each, and what is in place now
    assert summary in resumed.stdout, (sorted(finished), resumed.stdout[-3000:],
                                       sorted(_result_files(tmp_path)))
    after = _result_files(tmp_path)
    assert len(after) == 4
    assert all(after[path] == mtime for path, mtime in finished.items())


def _cells(tmp_path: Path) -> list:
    host = load_host()
    single = host.method("single")
    rows = [MethodRow(single, (ModelRef(m),), single.options(), row_label(single, (ModelRef(m),)))
            for m in ("harness-zoo/tiny-llama", "harness-zoo/tiny-gpt2")]
    mmlu = host.task("mmlu")
    plan = plan_cells(host, rows, [TaskColumn(mmlu, mmlu.options(subjects=("astronomy",)))],
                      RunSettings(data="embedded", limit=2), Store(tmp_path))
    return plan.cells


def test_two_methods_on_one_task_never_share_responses(tmp_path: Path) -> None:
    llama, gpt2 = _cells(tmp_path)
    assert llama.fingerprint != gpt2.fingerprint
    store = Store(tmp_path)
    llama_record, llama_samples, _ = evaluate_cell(llama, store.workdir(llama.fingerprint))
    gpt2_record, gpt2_samples, _ = evaluate_cell(gpt2, store.workdir(gpt2.fingerprint))
    assert list(store.workdir(llama.fingerprint).glob("responses*.db"))
    assert list(store.workdir(gpt2.fingerprint).glob("responses*.db"))
    responses = lambda samples: [s["response"] for s in samples]  # noqa: E731
    assert responses(llama_samples) != responses(gpt2_samples)

    # lm-eval keys its cache by request only (lm-eval #2715): pointing the second model at the
    # first one's cache returns the first model's answers. Scoping by fingerprint prevents it.
    _, leaked, _ = evaluate_cell(gpt2, store.workdir(llama.fingerprint))
    assert responses(leaked) == responses(llama_samples)
    _, replayed, _ = evaluate_cell(gpt2, store.workdir(gpt2.fingerprint))
    assert responses(replayed) == responses(gpt2_samples)


def test_shards_partition_the_matrix_and_claims_exclude_each_other(tmp_path: Path) -> None:
    cells = _cells(tmp_path)
    from harness.contract import Plan

    plan = Plan(cells, Store(tmp_path))
    parts = [plan.shard(k, 3).cells for k in (1, 2, 3)]
    assert sorted(c.fingerprint for part in parts for c in part) == sorted(
        c.fingerprint for c in cells)
    store = Store(tmp_path)
    with store.claim(cells[0].fingerprint) as first:
        assert first is None
        with store.claim(cells[0].fingerprint) as second:
            assert second is not None and second.pid == os.getpid()
    with store.claim(cells[0].fingerprint) as again:
        assert again is None  # released


def test_embedded_suite_covers_every_builtin_method_and_task(tmp_path: Path) -> None:
    from harness.run.request import load_suite

    host = load_host()
    builtin = {name for name in [*host.methods, *host.tasks]
               if host.origin_of(name) == "built-in"}
    suite = load_suite("embedded")
    listed = {m.method for m in suite.methods} | {t.task for t in suite.tasks}
    assert builtin <= listed, f"missing from the embedded suite: {builtin - listed}"


def test_a_row_built_once_gives_the_per_cell_results(tmp_path: Path) -> None:
    """A frozen method's row runs its tasks on one built LM, in one lm-eval evaluation
    (harness.run.row); every record and sample equals what one build and one evaluation per
    cell give."""
    from harness.run.jobs import make_jobs, run_plan

    host = load_host()
    single, mmlu, gsm8k = host.method("single"), host.task("mmlu"), host.task("gsm8k")
    rows = [MethodRow(single, (ModelRef("harness-zoo/tiny-llama"),), single.options())]
    columns = [TaskColumn(mmlu, mmlu.options(subjects=("astronomy",), num_fewshot=1)),
               TaskColumn(gsm8k, gsm8k.options(num_fewshot=1, max_gen_toks=8))]
    results = {}
    for group in (True, False):
        store = Store(tmp_path / str(group))
        plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=2), store)
        assert len(make_jobs(plan.cells, group)) == (1 if group else 2)
        outcomes = run_plan(host, plan, group=group)
        assert [o.status for o in outcomes] == ["ok", "ok"]
        results[group] = {r.task.name: (r, read_jsonl(store.cell_dir(r.row.method, r.task.name,
                                                                     r.fingerprint) / "samples.jsonl"))
                          for r in store.results()}
    for task, (grouped, samples) in results[True].items():
        alone, alone_samples = results[False][task]
        assert grouped.fingerprint == alone.fingerprint
        assert grouped.metrics == alone.metrics and samples == alone_samples
        assert grouped.method_report == alone.method_report
        assert grouped.lm_eval == alone.lm_eval  # the part of the joint output about its tasks
        assert grouped.timings["evaluated_with"] == 2  # one lm-eval evaluation of both tasks
    assert results[True]["gsm8k"][0].timings["build_shared"] == 1.0  # built for mmlu
    assert "build_shared" not in results[True]["mmlu"][0].timings
