"""Long-lived workers (harness.run.executors.worker): nothing a job does to the process reaches
the next job, and the model memo hands each job its own copy of the same weights, with the
results of a run in one process. (Several jobs per worker and a killed worker:
test_executors.py.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.files import read_jsonl
from harness.results.store import Store

from support import run_cli


def _results(out: Path) -> dict[str, tuple]:
    store = Store(out)
    return {r.fingerprint: (r.metrics, r.headline, r.n_samples,
                            read_jsonl(store.cell_dir(r.row.method, r.task.name, r.fingerprint)
                                       / "samples.jsonl"))
            for r in store.results()}


def test_a_job_leaves_the_process_as_it_found_it(tmp_path):
    import torch

    from harness.run.executors import worker

    spec = tmp_path / "job.json"
    spec.write_text("{not json")  # the job fails at once; what it changed must not stay
    threads = torch.get_num_threads()
    with worker._job_state():
        torch.set_num_threads(1 if threads > 1 else 2)
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        os.environ["HARNESS_LEAK_TEST"] = "1"
        os.chdir(tmp_path)
    assert torch.get_num_threads() == threads
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    assert "HARNESS_LEAK_TEST" not in os.environ and Path.cwd() != tmp_path
    assert worker.run_one(spec, capture_logs=True) == 1
    assert "harness: error" in spec.with_suffix(".log").read_text()


def test_the_model_memo_hands_out_independent_copies_within_its_budget():
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import loading as models
    from harness.run.executors.worker import ModelMemo

    ref = models.ModelRef("harness-zoo/tiny-llama")
    memo = ModelMemo(budget_bytes=1 << 30)
    load = memo.wrap(models.load_weights)
    first = load(AutoModelForCausalLM, ref, "model")
    with torch.no_grad():
        next(first.parameters()).add_(1.0)  # a job that trains or patches its model
    second = load(AutoModelForCausalLM, ref, "model")
    fresh = models.load_weights(AutoModelForCausalLM, ref, "model")
    assert memo.hits == 1 and second is not first
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(),
                                                 fresh.state_dict().values()))
    assert not second.training and second.device.type == "cpu"
    size = memo.held_bytes
    assert 0 < size < 1 << 30
    small = ModelMemo(budget_bytes=size - 1)  # too large to keep: loaded as without a memo
    assert small.wrap(models.load_weights)(AutoModelForCausalLM, ref, "model") is not None
    assert not small.entries
    other = models.ModelRef("harness-zoo/tiny-llama", dtype="bfloat16")
    assert memo.key(AutoModelForCausalLM, other, {}) != memo.key(AutoModelForCausalLM, ref, {})


@pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "two runs of a zoo model over three seeds (about 100 s on 2 loaded cores); "
    "set HARNESS_SLOW_TESTS=1"))
def test_jobs_on_the_same_model_share_a_worker_memo_with_the_in_process_results(tmp_path):
    """Three seeds of `single` on one zoo model: three jobs on the same weights, so a worker
    that takes two of them loads the model once (the memo) and hands the second job a copy;
    every record equals the run in one process."""
    row = ["run", "--method", "single", "--models", "harness-zoo/tiny-llama", "-t", "mmlu",
           "--data", "embedded", "--limit", "1", "--seeds", "1,2,3"]
    reference = run_cli(*row, "--results", str(tmp_path / "in-process"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "pool"
    pooled = run_cli(*row, "--results", str(out), "--jobs", "2")
    assert pooled.returncode == 0, pooled.stderr
    assert _results(out) == _results(tmp_path / "in-process")
    logs = "".join(log.read_text() for log in (out / "jobs").glob("*.log"))
    assert re.search(r"[12] load\(s\) served from memory", logs)  # a worker ran two jobs
