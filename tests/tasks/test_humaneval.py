"""humaneval: loaders, pass@k estimator, the execution opt-in, real-data correctness, end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from fractions import Fraction
from pathlib import Path

import pytest

from harness.contract import DataSource, MethodRow, MethodSpec, ModelRef, TaskColumn, TaskContext
from harness.errors import DataError, MissingTool, UsageError
from harness.host import load_host
from harness.options import build_options
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks import humaneval
from harness.tasks.humaneval import HumanEvalOptions, estimate_pass_at_k

from support import run_cli


def _context(data: DataSource, **options) -> TaskContext:
    return TaskContext(options=HumanEvalOptions(**options), data=data, workdir=Path("."),
                       limit=None, seed=0)


def _problems(plan) -> list[dict]:
    return list(plan.tasks[0]["custom_dataset"]()["test"])


def _samples(problems: list[dict], completions_per_problem: list[list[str]]) -> list[dict]:
    """Logged samples in the shape the runner stores (repeats as one list)."""
    return [{"task": humaneval.LM_EVAL_TASK, "doc_id": i, "doc": problem, "response": [texts]}
            for i, (problem, texts) in enumerate(zip(problems, completions_per_problem))]


def test_embedded_fixture_is_humaneval_format():
    plan = humaneval.lm_eval_plan(_context(DataSource("embedded")))
    problems = _problems(plan)
    assert [p["task_id"] for p in problems] == ["Fixture/0", "Fixture/1", "Fixture/2"]
    assert set(humaneval.FIELDS) <= set(problems[0])
    config = plan.tasks[0]
    assert config["task"] == "humaneval_generation"  # never lm-eval's stock `humaneval`
    assert config["metric_list"][0]["metric"] == "bypass"
    assert config["generation_kwargs"]["do_sample"] is False
    assert plan.data_files == [humaneval.FIXTURES / "HumanEval.jsonl"]


def test_hf_source_reads_openai_humaneval():
    config = humaneval.lm_eval_plan(_context(DataSource("hf"))).tasks[0]
    assert config["dataset_path"] == "openai/openai_humaneval" and "custom_dataset" not in config


def test_sampling_options_reach_lm_eval():
    config = humaneval.lm_eval_plan(_context(DataSource("embedded"), samples=5,
                                             temperature=0.8)).tasks[0]
    assert config["repeats"] == 5
    assert {"do_sample": True, "temperature": 0.8, "top_p": 0.95}.items() <= \
        config["generation_kwargs"].items()


@pytest.mark.parametrize("values, complaint", [
    ({"samples": 5, "temperature": 0.0}, "temperature > 0"),
    ({"samples": 0}, "samples must be >= 1"),
    ({"ks": [0, 1]}, "every k must be >= 1"),
    ({"timeout_s": 0}, "timeout_s=0.0 is too short"),
    ({"timeout_s": 0.2}, "timeout_s=0.2 is too short"),
    ({"memory_mb": 1}, "memory_mb=1 is too small"),
    ({"workers": 0}, "workers must be 1 to 32"),
    ({"workers": 1000}, "workers must be 1 to 32")])
def test_options_that_make_no_sense_are_refused_in_one_line(values, complaint):
    with pytest.raises(UsageError, match=complaint) as refused:
        build_options(HumanEvalOptions, values, "task 'humaneval'")
    assert "\n" not in str(refused.value)


def test_the_cli_refuses_a_meaningless_sandbox_before_anything_runs(tmp_path):
    result = run_cli("run", "-m", "single", "-t", "humaneval", "--data", "embedded",
                     "-O", "allow_code_execution=true", "-O", "timeout_s=0",
                     "--results", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "harness: error: task 'humaneval': timeout_s=0.0 is too short: need at least 1 s "
        "(starting the sandbox takes about 0.2 s)"]
    assert not (tmp_path / "cells").exists()


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(DataError, match="HumanEval problems"):
        humaneval.lm_eval_plan(_context(DataSource("local", tmp_path)))
    (tmp_path / "HumanEval.jsonl").write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
    plan = humaneval.lm_eval_plan(_context(DataSource("local", tmp_path)))
    with pytest.raises(DataError, match=r"HumanEval.jsonl:1: missing field\(s\) entry_point, test"):
        _problems(plan)


@pytest.mark.parametrize("n, c, k, expected", [
    (10, 3, 1, 0.3), (10, 0, 5, 0.0), (10, 10, 1, 1.0), (5, 2, 5, 1.0),
    (10, 3, 5, 1 - 21 / 252), (200, 1, 100, 0.5), (200, 20, 1, 0.1)])
def test_pass_at_k_reference_values(n, c, k, expected):
    assert estimate_pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_exact_binomial_formula():
    for n in (1, 2, 5, 20, 64):
        for c in range(n + 1):
            for k in (1, 2, 5, 10, 16, 64):
                if k <= n:
                    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                    assert math.isclose(estimate_pass_at_k(n, c, k), float(exact), abs_tol=1e-12)


def test_execution_is_refused_without_the_flag_before_any_model_loads(tmp_path):
    def build(_):
        raise AssertionError("a model was loaded although code execution was refused")

    method = MethodSpec(name="explodes", description="never built", build=build)
    host = load_host(["harness.tasks.humaneval"])
    task = host.task("humaneval")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options(), "x")]
    plan = plan_cells(host, rows, [TaskColumn(task, task.options())],
                      RunSettings(data="embedded", limit=1), Store(tmp_path))
    assert plan.cells[0].state == "error"
    assert "allow_code_execution=true" in plan.cells[0].reason
    [outcome] = run_plan(host, plan)
    assert outcome.status == "failed" and "allow_code_execution" in outcome.error
    with pytest.raises(UsageError, match="allow_code_execution"):
        humaneval.score([], _context(DataSource("embedded")))


@pytest.mark.parametrize("missing_tools", ["fail", "skip"])
def test_a_missing_sandbox_fails_the_cell_or_leaves_it_not_run(monkeypatch, tmp_path,
                                                                missing_tools):
    """A suite may skip cells whose system tool is missing (the quick start does): nothing
    is recorded, so installing the tool and rerunning computes the cell."""
    import harness.isolation._sandbox

    weak = dataclasses.replace(harness.isolation._sandbox.isolation(), bwrap=None,
                               weak_because="bubblewrap is not installed")
    for module in (harness.isolation, harness.isolation._sandbox):  # the face and behind it
        monkeypatch.setattr(module, "isolation", lambda: weak)
    host = load_host()
    method, task = host.method("single"), host.task("humaneval")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options(), "x")]
    store = Store(tmp_path)
    plan = plan_cells(host, rows, [TaskColumn(task, task.options(allow_code_execution=True))],
                      RunSettings(data="embedded", limit=1, missing_tools=missing_tools), store)
    [outcome] = run_plan(host, plan)
    assert "apt-get install bubblewrap" in outcome.error
    if missing_tools == "fail":
        assert outcome.status == "failed" and len(list(store.failures())) == 1
    else:
        assert outcome.status == "unavailable" and plan.cells[0].state == "unavailable"
        assert not list(store.results()) and not list(store.failures())


def test_weak_isolation_is_refused_unless_the_user_opts_in(monkeypatch):
    import harness.isolation._sandbox

    weak = dataclasses.replace(harness.isolation._sandbox.isolation(), bwrap=None,
                               weak_because="bubblewrap is not installed")
    for module in (harness.isolation, harness.isolation._sandbox):  # the face and behind it
        monkeypatch.setattr(module, "isolation", lambda: weak)
    with pytest.raises(MissingTool) as refusal:
        humaneval.preflight(_context(DataSource("embedded"), allow_code_execution=True))
    assert str(refusal.value) == (
        "refusing to run model-written code under weak isolation (bubblewrap is not installed): "
        "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or accept the risk with "
        "-O allow_weak_isolation=true")
    context = _context(DataSource("embedded"), allow_code_execution=True,
                       allow_weak_isolation=True)
    assert humaneval.preflight(context) is None
    problems = _problems(humaneval.lm_eval_plan(context))
    humaneval.score(_samples(problems[:1], [[problems[0]["canonical_solution"]]]), context)
    sandbox = context.score_details.facts["sandbox"]
    assert sandbox["isolation"] == "weak: bubblewrap is not installed"
    assert sandbox["weak_isolation_allowed"] is True


def test_score_reports_pass_at_k_and_every_execution():
    problems = _problems(humaneval.lm_eval_plan(_context(DataSource("embedded"))))
    right = [p["canonical_solution"] for p in problems]
    completions = [[right[0]] * 4, [right[1], "    return []\n", "    return values\n",
                                    right[1]], ["    while True: pass\n"] * 4]
    # allow_weak_isolation: what is tested here is scoring, on machines without bubblewrap too
    context = _context(DataSource("embedded"), allow_code_execution=True, samples=4,
                       ks=(1, 2, 10), timeout_s=2.0, allow_weak_isolation=True)
    metrics = humaneval.score(_samples(problems, completions), context)
    assert set(metrics) == {"pass@1", "pass@2"}  # 10 > 4 samples: not reported
    assert metrics["pass@1"][0] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["pass@2"][0] == pytest.approx((1 + estimate_pass_at_k(4, 2, 2) + 0) / 3)
    details = context.score_details.facts
    assert details["executions"]["Fixture/1"][:2] == ["passed", "failed: AssertionError"]
    assert all(e.startswith("timed out") for e in details["executions"]["Fixture/2"])
    assert details["sampling"]["samples_per_problem"] == 4
    assert {"isolation", "user", "network", "filesystem", "memory", "verdict"} <= set(
        details["sandbox"])
    assert details["sandbox"]["weak_isolation_allowed"] is True
    json.dumps(details)  # stored in the cell record as it is


def test_real_humaneval_canonical_solutions_pass_and_bare_prompts_fail(shared_data):
    plan = humaneval.lm_eval_plan(_context(DataSource("local", shared_data)))
    problems = _problems(plan)
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    context = _context(DataSource("local", shared_data), allow_code_execution=True, workers=4,
                       allow_weak_isolation=True)
    started = time.monotonic()
    canonical = humaneval.score(_samples(problems, [[p["canonical_solution"]] for p in problems]),
                                context)
    assert canonical["pass@1"][0] == 1.0, context.score_details.facts["executions"]
    bare = humaneval.score(_samples(problems, [[""] for _ in problems]), context)
    assert bare["pass@1"][0] == 0.0
    print(f"328 HumanEval programs judged in {time.monotonic() - started:.1f} s "
          f"({context.score_details.facts['sandbox']['isolation']} isolation)")


def test_end_to_end_with_the_single_method_on_tiny_llama(tmp_path):
    host = load_host(["harness.tasks.humaneval"])
    method, task = host.method("single"), host.task("humaneval")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options(), "single")]
    options = HumanEvalOptions(allow_code_execution=True, allow_weak_isolation=True,
                               max_gen_toks=16)
    plan = plan_cells(host, rows, [TaskColumn(task, options)],
                      RunSettings(data="embedded", limit=2), Store(tmp_path))
    [outcome] = run_plan(host, plan)
    assert outcome.status == "ok", outcome.error
    record = json.loads((outcome.path / "result.json").read_text())
    assert record["task"]["headline_key"] == "pass@1" and 0.0 <= outcome.headline <= 1.0
    assert len(record["score_details"]["executions"]) == 2
