"""Executors run the same jobs to the same results: in process, a local worker pool, Ray
and Slurm (submitit's local executor); timeouts, retries and Ctrl-C in the pool; the pool's
and Ray's long-lived workers take several jobs each and a killed one loses only its job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.files import read_jsonl
from harness.results.store import Store

from support import HOST_FIXTURES, REPO, run_cli

PLUGINS = HOST_FIXTURES / "plugins"
SUITE = """
methods:
  - {method: constant, options: {score: -2}}
  - {method: constant, options: {score: -3, answer: "42"}}
tasks:
  - {task: mmlu, options: {num_fewshot: 0}}
  - {task: gsm8k, options: {num_fewshot: 0}}
data: embedded
limit: 1
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """The test plugins and a suite of two rows (two jobs) x two tasks."""
    folder = tmp_path / "plugins"
    shutil.copytree(PLUGINS, folder)
    (folder / "suite.yaml").write_text(SUITE)
    return folder


def _matrix(plugins: Path) -> list[str]:
    return ["-p", "constant_plugin", "run", "--suite", str(plugins / "suite.yaml")]


def _run(plugins: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    return run_cli(*_matrix(plugins), "--results", str(out), *extra,
                   env={"PYTHONPATH": str(plugins), **(env or {})})


def _results(out: Path) -> dict[str, tuple]:
    store = Store(out)
    return {r.fingerprint: (r.metrics, read_jsonl(store.cell_dir(r.row.method, r.task.name,
                                                                 r.fingerprint) / "samples.jsonl"))
            for r in store.results()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    folder = tmp_path_factory.mktemp("reference")
    shutil.copytree(PLUGINS, folder / "plugins")
    (folder / "plugins" / "suite.yaml").write_text(SUITE)
    result = _run(folder / "plugins", folder / "out")
    assert result.returncode == 0, result.stderr
    return _results(folder / "out")


@pytest.mark.parametrize("executor,env", [
    (["--jobs", "2"], {}),
    (["--executor", "slurm", "--jobs", "2"], {"HARNESS_SUBMITIT_CLUSTER": "local"}),
    (["--executor", "ray"], {}),
], ids=["local-pool", "slurm-submitit-local", "ray-local"])
def test_every_executor_gives_the_in_process_results(executor, env, reference, plugins,
                                                     tmp_path) -> None:
    if "ray" in executor:
        pytest.importorskip("ray")
    if "slurm" in executor:
        pytest.importorskip("submitit")
    out = tmp_path / "out"
    result = _run(plugins, out, *executor, env=env)
    assert result.returncode == 0, result.stderr
    assert "4 computed" in result.stdout
    assert _results(out) == reference
    assert len(list((out / "jobs").glob("*.outcomes.json"))) == 2  # one per row
    again = _run(plugins, out, *executor, env=env)
    assert "0 computed, 4 already done" in again.stdout  # resumable like a local run


RAY_SLOW = pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "the same with Ray starts a Ray instance (about a minute on 2 cores); "
    "set HARNESS_SLOW_TESTS=1"))


@pytest.mark.parametrize("executor", [
    ["--jobs", "2"],
    pytest.param(["--executor", "ray", "--jobs", "2"], marks=RAY_SLOW),
], ids=["local-pool", "ray"])
def test_workers_take_several_jobs_and_a_killed_one_loses_only_its_job(
        executor, reference, plugins, tmp_path) -> None:
    """Two seeds make four jobs for two workers; the first job to build kills its worker
    (as the OOM killer would) and is retried in a new one. The seed that the reference ran
    gives the reference's results, whichever worker ran its jobs."""
    if "ray" in executor:
        pytest.importorskip("ray")
    out, marker = tmp_path / "out", tmp_path / "died"
    result = _run(plugins, out, "--seeds", "1234,7", "--retries", "1", *executor,
                  env={"HARNESS_TEST_DIE_ONCE": str(marker)})
    assert marker.exists(), "a worker should have been killed"
    assert result.returncode == 0, result.stderr
    assert "8 computed" in result.stdout  # the killed worker's job too, in its retry
    results = _results(out)
    assert {fp: results[fp] for fp in reference} == reference
    # each attempt's log opens with its worker's process id: 5 attempts in at most 3
    # processes (2 workers and the one that replaced the killed worker)
    pids = [int(pid) for log in (out / "jobs").glob("*.log")
            for pid in re.findall(r"harness worker (\d+): job", log.read_text())]
    assert len(pids) == 5 and len(set(pids)) <= 3
    assert max(pids.count(pid) for pid in pids) >= 2  # a worker ran several jobs


def test_a_job_that_times_out_is_retried(plugins: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    marker = tmp_path / "slept-once"
    slow = ["-o", "sleep_s=120", "-o", f"slow_once={marker}", "--jobs", "2",
            "--job-timeout", "20"]
    failed = _run(plugins, out, *slow)
    assert failed.returncode == 1 and "job timed out after 20 s" in failed.stderr
    assert "2 computed" in failed.stdout  # the other row's job was not held up
    marker.unlink()
    retried = _run(plugins, out, *slow, "--retries", "1")
    assert retried.returncode == 0, retried.stderr
    assert "2 computed, 2 already done" in retried.stdout


def test_ctrl_c_stops_every_worker_and_leaves_no_half_cell(plugins: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness.cli", *_matrix(plugins), "--results", str(out), "-o",
               "sleep_s=300", "--jobs", "2"]
    # a terminal's Ctrl-C: SIGINT at its default disposition even when the test runner was
    # started in the background (shells start background jobs with SIGINT ignored)
    parent = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(plugins)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "locks").glob("*.lock")):
        time.sleep(0.5)
    time.sleep(2)  # both workers hold a lock by now
    # distinct processes: a worker claims every cell of its job before it runs them
    holders = sorted({int(json.loads(lock.read_text())["pid"])
                      for lock in (out / "locks").glob("*.lock")})
    assert len(holders) == 2, "both workers should be running"
    parent.send_signal(signal.SIGINT)
    _, stderr = parent.communicate(timeout=120)  # generous: a loaded machine is slow to exit
    assert parent.returncode == 130, stderr
    time.sleep(1)
    for pid in holders:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not Store(out).results()
    assert not [p for p in (out / "cells").rglob("*") if p.name.startswith(".")]
    resumed = _run(plugins, out, "--jobs", "2")
    assert resumed.returncode == 0 and "4 computed" in resumed.stdout
