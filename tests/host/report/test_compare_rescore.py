"""`harness compare` (table and one-line errors) and `harness rescore` (round trip, a
changed scoring option, refusal of an option that changes the prompts, checksums)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key
from harness.results.store import Store

from support import HOST_FIXTURES

PLUGINS = HOST_FIXTURES / "plugins"


def _commit(store: Store, label: str, method: str, task: str, key: str, samples: list[dict],
            metrics: dict[str, float], options: dict | None = None) -> CellRecord:
    models = [{"id": "harness-zoo/tiny-llama", "revision": "main", "dtype": "auto"}]
    row = row_key(method, models, {"label": label})
    record = CellRecord(
        status="ok", fingerprint=f"{row}{task}".ljust(32, "0"),
        row=RowInfo(key=row, method=method, label=label, options={}, models=models),
        task=TaskInfo(name=task, options=options or {}, headline_key=key,
                      headline_label=key, data="embedded"),
        identity={"task": {"name": task, "options": options or {}}},
        finished_at="2026-01-01T00:00:00+00:00", n_samples=len(samples), seed=1,
        headline=Score(metrics[key]), metrics={k: Score(v) for k, v in metrics.items()})
    store.commit_cell(record, samples)
    return record


def _mmlu(correct: list[int]) -> list[dict]:
    return [{"task": "mmlu", "doc_id": i, "doc_hash": f"h{i}", "filter": "none",
             "metrics": ["acc"], "acc": float(c)} for i, c in enumerate(correct)]


def _flores_samples(hypotheses: list[str]) -> list[dict]:
    references = ["the cat sat on the mat", "a dog ran home", "rain falls today"]
    return [{"task": "flores_eng_Latn-swh_Latn", "doc_id": i, "doc_hash": f"f{i}",
             "filter": "none", "metrics": ["chrf++"], "response": [[hyp]],
             "filtered_resps": [hyp], "doc": {"target": ref}}
            for i, (hyp, ref) in enumerate(zip(hypotheses, references))]


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from harness.api import TaskContext
    from harness.contract import DataSource
    from harness.tasks import flores

    monkeypatch.syspath_prepend(str(PLUGINS))
    store = Store(tmp_path / "results")
    _commit(store, "single (tiny-llama)", "single", "mmlu", "acc,none", _mmlu([1] * 3 + [0] * 17),
            {"acc,none": 0.15})
    _commit(store, "lora (tiny-llama)", "lora", "mmlu", "acc,none", _mmlu([1] * 18 + [0] * 2),
            {"acc,none": 0.9})
    samples = _flores_samples(["the cat sat on a mat", "dog ran", "rain today"])
    context = TaskContext(options=flores.FloresOptions(), data=DataSource("embedded"),
                          workdir=tmp_path, limit=None, seed=1)
    metrics = {k: v for k, (v, _) in flores.score(samples, context).items()}
    _commit(store, "single (tiny-llama)", "single", "flores", "chrf++", samples, metrics)
    _commit(store, "single (tiny-llama)", "single", "scaled", "scaled",
            [{"task": "scaled", "doc_id": i, "hit": h} for i, h in enumerate([1, 0, 1, 1])],
            {"scaled": 0.75}, options={"scale": 1.0, "prefix": "Q: "})
    return store.root


def test_compare_prints_the_pairwise_table(results: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "lora (tiny-llama)", "single (tiny-llama)", "--results",
                 str(results), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("mmlu"))
    assert lines[at] == "mmlu (acc,none ↑), 20 paired documents:"
    assert lines[at + 1].startswith("  A 0.9  B 0.15  A-B +0.75 [95% CI ")
    assert lines[at + 2].startswith("  exact McNemar p ") and " *; " in lines[at + 2]
    assert lines[at + 2].endswith("A wins/losses/ties 15/0/5")
    assert "flores (chrf++ ↑): no test (not scored in both rows (missing / ok))" in out
    assert max(len(line) for line in lines) <= 80
    assert main(["compare", "lora (tiny-llama)", "single (tiny-llama)", "--results",
                 str(results), "--task", "mmlu", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert list(payload["tasks"]) == ["mmlu"] and payload["tasks"]["mmlu"]["wins"] == 15


def test_compare_takes_method_names_and_prefixes_and_rejects_the_rest_in_one_line(
        results: Path, capsys: pytest.CaptureFixture) -> None:
    for a, b in (("lora", "single"), ("lora (tiny", "sing")):
        assert main(["compare", a, b, "--results", str(results), "--resamples", "10"]) == 0
        assert capsys.readouterr().out.startswith(
            "A = lora (tiny-llama)\nB = single (tiny-llama)\n")
    assert main(["compare", "packllm", "single (tiny-llama)", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no row 'packllm'" in err
    assert "'lora (tiny-llama)', 'single (tiny-llama)'" in err or \
        "'single (tiny-llama)', 'lora (tiny-llama)'" in err


def test_rescore_round_trip_keeps_metrics_and_says_where_they_came_from(
        results: Path, tmp_path: Path) -> None:
    out = tmp_path / "rescored"
    assert main(["-p", "scaled_task", "rescore", "--results", str(results), "--out",
                 str(out)]) == 0
    originals = {(r.row.key, r.task.name): r for r in Store(results).results()}
    rescored = Store(out).results()
    assert len(rescored) == len(originals) == 4 and Store(out).verify() == []
    for record in rescored:
        original = originals[record.row.key, record.task.name]
        assert record.rescored_from["fingerprint"] == original.fingerprint
        assert record.fingerprint != original.fingerprint
        assert {k: s.value for k, s in record.metrics.items()} == pytest.approx(
            {k: s.value for k, s in original.metrics.items()})


def test_a_changed_scoring_option_changes_the_metrics(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "rescored"
    assert main(["-p", "scaled_task", "rescore", "--results", str(results), "--out", str(out),
                 "--task", "scaled", "-O", "scale=2"]) == 0
    [record] = Store(out).results()
    assert record.headline.value == pytest.approx(1.5) and record.task.options["scale"] == 2.0
    assert record.rescored_from["task_options"]["scale"] == 1.0


def test_an_option_that_changes_the_prompts_is_refused(results: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["-p", "scaled_task", "rescore", "--results", str(results), "--out",
                 str(tmp_path / "x"), "--task", "scaled", "-O", "prefix=Question"]) == 2
    assert "change what the model is asked" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["leaderboard", "--resamples", "0"], "--resamples must be at least 1"),
    (["leaderboard", "--max-samples", "-1"], "--max-samples must be at least 0"),
    (["compare", "lora (tiny-llama)", "single (tiny-llama)", "--task", "nope"], "no task nope"),
    (["rescore", "--out", "{results}"], "--out must name another results root"),
    (["rescore", "--out", "{tmp}/x", "--task", "mmlx"], "did you mean 'mmlu'"),
])
def test_bad_values_are_one_line_errors(results: Path, tmp_path: Path, args: list[str],
                                        message: str, capsys: pytest.CaptureFixture) -> None:
    args = [a.format(results=results, tmp=tmp_path) for a in args]
    assert main([*args[:1], "--results", str(results), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
