"""AdaLink's multimodal half: fitting both links on image+caption pairs of the embedded COCO
fixture through the shared training path, and adalink x coco_captioning through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.contract import BuildContext, DataSource, MethodRow, ModelRef, TaskColumn, TaskContext
from harness.host import load_host
from harness.models.loading import load_vision_lm
from harness.options import build_options
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks.coco_captioning import scoring

TINY_VLM = ModelRef("harness-zoo/tiny-vlm", dtype="float32")
# One optimizer step sees all 40 fixture captions, so first and final loss are measured on
# the same examples.
FULL_BATCH = {"rank": 8, "lr": 3e-2, "max_steps": 6, "batch_size": 40, "micro_batch_size": 8}


def _host():
    return load_host(["harness.plugins.adalink", "harness.tasks.coco_captioning"])


def _task_context(task, data: DataSource, tmp_path: Path, **options) -> TaskContext:
    return TaskContext(task.options(**options), data, tmp_path, None, 0)


def test_training_examples_use_the_evaluation_prompt(tmp_path):
    task = _host().task("coco_captioning")
    ctx = _task_context(task, DataSource("embedded"), tmp_path)
    examples = task.training_examples(ctx)
    assert len(examples) == 8 * 5
    prompt = task.lm_eval(ctx).tasks[0]["doc_to_text"]
    assert all(e["prompt"] == prompt for e in examples)
    assert examples[0]["target"] == " a red circle on a white background"
    assert all(Path(e["image"]).is_file() for e in examples)


def test_local_data_trains_only_on_a_named_train_file(tmp_path):
    task = _host().task("coco_captioning")
    folder = tmp_path / "coco_karpathy"
    folder.mkdir()
    test = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "caption": "a test caption"}]}
    (folder / "captions_test5k.json").write_text(json.dumps(test))
    ctx = _task_context(task, DataSource("local", tmp_path), tmp_path, image_dir=str(tmp_path / "img"))
    assert task.training_examples(ctx) == []
    train = {"images": [{"id": 7, "file_name": "b.jpg"}],
             "annotations": [{"image_id": 7, "caption": "a train caption"}]}
    (folder / "captions_train.json").write_text(json.dumps(train))
    [example] = task.training_examples(ctx)
    assert example["target"] == " a train caption"
    assert example["image"] == str((tmp_path / "img" / "b.jpg").resolve())


def test_image_examples_are_encoded_as_hf_multimodal_lm_encodes_them(tmp_path):
    from PIL import Image

    from harness.lm import hf_multimodal_lm
    from harness.models.loading import load_processor
    from harness.training import encode_examples
    from harness.training.data import model_image_token

    task = _host().task("coco_captioning")
    [example] = task.training_examples(_task_context(task, DataSource("embedded"), tmp_path))[:1]
    model, processor = load_vision_lm(TINY_VLM), load_processor(TINY_VLM)
    [encoded] = encode_examples(processor, [example], 512, loss_on_prompt=False,
                                image_token=model_image_token(model, processor))
    ctx = BuildContext(models=[TINY_VLM], options=None, task=task, task_options=None, seed=0,
                       device="cpu", batch_size=1, workdir=tmp_path, data=DataSource("embedded"))
    with Image.open(example["image"]) as image:
        served = hf_multimodal_lm(model, ctx).tok_batch_multimodal_encode(
            [example["prompt"]], [[image.convert("RGB")]])
    prompt_ids = served["input_ids"][0].tolist()
    assert encoded.input_ids[:len(prompt_ids)] == prompt_ids
    assert prompt_ids.count(model.config.image_token_id) == 16
    assert torch.equal(encoded.image_inputs["pixel_values"], served["pixel_values"])
    caption = [label for label in encoded.labels if label != -100]
    assert caption == encoded.input_ids[len(prompt_ids):]


def test_adalink_fits_both_links_on_captions_and_keeps_the_base_frozen(tmp_path):
    from harness.models.loading import load_processor
    from harness.plugins.adalink import adapt
    from harness.training import fit, parameter_digests

    host = _host()
    task, spec = host.task("coco_captioning"), host.method("adalink")
    options = build_options(spec.options, FULL_BATCH, "adalink")
    model = load_vision_lm(TINY_VLM)
    base = parameter_digests(model)
    adapt(model, options)
    ctx = BuildContext(models=[TINY_VLM], options=options, task=task, task_options=task.options(),
                       seed=0, device="cpu", batch_size=1, workdir=tmp_path,
                       data=DataSource("embedded"))
    report = fit(ctx, model, load_processor(TINY_VLM), "adalink")
    assert report["train_examples"] == 40 and report["train_steps"] == 6
    assert report["final_loss"] < report["first_loss"] - 0.1, report
    after = parameter_digests(model)
    assert {name: after[name] for name in base} == base
    for modality in ("text", "image"):
        assert model.adalink.links[modality].up.weight.abs().sum() > 0
    assert report["trainable_params"] == 2 * 2 * 64 * 8


@pytest.mark.skipif(scoring.java_problem() is not None, reason="pycocoevalcap or Java missing")
def test_runner_fits_and_evaluates_adalink_on_coco(tmp_path):
    host = _host()
    spec, task = host.method("adalink"), host.task("coco_captioning")
    options = build_options(spec.options, {"rank": 4, "max_steps": 2, "batch_size": 4,
                                           "micro_batch_size": 4}, "adalink")
    rows = [MethodRow(spec, (ModelRef("harness-zoo/tiny-vlm"),), options, "vlm"),
            MethodRow(spec, (ModelRef("harness-zoo/tiny-llama"),), options, "text")]
    columns = [TaskColumn(task, task.options(max_gen_toks=4))]
    plan = plan_cells(host, rows, columns, RunSettings(data="embedded", limit=2),
                      Store(tmp_path / "results"))
    assert [c.state for c in plan.cells] == ["pending", "n/a"]
    assert plan.cells[1].reason == "needs vision"
    outcomes = run_plan(host, plan)
    assert outcomes[0].status == "ok", outcomes[0].error
    record = json.loads((outcomes[0].path / "result.json").read_text())
    report = record["method_report"]
    assert report["train_data"] == "task-train:coco_captioning (embedded)"
    assert report["train_steps"] == 2 and report["trainable_params"] == 2 * 2 * 64 * 4
    assert record["task"]["headline_key"] == "CIDEr" and record["n_samples"] == 2
