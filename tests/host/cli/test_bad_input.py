"""Bad input: one clear line on stderr, exit 2 (usage) or 1 (run failure), results kept."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from support import run_cli

SMOKE = ["--data", "embedded", "--limit", "1"]


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("harness: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("args, exit_code, message", [
    (["run", "--method", "singel", "--task", "mmlu"], 2, "unknown method 'singel' (did you mean 'single'?)"),
    (["run", "--method", "single", "--task", "mmlü"], 2, "unknown task 'mmlü' (did you mean 'mmlu'?)"),
    (["run", "--method", "single", "--task", "mmlu", "--models", "a,b"], 2, "takes 1 model, got 2"),
    (["run", "--method", "single", "--task", "mmlu", "-O", "num_fewshots=3"], 2,
     "unknown option 'num_fewshots' (did you mean 'num_fewshot'?)"),
    (["run", "--method", "single", "--task", "mmlu", "-O", "subjects=astronmy"], 2,
     "unknown MMLU subject 'astronmy' (did you mean 'astronomy'?)"),
    (["run", "--suite", "no-such-suite"], 2, "no suite file 'no-such-suite'"),
    (["run", "--method", "single"], 2, "name at least one --method and one --task"),
    (["leaderboard", "--results", "/nonexistent"], 2, "no results"),
])
def test_usage_errors(args, exit_code, message, tmp_path: Path) -> None:
    extra = [*SMOKE, "--results", str(tmp_path)] if args[0] == "run" else []
    result = run_cli(*args, *extra)
    assert result.returncode == exit_code, result.stderr
    assert message in _one_line_error(result.stderr)


def test_malformed_suite_file(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("methods: [single\ntasks: mmlu: x\n")
    result = run_cli("run", "--suite", str(suite))
    assert result.returncode == 2
    assert "malformed YAML" in _one_line_error(result.stderr)
    suite.write_text("methods: [single]\ntasks: [mmlu]\nlimt: 3\n")
    assert "unknown key(s) limt" in _one_line_error(run_cli("run", "--suite", str(suite)).stderr)


def test_missing_and_malformed_data_files_fail_their_cell_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mmlu" / "data" / "test").mkdir(parents=True)
    (data / "mmlu" / "data" / "dev").mkdir(parents=True)
    (data / "mmlu" / "data" / "test" / "astronomy_test.csv").write_text("Q?,a,b,c,d,A\nQ2?,a,b,c,E\n")
    (data / "mmlu" / "data" / "dev" / "astronomy_dev.csv").write_text("Q?,a,b,c,d,A\n")
    out = tmp_path / "out"
    result = run_cli("run", "--method", "single", "--task", "mmlu,gsm8k", "--data-dir", str(data),
                     "--limit", "1", "--results", str(out))
    assert result.returncode == 1
    assert "astronomy_test.csv:2: expected 6 columns, got 5" in result.stderr
    assert "GSM8K test.jsonl not found" in result.stderr
    assert "Traceback" not in result.stderr
    failures = sorted(p.name.rsplit("--", 1)[0] for p in (out / "failed").glob("*.json"))
    assert failures == ["single--gsm8k", "single--mmlu"]


def test_model_that_fails_to_load_keeps_finished_cells(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    out = tmp_path / "out"
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        data: embedded
        limit: 1
        methods:
          - {{method: single, models: [harness-zoo/tiny-llama]}}
          - {{method: single, models: ["{broken}"]}}
        tasks:
          - {{task: mmlu, options: {{subjects: [astronomy]}}}}
    """))
    result = run_cli("run", "--suite", str(suite), "--results", str(out))
    assert result.returncode == 1
    assert "cannot load" in result.stderr and "Traceback" not in result.stderr
    good = list((out / "cells" / "single" / "mmlu").glob("*/result.json"))
    assert len(good) == 1 and json.loads(good[0].read_text())["status"] == "ok"


def test_incompatible_cell_is_na_not_a_crash(tmp_path: Path) -> None:
    plugin = tmp_path / "scorer_only.py"
    plugin.write_text(textwrap.dedent("""
        from harness import hookimpl
        from harness.contract import Capability, MethodSpec

        @hookimpl
        def harness_methods():
            return [MethodSpec(name="scorer_only", description="log-likelihood only",
                               build=lambda ctx: None,
                               capabilities=frozenset({Capability.LOGLIKELIHOOD}))]
    """))
    out = tmp_path / "out"
    result = run_cli("-p", "scorer_only", "run", "--method", "scorer_only", "--task", "gsm8k",
                     *SMOKE, "--results", str(out), env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "1 n/a" in result.stdout
    assert "n/a [1]" in (out / "leaderboard.md").read_text()
    assert "[1] n/a: needs generate_until" in (out / "leaderboard.md").read_text()
