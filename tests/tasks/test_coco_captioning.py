"""coco_captioning: COCO-format loader, preflight, pycocoevalcap parity, tiny-VLM end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.contract import DataSource, MethodRow, ModelRef, TaskColumn, TaskContext
from harness.errors import DataError, MissingTool
from harness.host import load_host
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks.coco_captioning import (EMBEDDED_ANNOTATIONS, CocoOptions, preflight,
                                           read_coco_captions, scoring)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_java = pytest.mark.skipif(scoring.java_problem() is not None,
                                reason="pycocoevalcap or Java missing")


def _context(data: DataSource, limit: int | None = None, **options) -> TaskContext:
    return TaskContext(options=CocoOptions(**options), data=data, workdir=Path("."),
                       limit=limit, seed=0)


def test_fixture_is_coco_format():
    images = read_coco_captions(EMBEDDED_ANNOTATIONS)
    assert len(images) == 8
    assert all(len(i["references"]) == 5 for i in images)
    assert images[0]["references"][0] == "a red circle on a white background"


@pytest.mark.parametrize("content, message", [
    ({"images": []}, "needs 'images' and 'annotations'"),
    ({"images": [{"id": 1}], "annotations": []}, "lacks 'id' or 'file_name'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}],
      "annotations": [{"image_id": 2, "caption": "x"}]}, "unknown image 2"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}, "without captions"),
])
def test_malformed_annotations_are_named(tmp_path, content, message):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        read_coco_captions(path)


def test_real_karpathy_test_split_loads():
    path = SHARED_DATA / "coco_karpathy" / "captions_test5k.json"
    if not path.is_file():
        pytest.skip("shared/data/coco_karpathy absent")
    images = read_coco_captions(path)
    assert len(images) == 5000
    assert sum(len(i["references"]) for i in images) == 25010
    # the images are not shipped: planning names the missing ones before any model loads
    if scoring.java_problem() is None:
        problem = preflight(_context(DataSource("local", SHARED_DATA), limit=2))
        assert problem.startswith("COCO images missing: 2 of 2 under ")
        assert "COCO_val2014_" in problem and "image_dir" in problem


def test_missing_java_refused_at_planning(monkeypatch):
    """A missing system tool, not bad data: the run fails the cell or, with `missing_tools:
    skip`, lists it as not run here with this fix."""
    monkeypatch.setattr(scoring.shutil, "which", lambda name: None)
    with pytest.raises(MissingTool, match="Java .*apt-get install default-jre-headless"):
        preflight(_context(DataSource("embedded")))


def test_prompt_without_image_placeholder_refused():
    if scoring.java_problem() is not None:
        pytest.skip("pycocoevalcap or Java missing")
    assert "<image>" in preflight(_context(DataSource("embedded"), prompt="Describe it."))


@needs_java
def test_scores_equal_cocoevalcap(tmp_path, monkeypatch):
    """Our merged, tokenise-once scoring gives COCOEvalCap's numbers on the same predictions."""
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    images = read_coco_captions(EMBEDDED_ANNOTATIONS)
    predictions = {image["image_id"]: guess for image, guess in zip(images, [
        "a red circle on a white background", "a green box", "a blue triangle on grey",
        "a yellow circle", "one red square in the picture", "a drawing of a triangle",
        "a blue circle on a white background", "something yellow"])}
    references = {image["image_id"]: image["references"] for image in images}
    package_files = sorted(p for p in scoring.package_dir().rglob("*") if "__pycache__" not in p.parts)

    ours, notes, per_image = scoring.caption_scores(references, predictions, tmp_path / "cache")

    class NoSpice:  # CoreNLP for SPICE is not available offline; COCOEvalCap always runs it
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    # the same PTB tokenizer code, run from the writable copy instead of site-packages
    monkeypatch.setattr(coco_eval, "PTBTokenizer", scoring.ptb_tokenizer_class(tmp_path / "cache"))
    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    monkeypatch.setattr(coco_eval, "Meteor", scoring.shared_meteor)  # the same class, one JVM
    ground_truth = COCO(str(EMBEDDED_ANNOTATIONS))
    results = ground_truth.loadRes([{"image_id": i, "caption": c} for i, c in predictions.items()])
    reference = coco_eval.COCOEvalCap(ground_truth, results)
    reference.evaluate()

    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert ours[key] == pytest.approx(reference.eval[key], rel=1e-12, abs=1e-15), key
    assert ours["CIDEr"] > 0.5
    assert sum(per_image.values()) / len(per_image) == pytest.approx(ours["CIDEr"])
    assert ours["SPICE"] is None  # unavailable, never 0
    assert notes["SPICE"].startswith("unavailable: Stanford CoreNLP 3.6.0 jars")
    after = sorted(p for p in scoring.package_dir().rglob("*") if "__pycache__" not in p.parts)
    assert after == package_files  # nothing written into site-packages


@needs_java
def test_runs_end_to_end_on_tiny_vlm(tmp_path):
    host = load_host(["harness.tasks.coco_captioning"])
    single, task = host.method("single"), host.task("coco_captioning")
    rows = [MethodRow(single, (ModelRef("harness-zoo/tiny-vlm"),), single.options(), "vlm"),
            MethodRow(single, (ModelRef("harness-zoo/tiny-llama"),), single.options(), "text")]
    columns = [TaskColumn(task, CocoOptions(max_gen_toks=4))]
    plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=2),
                      Store(tmp_path / "out"))
    outcomes = run_plan(host, plan)
    assert [o.status for o in outcomes] == ["ok", "n/a"], [o.error for o in outcomes]
    assert plan.cells[1].reason == "needs vision"
    record = json.loads((outcomes[0].path / "result.json").read_text())
    assert record["task"]["headline_key"] == "CIDEr"
    assert record["metrics"]["SPICE"]["value"] is None
    assert record["score_details"]["SPICE"].startswith("unavailable")
    assert "vision" in record["row"]["capabilities"]
    assert record["n_samples"] == 2
    samples = [json.loads(line) for line in (outcomes[0].path / "samples.jsonl").open()]
    assert {s["doc"]["image_id"] for s in samples} == {900001, 900002}


@needs_java
def test_spice_failure_is_reported_unavailable_not_zero(tmp_path):
    jars = tmp_path / "corenlp"
    jars.mkdir()
    for name in scoring.CORENLP_JARS:  # present but unusable: SPICE's Java side fails
        (jars / name).write_bytes(b"not a jar")
    before = sorted(scoring.package_dir().rglob("*"))
    value, problem = scoring._spice_score({1: ["a cat"]}, {1: ["a cat"]}, tmp_path / "cache",
                                          scoring.corenlp_dir(jars))
    assert value is None and problem.startswith("SPICE failed")
    assert any((tmp_path / "cache").rglob("spice/tmp/*"))  # ran from the writable copy
    assert sorted(scoring.package_dir().rglob("*")) == before
