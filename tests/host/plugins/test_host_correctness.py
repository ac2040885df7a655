"""Results that must never vanish or go stale: row identity, code-aware fingerprints,
typed records (with migration), NaN headlines, leaderboard --check, data preflight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.contract import MethodRow, ModelRef, TaskColumn
from harness.errors import UsageError
from harness.host import load_host, source_digest
from harness.report.board import build_board
from harness.report.markdown import markdown
from harness.results.records import CellRecord
from harness.results.store import Store
from harness.run.plan import plan_cells
from harness.settings import RunSettings

from support import HOST_FIXTURES, run_cli

FIXTURES = HOST_FIXTURES
PLUGINS = FIXTURES / "plugins"
CONSTANT = ("-p", "constant_plugin")
SMOKE = ("--data", "embedded", "--limit", "1", "-O", "num_fewshot=0")


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A private copy of the test plugins (tests edit their source)."""
    folder = tmp_path / "plugins"
    shutil.copytree(PLUGINS, folder)
    return folder


def _cli(plugin_dir: Path, *args: str):
    return run_cli(*CONSTANT, *args, env={"PYTHONPATH": str(plugin_dir)})


def _host(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    return load_host(["constant_plugin"])


# ----------------------------------------------------------------------------- rows


def test_rows_differing_only_in_options_stay_two_rows(plugin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for answer in ("-2", "-3"):
        result = _cli(plugin_dir, "run", "-m", "constant", "-t", "mmlu", *SMOKE,
                      "-o", f"score={answer}", "--results", str(out))
        assert result.returncode == 0, result.stderr
    board = build_board(out)
    labels = sorted(row.label for row in board.rows)
    assert labels == ["constant[score=-2.0] (tiny-llama)", "constant[score=-3.0] (tiny-llama)"]
    assert len({row.key for row in board.rows}) == 2


def test_default_labels_name_the_options_that_differ(plugin_dir: Path, monkeypatch) -> None:
    host = _host(plugin_dir, monkeypatch)
    spec = host.method("constant")
    models = (ModelRef("harness-zoo/tiny-llama"),)
    assert MethodRow(spec, models, spec.options()).label == "constant (tiny-llama)"
    changed = MethodRow(spec, models, spec.options(answer="x", score=2.0))
    assert changed.label == "constant[answer=x, score=2.0] (tiny-llama)"


def test_two_rows_with_one_label_are_refused(plugin_dir: Path, monkeypatch, tmp_path) -> None:
    host = _host(plugin_dir, monkeypatch)
    spec, mmlu = host.method("constant"), host.task("mmlu")
    models = (ModelRef("harness-zoo/tiny-llama"),)
    rows = [MethodRow(spec, models, spec.options(score=1.0), "same"),
            MethodRow(spec, models, spec.options(score=2.0), "same")]
    with pytest.raises(UsageError, match="two different rows are labelled 'same'"):
        plan_cells(host, rows, [TaskColumn(mmlu, mmlu.options())],
                   RunSettings(data="embedded", limit=1), Store(tmp_path))
    twice = [MethodRow(spec, models, spec.options(), "a"), MethodRow(spec, models, spec.options(), "b")]
    with pytest.raises(UsageError, match="repeats row"):
        plan_cells(host, twice, [TaskColumn(mmlu, mmlu.options())],
                   RunSettings(data="embedded", limit=1), Store(tmp_path))


def test_a_suite_row_restricted_to_absent_tasks_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("methods:\n  - {method: single, tasks: [gsm8k]}\ntasks: [mmlu]\n"
                     "data: embedded\n")
    result = run_cli("run", "--suite", str(suite), "--dry-run")
    assert result.returncode == 2
    assert "restricted to task(s) gsm8k that the run does not include" in result.stderr


# ----------------------------------------------------------------------------- code identity


def test_a_new_method_version_recomputes_and_status_flags_changed_source(
        plugin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _cli(plugin_dir, "run", "-m", "constant", "-t", "mmlu", *SMOKE, "--results", str(out))
    assert first.returncode == 0, first.stderr
    [record] = Store(out).results()
    assert record.code["method"].version == "1"
    assert record.code["method"].distribution == "local"
    assert record.identity["method"]["version"] == "1"

    source = plugin_dir / "constant_plugin.py"
    source.write_text(source.read_text() + "\n# a fix that does not bump the version\n")
    status = _cli(plugin_dir, "status", "--results", str(out), "--json")
    [entry] = json.loads(status.stdout)
    assert entry["state"] == "done" and "method constant code changed since" in entry["detail"]
    dry = _cli(plugin_dir, "run", "-m", "constant", "-t", "mmlu", *SMOKE, "--results", str(out),
               "--dry-run")
    assert "1 done, 0 pending" in dry.stdout  # same version: the result is reused...

    source.write_text(source.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    # same size, maybe the same mtime second: the cached bytecode would look current
    shutil.rmtree(plugin_dir / "__pycache__", ignore_errors=True)
    dry = _cli(plugin_dir, "run", "-m", "constant", "-t", "mmlu", *SMOKE, "--results", str(out),
               "--dry-run")
    assert "0 done, 1 pending" in dry.stdout  # ...a bumped version recomputes


def test_third_party_distribution_and_source_enter_the_record(plugin_dir, monkeypatch) -> None:
    host = _host(plugin_dir, monkeypatch)
    code = host.code_of(host.method("constant"))
    assert code.plugin == "constant_plugin" and code.version == "1"
    assert code.source_sha256 == source_digest("constant_plugin")
    builtin = host.code_of(host.method("single"))
    assert builtin.distribution.startswith("harness ")


def test_fit_fingerprints_follow_the_method_version(tmp_path: Path) -> None:
    from adapters.adapters_support import build_context, label_task, synthetic_task

    from harness.plugins.aligner.config import AlignerOptions
    from harness.training.cache import fit_fingerprint

    ctx = build_context(AlignerOptions(), synthetic_task(label_task(4, 0)[0]), tmp_path)
    ctx.method_code = {"version": "1", "distribution": "harness 0.2.0"}
    before = fit_fingerprint(ctx, "aligner", AlignerOptions(), "data", "cpu")
    ctx.method_code = {"version": "2", "distribution": "harness 0.2.0"}
    assert fit_fingerprint(ctx, "aligner", AlignerOptions(), "data", "cpu") != before


# ----------------------------------------------------------------------------- records


def test_schema_1_results_still_read(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "v1_results", tmp_path / "old")
    store = Store(tmp_path / "old")
    records = {r.row.method: r for r in store.results()}
    assert set(records) == {"packllm", "single", "adalink"}
    packllm = records["packllm"]
    assert packllm.row.label == "packllm (tiny-llama + tiny-gpt2)"
    assert packllm.headline is not None and packllm.headline.value == pytest.approx(1 / 3)
    assert records["adalink"].status == "n/a" and records["adalink"].reason == "needs vision"
    assert "packllm (tiny-llama + tiny-gpt2)" in markdown(build_board(tmp_path / "old"))
    assert not store.verify()


@pytest.mark.parametrize("content", ["", "{}", "[1, 2, 3]", "garbage", '{"schema": 2}',
                                     '{"schema": 99, "status": "ok"}'])
def test_malformed_records_are_one_line_errors(content: str, tmp_path: Path) -> None:
    from harness.errors import DataError

    with pytest.raises(DataError, match="record|JSON|object"):
        try:
            data = json.loads(content)
        except ValueError:
            raise DataError("not JSON") from None
        CellRecord.from_dict(data, "result.json")


def test_nan_headline_is_a_failed_cell(plugin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli(plugin_dir, "run", "-m", "constant", "-t", "nan_task", *SMOKE, "--results", str(out))
    assert result.returncode == 1
    assert "the scorer found nothing to score" in result.stderr
    assert "0 computed" in result.stdout and "1 failed" in result.stdout
    assert not Store(out).results() and len(Store(out).failures()) == 1


# ----------------------------------------------------------------------------- leaderboards


def test_check_cannot_be_fooled_by_blocking_the_writers(plugin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _cli(plugin_dir, "run", "-m", "constant", "-t", "mmlu", *SMOKE,
                "--results", str(out)).returncode == 0
    markdown_file = out / "leaderboard.md"
    markdown_file.write_text(markdown_file.read_text() + "edited\n")
    for env in ({}, {"HARNESS_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        result = run_cli("leaderboard", "--results", str(out), "--check", env=env)
        assert result.returncode == 1 and "out of date" in result.stderr
        blocked = run_cli("-p", "no:harness.report.writers", "leaderboard", "--results", str(out),
                          "--check", env=env)
        assert blocked.returncode == 2 and "cannot be blocked" in blocked.stderr
    assert run_cli("leaderboard", "--results", str(out)).returncode == 0
    (out / "leaderboard.tex").write_text("a table no writer produces\n")
    orphan = run_cli("leaderboard", "--results", str(out), "--check")
    assert orphan.returncode == 1 and "not regenerated by any loaded writer" in orphan.stderr


# ----------------------------------------------------------------------------- data preflight


def test_unreachable_hub_data_fails_before_any_model_loads(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_cli("run", "-m", "packllm", "-t", "mmlu", "--results", str(tmp_path / "out"),
                     env={"HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                          "HF_HOME": str(tmp_path / "hf"), "HARNESS_DATA_DIR": ""})
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "cais/mmlu is not in the local Hugging Face cache" in line
    assert "--data-dir" in line and "--data embedded" in line
    assert not (cache / "zoo").exists()  # no model was built or loaded


def test_harness_data_dir_is_the_default_local_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    settings = RunSettings().resolved()
    assert settings.data == "local" and Path(settings.data_dir) == tmp_path
    assert RunSettings(data="embedded").resolved().data == "embedded"
