"""The shared training path: frozen base weights, fit cache, resume, data and options."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from adapters.adapters_support import build_context, label_task, synthetic_task

import harness.training as training
from harness.errors import DataError, UsageError
from harness.options import build_options
from harness.training import TrainingOptions, encode_examples, fit, parameter_digests, tensor_digest

TINY_BUDGET = {"max_steps": 3, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-2}
ADAPTERS = ("aligner", "adalink", "lora", "prompt_tuning", "llama_adapter")


def _prepare(method: str, load_tiny, **values):
    plugin = importlib.import_module(f"harness.plugins.{method}")
    spec = plugin.harness_methods()[0]
    options = build_options(spec.options, TINY_BUDGET | values, method)
    torch.manual_seed(0)
    model, tokenizer = load_tiny()
    return plugin, options, model, tokenizer


def _task():
    train, _ = label_task(n_train=16, n_test=0)
    return synthetic_task(train)


@pytest.mark.parametrize("method", ADAPTERS)
def test_base_weights_stay_frozen(method, load_tiny, tmp_path):
    """Every base parameter hashes the same before and after a fit, and is still in use
    (peft renames wrapped weights, so they are followed by object, not by name)."""
    plugin, options, model, tokenizer = _prepare(method, load_tiny)
    base = dict(model.named_parameters())
    before = parameter_digests(model)
    adapted = plugin.adapt(model, options)
    trainable = {n: p.detach().clone() for n, p in adapted.named_parameters() if p.requires_grad}
    report = fit(build_context(options, _task(), tmp_path), adapted, tokenizer, method)
    in_use = {id(p) for p in adapted.parameters()}
    assert all(id(p) in in_use and not p.requires_grad for p in base.values())
    assert {name: tensor_digest(p) for name, p in base.items()} == before
    assert any(not torch.equal(p, trainable[n]) for n, p in adapted.named_parameters() if n in trainable)
    assert report["trainable_params"] == sum(t.numel() for t in trainable.values())
    assert report["total_params"] == sum(p.numel() for p in adapted.parameters())


def test_full_fine_tuning_changes_the_base(load_tiny, tmp_path):
    plugin, options, model, tokenizer = _prepare("full_ft", load_tiny)
    before = parameter_digests(model)
    fit(build_context(options, _task(), tmp_path), plugin.adapt(model, options), tokenizer,
        "full_ft")
    assert parameter_digests(model) != before


def test_report_and_fit_cache(load_tiny, tmp_path, monkeypatch, isolated_fits):
    plugin, options, model, tokenizer = _prepare("aligner", load_tiny)
    ctx = build_context(options, _task(), tmp_path)
    report = fit(ctx, plugin.adapt(model, options), tokenizer, "aligner")
    for key in ("trainable_params", "total_params", "train_tokens", "train_seconds", "final_loss"):
        assert ctx.report.to_dict()[key] == report[key]
    assert report["trainable_params"] == 64 + 2 * 4 and report["train_steps"] == 3
    assert not report["fit_cached"]
    [folder] = isolated_fits.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.pt", "fit.json"]
    saved = torch.load(folder / "adapter.pt", weights_only=True)
    assert set(saved) == {"aligner.prefix", "aligner.gates.0", "aligner.gates.1"}

    def no_training(*args, **kwargs):
        raise AssertionError("a cached fit must not train again")

    monkeypatch.setattr(training.loop, "train", no_training)
    _, _, fresh, _ = _prepare("aligner", load_tiny)
    again = fit(build_context(options, _task(), tmp_path), plugin.adapt(fresh, options),
                tokenizer, "aligner")
    assert again["fit_cached"] and again["final_loss"] == report["final_loss"]
    assert torch.equal(fresh.aligner.prefix, model.aligner.prefix)


def test_fingerprint_tracks_data_options_and_seed(tmp_path):
    from harness.plugins.aligner.config import AlignerOptions

    ctx = build_context(AlignerOptions(), _task(), tmp_path)
    key = training.cache.fit_fingerprint(ctx, "aligner", AlignerOptions(), "data", "cpu")
    assert key == training.cache.fit_fingerprint(ctx, "aligner", AlignerOptions(checkpoint_every=7), "data", "cpu")
    assert key != training.cache.fit_fingerprint(ctx, "aligner", AlignerOptions(num_tokens=2), "data", "cpu")
    assert key != training.cache.fit_fingerprint(ctx, "aligner", AlignerOptions(), "other data", "cpu")
    assert key != training.cache.fit_fingerprint(build_context(AlignerOptions(), _task(), tmp_path, seed=1),
                                           "aligner", AlignerOptions(), "data", "cpu")


def test_interrupted_fit_resumes_to_the_same_result(load_tiny, tmp_path, monkeypatch, isolated_fits):
    """LoRA (dropout draws random numbers) for 6 steps, checkpoints every 2, killed in step 5."""
    budget = {"max_steps": 6, "checkpoint_every": 2}
    plugin, options, model, tokenizer = _prepare("lora", load_tiny, **budget)
    uninterrupted = plugin.adapt(model, options)
    reference = fit(build_context(options, _task(), tmp_path), uninterrupted, tokenizer, "lora")
    expected = {n: p.detach().clone() for n, p in uninterrupted.named_parameters() if p.requires_grad}

    real_step, calls = training.loop._optimizer_step, []

    def crash_in_step_five(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training.loop, "_optimizer_step", crash_in_step_five)
    plugin, options, model, tokenizer = _prepare("lora", load_tiny, **budget)
    adapted = plugin.adapt(model, options)
    with pytest.raises(KeyboardInterrupt):
        fit(build_context(options, _task(), tmp_path / "second"), adapted, tokenizer, "lora")
    [folder] = (tmp_path / "second" / "cache" / "fits").iterdir()
    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 4
    assert set(checkpoint["trainable"]) == set(expected)  # trainable parameters only

    resumed = fit(build_context(options, _task(), tmp_path / "second"), adapted, tokenizer, "lora")
    assert len(calls) == 7  # steps 5 and 6 again, nothing before
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-6)
    for name, parameter in adapted.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter, expected[name], atol=1e-7, rtol=0)
    assert not (folder / "checkpoint.pt").exists()


def test_encoding_splits_the_target_as_lm_eval_does(load_tiny):
    _, tokenizer = load_tiny()
    example = {"prompt": "Question: how many apples? Answer:", "target": " four"}
    [masked] = encode_examples(tokenizer, [example], 512, loss_on_prompt=False)
    prompt_ids = tokenizer(example["prompt"]).input_ids
    whole = tokenizer(example["prompt"] + example["target"]).input_ids
    assert masked.input_ids == whole + [tokenizer.eos_token_id]
    assert masked.labels == [-100] * len(prompt_ids) + whole[len(prompt_ids):] + [tokenizer.eos_token_id]
    [full] = encode_examples(tokenizer, [example], 512, loss_on_prompt=True)
    assert full.labels == full.input_ids
    with pytest.raises(DataError, match="max_seq_len"):
        encode_examples(tokenizer, [example], len(prompt_ids), loss_on_prompt=False)


def test_alpaca_json_training_data(tmp_path):
    records = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    options = TrainingOptions(training_data=str(path))
    examples, source = training.training_examples(build_context(options, _task(), tmp_path), options)
    assert source == f"alpaca-json:{path}"
    assert examples[0]["prompt"].endswith("### Instruction:\nName a colour.\n\n### Response:")
    assert "### Input:\n2 and 3" in examples[1]["prompt"] and examples[1]["target"] == "\n5"
    path.write_text('[{"instruction": "no output"}]')
    with pytest.raises(DataError, match="record 0"):
        training.read_alpaca_json(path)
    with pytest.raises(DataError, match="not found"):
        training.read_alpaca_json(tmp_path / "missing.json")


def test_a_task_without_training_split_needs_named_data(tmp_path):
    from harness.contract import Metric, TaskSpec

    task = TaskSpec(name="eval-only", description="", headline=Metric("acc", "acc"), lm_eval=print)
    with pytest.raises(UsageError, match="training_data"):
        training.training_examples(build_context(TrainingOptions(), task, tmp_path), TrainingOptions())


def test_bad_budgets_are_usage_errors():
    from harness.plugins.aligner.config import AlignerOptions

    with pytest.raises(UsageError, match="multiple of micro_batch_size"):
        build_options(AlignerOptions, {"batch_size": 10, "micro_batch_size": 4}, "aligner")
    with pytest.raises(UsageError, match="max_steps"):
        build_options(AlignerOptions, {"max_steps": 0}, "aligner")
    assert build_options(AlignerOptions, {"max_steps": 5}, "aligner").lr == 9e-3


@pytest.mark.parametrize("task", ["gsm8k", "mmlu"])
def test_tasks_supply_training_examples_in_lm_eval_format(task, tmp_path):
    from harness.contract import DataSource, TaskContext
    from harness.host import load_host

    spec = load_host().task(task)
    examples = spec.training_examples(TaskContext(spec.options(), DataSource("embedded"),
                                                  tmp_path, None, 0))
    assert examples and all(set(e) == {"prompt", "target"} for e in examples)
    if task == "gsm8k":
        assert examples[0]["prompt"].startswith("Question: ") and examples[0]["prompt"].endswith("\nAnswer:")
        assert "####" in examples[0]["target"]
    else:
        assert examples[0]["prompt"].startswith("The following are multiple choice questions")
        assert examples[0]["target"] in {" A", " B", " C", " D"}


def test_plugins_declare_training_and_import_without_torch():
    import subprocess
    import sys

    from harness.host import load_host

    methods = ("aligner", "adalink", "lora", "prompt_tuning", "llama_adapter", "full_ft")
    host = load_host([*(f"harness.plugins.{m}" for m in methods)])
    for name in methods:
        spec = host.method(name)
        assert spec.training is not None and issubclass(spec.options, TrainingOptions)
    code = ("import sys; import " + ", ".join(f"harness.plugins.{m}" for m in methods)
            + "; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_planning_can_tell_which_tasks_a_training_method_cannot_fit_for(tmp_path):
    from harness.contract import Metric, TaskSpec
    from harness.host import load_host
    from harness.plugins.aligner.config import AlignerOptions

    host = load_host(["harness.plugins.aligner"])
    aligner = host.method("aligner")
    eval_only = TaskSpec(name="eval-only", description="", headline=Metric("acc", "acc"), lm_eval=print)
    assert training.untrainable_reason(aligner, AlignerOptions(), host.task("gsm8k")) is None
    assert "training_data" in training.untrainable_reason(aligner, AlignerOptions(), eval_only)
    named = AlignerOptions(training_data=str(tmp_path / "alpaca.json"))
    assert training.untrainable_reason(aligner, named, eval_only) is None
    assert training.untrainable_reason(host.method("single"), None, eval_only) is None


def test_stream_training_schedule_is_the_lower_of_warm_up_and_cosine() -> None:
    import math

    from harness.training.loop import _scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = _scheduler(optimizer, "warmup_min_cosine", 0.05, 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([min((s + 1) / 5, 0.5 * (1 + math.cos(math.pi * s / 100)))
                                   for s in range(100)])


def test_optimise_trains_every_parameter_from_a_stream_and_clips() -> None:
    from harness.training.loop import optimise
    from harness.training.options import Optimisation

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    inputs = torch.randn(64, 4)
    targets = inputs @ torch.tensor([1.0, -2.0, 3.0, 0.5]) + 1.0
    losses = []

    def loss(step: int) -> torch.Tensor:
        rows = torch.arange(step % 4 * 16, step % 4 * 16 + 16)
        value = ((model(inputs[rows]).squeeze(1) - targets[rows]) ** 2).mean()
        losses.append(float(value.detach()))
        return value

    final = optimise(model, Optimisation(steps=300, lr=0.05, schedule="cosine", warmup_ratio=0.05,
                                         clip_norm=1.0), loss)
    assert len(losses) == 300 and final == losses[-1] and not model.training
    assert final < losses[0] / 50
    with pytest.raises(ValueError, match="unknown schedule"):
        Optimisation(steps=1, lr=1.0, schedule="sometimes")  # type: ignore[arg-type]
