"""flores: direction configs over the original text files, sacrebleu scoring, end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU, CHRF

from harness.contract import DataSource, MethodRow, ModelRef, TaskColumn, TaskContext
from harness.errors import DataError, UsageError
from harness.host import load_host
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks import flores
from harness.tasks.flores import FloresOptions


def _context(data: DataSource, **options) -> TaskContext:
    return TaskContext(options=FloresOptions(**options), data=data, workdir=Path("."),
                       limit=None, seed=0)


def _names(plan) -> list[str]:
    return [config["task"] for config in plan.tasks]


def test_embedded_default_is_the_low_resource_set_present_both_ways():
    plan = flores.lm_eval_plan(_context(DataSource("embedded")))
    assert _names(plan) == ["flores_swh_Latn-eng_Latn", "flores_eng_Latn-swh_Latn"]
    splits = plan.tasks[0]["custom_dataset"]()
    assert list(splits) == ["devtest"] and len(splits["devtest"]) == 6
    assert splits["devtest"][0] == {"id": 0, "source": "Watoto wanacheza bustanini.",
                                    "target": "The children are playing in the garden."}
    assert plan.tasks[0]["doc_to_text"] == "Swahili: {{source}}\nEnglish:"
    assert plan.num_fewshot == 0 and "fewshot_split" not in plan.tasks[0]


def test_languages_direction_and_explicit_pairs():
    into = flores.lm_eval_plan(_context(DataSource("embedded"), languages=("swh_Latn", "fra_Latn"),
                                        direction="into_pivot"))
    assert _names(into) == ["flores_swh_Latn-eng_Latn", "flores_fra_Latn-eng_Latn"]
    pair = flores.lm_eval_plan(_context(DataSource("embedded"), directions=("swh_Latn-fra_Latn",)))
    assert _names(pair) == ["flores_swh_Latn-fra_Latn"]
    assert pair.tasks[0]["description"].startswith("Translate the following sentence from "
                                                   "Swahili to French.")


def test_few_shot_examples_come_from_dev():
    plan = flores.lm_eval_plan(_context(DataSource("embedded"), directions=("fra_Latn-eng_Latn",),
                                        num_fewshot=2))
    config = plan.tasks[0]
    assert plan.num_fewshot == 2 and config["fewshot_split"] == "dev"
    assert config["custom_dataset"]()["dev"][0]["source"] == "Le soleil se lève à l'est."
    assert {p.name for p in plan.data_files} >= {"fra_Latn.dev", "eng_Latn.dev"}
    with pytest.raises(DataError, match="lacks swh_Latn.dev"):
        flores.lm_eval_plan(_context(DataSource("embedded"), num_fewshot=1))


@pytest.mark.parametrize("options, error, message", [
    ({"languages": ("yor_Latn",)}, DataError, "no devtest file for yor_Latn"),
    ({"directions": ("swh_Latn",)}, UsageError, "must read SRC-TGT"),
    ({"languages": ("swahili",)}, UsageError, "not a FLORES-200 language code"),
])
def test_bad_requests_are_named(options, error, message):
    with pytest.raises(error, match=message):
        flores.lm_eval_plan(_context(DataSource("embedded"), **options))


def test_hugging_face_source_explains_why_local_files_are_needed():
    with pytest.raises(DataError, match="facebook/flores is a loading script"):
        flores.lm_eval_plan(_context(DataSource("hf")))


def test_misaligned_or_blank_files_are_rejected(tmp_path):
    devtest = tmp_path / "flores200" / "devtest"
    devtest.mkdir(parents=True)
    (devtest / "eng_Latn.devtest").write_text("one\ntwo\n")
    (devtest / "swh_Latn.devtest").write_text("moja\n")
    plan = flores.lm_eval_plan(_context(DataSource("local", tmp_path)))
    with pytest.raises(DataError, match="has 1 lines but .* has 2"):
        plan.tasks[0]["custom_dataset"]()
    (devtest / "swh_Latn.devtest").write_text("moja\n\n")
    with pytest.raises(DataError, match=r"swh_Latn.devtest:2: blank line"):
        plan.tasks[0]["custom_dataset"]()


def _samples(direction: str, pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"task": f"flores_{direction}", "doc_id": i, "doc": {"target": reference},
             "filtered_resps": [f" {hypothesis}"]}
            for i, (hypothesis, reference) in enumerate(pairs)]


def test_scores_are_sacrebleu_corpus_scores_averaged_over_directions(monkeypatch):
    # spBLEU unavailable, whatever is installed here
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    into = [("The children play in the garden.", "The children are playing in the garden."),
            ("My mother cooks rice.", "My mother cooks rice every evening.")]
    out_of = [("Watoto wanacheza.", "Watoto wanacheza bustanini."),
              ("Soko linafunguliwa asubuhi.", "Soko linafunguliwa mapema asubuhi.")]
    context = _context(DataSource("embedded"))
    metrics = flores.score(_samples("swh_Latn-eng_Latn", into)
                           + _samples("eng_Latn-swh_Latn", out_of), context)
    expected = {}
    for direction, pairs in (("swh_Latn-eng_Latn", into), ("eng_Latn-swh_Latn", out_of)):
        hypotheses, references = [h for h, _ in pairs], [[r for _, r in pairs]]
        expected[f"chrf++/{direction}"] = CHRF(word_order=2).corpus_score(hypotheses,
                                                                       references).score
        expected[f"bleu/{direction}"] = BLEU().corpus_score(hypotheses, references).score
        assert metrics[f"chrf++/{direction}"] == (expected[f"chrf++/{direction}"], None)
        assert metrics[f"bleu/{direction}"] == (expected[f"bleu/{direction}"], None)
    assert metrics["chrf++"][0] == pytest.approx((expected["chrf++/swh_Latn-eng_Latn"]
                                                  + expected["chrf++/eng_Latn-swh_Latn"]) / 2)
    assert "spbleu" not in metrics and not any(k.startswith("spbleu/") for k in metrics)
    details = context.score_details.facts
    assert "sentencepiece" in details["unavailable"]["spbleu"]
    assert details["signatures"]["chrf++"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:2")
    assert "tok:13a" in details["signatures"]["bleu"]
    assert details["directions"]["swh_Latn-eng_Latn"]["sentences"] == 2
    json.dumps(details)


def test_spbleu_needs_the_flores200_model_file(monkeypatch, tmp_path):
    import importlib.util

    from sacrebleu.tokenizers import tokenizer_spm

    real_find_spec = importlib.util.find_spec
    def find_spec(name, *args):
        return object() if name == "sentencepiece" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    problem = flores.spbleu_unavailable()
    assert problem is not None and str(tmp_path / "models") in problem


def test_real_flores_devtest_and_dev_files_load_completely(shared_data):
    root = flores.local_root(shared_data)
    languages = flores.available_languages(root)
    assert len(languages) == 30 and set(flores.DEFAULT_LANGUAGES) <= set(languages)
    for code in languages:
        assert len(flores.read_lines(root / "devtest" / f"{code}.devtest")) == 1012, code
    plan = flores.lm_eval_plan(_context(DataSource("local", shared_data)))
    assert len(plan.tasks) == 2 * len(flores.DEFAULT_LANGUAGES)
    splits = plan.tasks[0]["custom_dataset"]()
    assert len(splits["devtest"]) == 1012
    assert splits["devtest"][0]["target"].startswith('"We now have 4-month-old mice')
    assert splits["devtest"][0]["source"].startswith('"Sasa tuna panya wenye umri')
    few_shot = flores.lm_eval_plan(_context(DataSource("local", shared_data), num_fewshot=1,
                                            languages=("npi_Deva", "hin_Deva", "fra_Latn",
                                                       "deu_Latn", "spa_Latn", "rus_Cyrl")))
    for config in few_shot.tasks:
        splits = config["custom_dataset"]()
        assert (len(splits["devtest"]), len(splits["dev"])) == (1012, 997), config["task"]


def test_end_to_end_with_the_single_method_on_tiny_llama(tmp_path):
    host = load_host(["harness.tasks.flores"])
    method, task = host.method("single"), host.task("flores")
    rows = [MethodRow(method, (ModelRef("harness-zoo/tiny-llama"),), method.options(), "single")]
    plan = plan_cells(host, rows, [TaskColumn(task, FloresOptions(max_gen_toks=8))],
                      RunSettings(data="embedded", limit=2), Store(tmp_path))
    [outcome] = run_plan(host, plan)
    assert outcome.status == "ok", outcome.error
    record = json.loads((outcome.path / "result.json").read_text())
    assert record["task"]["headline_key"] == "chrf++"
    assert set(record["score_details"]["directions"]) == {"swh_Latn-eng_Latn", "eng_Latn-swh_Latn"}
    # lm-eval's own corpus chrF++ per direction agrees with ours
    for name, result in record["lm_eval"]["task_results"].items():
        direction = name.removeprefix("flores_")
        ours = record["metrics"][f"chrf++/{direction}"]["value"]
        assert result["chrf++,none"] == pytest.approx(ours)
