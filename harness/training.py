"""The one training path every method that trains goes through.

A method that trains declares `MethodSpec.training`, makes its own parameters trainable
(everything else frozen) and calls `fit` inside its `build`. `fit` reads the training
examples (the task's own training split, or an Alpaca-format JSON file the user names),
tokenises them as lm-eval will see them (image examples through the model's processor, as
lm-eval's HFMultimodalLM encodes them), and runs AdamW/Adafactor with transformers'
learning-rate schedules, gradient accumulation and bf16 autocast on GPU. Checkpoints hold
the trainable parameters only (plus optimizer and schedule state), so an interrupted fit
resumes where it stopped. A finished fit is cached by fingerprint (base model identity,
method name and options, data hash, seed, device), so evaluating one adapter on several
tasks trains it once.

Importing this module stays cheap (no torch): method plugins inherit `TrainingOptions`
at import time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from harness import zoo
from harness.errors import DataError, HarnessError, UsageError
from harness.specs import BuildContext, MethodSpec, TaskContext, TaskSpec, options_to_dict
from harness.store import atomic_write_text

if TYPE_CHECKING:
    import torch

FIT_SCHEMA = 1
IGNORE_INDEX = -100
# Options that change how a fit is carried out but not what it computes.
NON_RESULT_OPTIONS = frozenset({"checkpoint_every"})
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                 "### Response:")
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")


@dataclass(frozen=True)
class TrainingOptions:
    """Fit settings shared by every training method; each method's options subclass this
    with its paper's defaults.

    The budget is `epochs` passes over the data, or `max_steps` optimizer steps when set.
    `batch_size` is the effective batch (examples per optimizer step), reached by
    accumulating `batch_size / micro_batch_size` forward passes.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = 0.0  # fraction of the optimizer steps spent warming up
    batch_size: int = 64
    micro_batch_size: int = 8
    epochs: float = 1.0
    max_steps: int | None = None
    max_seq_len: int = 512
    loss_on_prompt: bool = False  # False: loss on the target tokens only
    training_data: str = ""  # an Alpaca-format JSON file; empty: the task's training split
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of "
                             f"micro_batch_size ({self.micro_batch_size})")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("epochs must be positive (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must lie in [0, 1]")


# ----------------------------------------------------------------------------- data


def read_alpaca_json(path: Path) -> list[dict[str, str]]:
    """Prompt/target pairs from an Alpaca-format JSON list of {instruction, input, output}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"training data {path} not found")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of Alpaca records")
    examples = []
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or "instruction" not in row or "output" not in row:
            raise DataError(f"{path}: record {number} needs 'instruction' and 'output'")
        template = ALPACA_PROMPT_WITH_INPUT if row.get("input") else ALPACA_PROMPT
        examples.append({"prompt": template.format(instruction=row["instruction"],
                                                   input=row.get("input", "")),
                         "target": "\n" + str(row["output"])})
    return examples


def training_examples(ctx: BuildContext, options: TrainingOptions) -> tuple[list[dict[str, str]], str]:
    """(examples, description of their source) for a fit."""
    if options.training_data:
        return read_alpaca_json(Path(options.training_data)), f"alpaca-json:{options.training_data}"
    if ctx.task.training_examples is None:
        raise UsageError(f"task {ctx.task.name!r} has no training split; name a dataset with "
                         f"-o training_data=<alpaca.json>")
    task_ctx = TaskContext(options=ctx.task_options, data=ctx.data, workdir=ctx.workdir,
                           limit=None, seed=ctx.seed)
    examples = ctx.task.training_examples(task_ctx)
    if not examples:
        raise DataError(f"task {ctx.task.name!r} has no training examples in "
                        f"{ctx.data.describe()} (see its training options)")
    return examples, f"task-train:{ctx.task.name} ({ctx.data.describe()})"


def untrainable_reason(method: MethodSpec, options: Any, task: TaskSpec) -> str | None:
    """Why a training method cannot fit for this task (planning time), or None.

    A method that trains needs the task's training split or a dataset named in its options.
    """
    if method.training is None or task.training_examples is not None:
        return None
    if getattr(options, "training_data", ""):
        return None
    return "no training split (name one with -o training_data=<alpaca.json>)"


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    # The processor's image tensors (pixel_values, ...) with a batch dimension of 1, for
    # examples that carry an image.
    image_inputs: dict[str, Any] | None = None


def text_tokenizer(tokenizer_or_processor: Any) -> Any:
    """The text tokenizer of a processor, or the tokenizer itself."""
    return getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)


def encode_examples(tokenizer: Any, examples: list[dict[str, str]], max_seq_len: int,
                    loss_on_prompt: bool, image_token: str | None = None) -> list[EncodedExample]:
    """Token ids and labels; the target is split off the joint encoding as lm-eval does.

    `tokenizer` may be a vision-language processor: an example with an "image" (a file
    path) is then encoded as HFMultimodalLM encodes a request, the prompt's `<image>`
    placeholders replaced by `image_token` and expanded by the processor.
    """
    eos_id = text_tokenizer(tokenizer).eos_token_id
    eos = [eos_id] if eos_id is not None else []
    encoded = []
    for example in examples:
        image_inputs = None
        if "image" in example:
            prompt_ids, whole, image_inputs = _encode_with_image(tokenizer, example, image_token)
        else:
            prompt_ids = text_tokenizer(tokenizer)(example["prompt"]).input_ids
            whole = text_tokenizer(tokenizer)(example["prompt"] + example["target"]).input_ids
        target_ids = whole[len(prompt_ids):] + eos
        ids = (prompt_ids + target_ids)[:max_seq_len]
        prompt_labels = prompt_ids if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
        labels = (prompt_labels + target_ids)[:max_seq_len]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            encoded.append(EncodedExample(ids, labels, image_inputs))
    if not encoded:
        raise DataError(f"no training example keeps a target token within max_seq_len={max_seq_len}")
    return encoded


def _encode_with_image(processor: Any, example: dict[str, str], image_token: str | None
                       ) -> tuple[list[int], list[int], dict[str, Any]]:
    """(prompt ids, prompt+target ids, image tensors) through the processor."""
    from lm_eval.models.hf_vlms import DEFAULT_IMAGE_PLACEHOLDER
    from lm_eval.models.utils import replace_placeholders
    from PIL import Image

    if not hasattr(processor, "image_processor") or image_token is None:
        raise HarnessError("a training example has an image but the model is not a "
                           "vision-language model with a processor")
    path = Path(example["image"])
    if not path.is_file():
        raise DataError(f"training image {path} not found")
    with Image.open(path) as opened:
        image = opened.convert("RGB")

    def encode(text: str) -> Any:
        text = replace_placeholders(text, DEFAULT_IMAGE_PLACEHOLDER, image_token, max_images=999)
        return processor(images=[image], text=[text], return_tensors="pt")

    prompt, whole = encode(example["prompt"]), encode(example["prompt"] + example["target"])
    image_inputs = {key: value for key, value in whole.items()
                    if key not in {"input_ids", "attention_mask"}}
    return prompt["input_ids"][0].tolist(), whole["input_ids"][0].tolist(), image_inputs


def data_digest(examples: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- parameters


def freeze(model: Any) -> None:
    """Make every parameter of `model` untrainable (adapters add trainable ones after)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def trainable_parameters(model: Any) -> dict[str, "torch.nn.Parameter"]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_digests(model: Any) -> dict[str, str]:
    """sha256 of every parameter's bytes, by name: proves which weights a fit changed."""
    return {name: tensor_digest(parameter) for name, parameter in model.named_parameters()}


def tensor_digest(tensor: "torch.Tensor") -> str:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"").hexdigest()


# ----------------------------------------------------------------------------- fit cache


def fit_fingerprint(ctx: BuildContext, method: str, options: TrainingOptions, data_hash: str,
                    device: str) -> str:
    identity = {
        "schema": FIT_SCHEMA,
        "method": method,
        "options": {k: v for k, v in options_to_dict(options).items()
                    if k not in NON_RESULT_OPTIONS},
        "models": [m.identity() for m in ctx.models],
        "data": data_hash,
        "seed": ctx.seed,
        "device": device,
        "versions": {name: _version(name) for name in ("torch", "transformers", "peft")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


def fits_root() -> Path:
    return zoo.cache_root() / "fits"


@dataclass(frozen=True)
class FitFolder:
    """Where one fingerprint's adapter, its record and its in-progress checkpoint live."""

    path: Path

    @property
    def adapter(self) -> Path:
        return self.path / "adapter.pt"

    @property
    def record(self) -> Path:
        return self.path / "fit.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def finished(self) -> bool:
        return self.adapter.is_file() and self.record.is_file()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, staging)
    os.replace(staging, path)


def _load_into(parameters: dict[str, Any], state: dict[str, Any], source: Path) -> None:
    import torch

    if set(state) != set(parameters):
        missing, extra = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
        raise HarnessError(f"{source}: trainable parameters do not match "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device, parameter.dtype))


# ----------------------------------------------------------------------------- the fit


def fit(ctx: BuildContext, model: Any, tokenizer: Any, method: str,
        options: TrainingOptions | None = None, progress: bool = True) -> dict[str, Any]:
    """Train `model`'s trainable parameters (or load the cached fit); returns the report.

    The report (trainable/total parameter counts, training tokens, seconds, final loss)
    is merged into `ctx.report`, which the runner saves as the cell's `method_report`.
    The model is left in eval mode.
    """
    options = options if options is not None else ctx.options
    if not isinstance(options, TrainingOptions):
        raise HarnessError(f"{method}: options must subclass harness.training.TrainingOptions")
    parameters = trainable_parameters(model)
    if not parameters:
        raise HarnessError(f"{method}: the model has no trainable parameters to fit")
    examples, source = training_examples(ctx, options)
    device = _model_device(model)
    key = fit_fingerprint(ctx, method, options, data_digest(examples), device.type)
    folder = FitFolder(fits_root() / f"{method}-{key[:24]}")
    if folder.finished():
        import torch

        _load_into(parameters, torch.load(folder.adapter, map_location="cpu", weights_only=True),
                   folder.adapter)
        report = json.loads(folder.record.read_text()) | {"fit_cached": True}
    else:
        encoded = encode_examples(tokenizer, examples, options.max_seq_len, options.loss_on_prompt,
                                  image_token=_image_token(model, tokenizer))
        report = _train(model, parameters, encoded, options, ctx.seed, folder,
                        pad_id=_pad_id(text_tokenizer(tokenizer)), label=f"fit {method}",
                        progress=progress)
        report |= {"train_examples": len(encoded), "train_data": source, "fit_fingerprint": key}
        _atomic_torch_save({n: p.detach().cpu() for n, p in parameters.items()}, folder.adapter)
        atomic_write_text(folder.record, json.dumps(report, indent=2, sort_keys=True))
        folder.checkpoint.unlink(missing_ok=True)
        report |= {"fit_cached": False}
    from harness.lm import count_parameters

    trainable, total = count_parameters(model)
    report |= {"trainable_params": trainable, "total_params": total}
    model.eval()
    ctx.report.update(report)
    return report


def _model_device(model: Any) -> "torch.device":
    return next(model.parameters()).device


def _image_token(model: Any, tokenizer: Any) -> str | None:
    """The image token string HFMultimodalLM puts in place of `<image>`: the decoded
    `image_token_id` (or `image_token_index`) of the model's config."""
    token_id = (getattr(model.config, "image_token_id", None)
                or getattr(model.config, "image_token_index", None))
    if token_id is None:
        return None
    return text_tokenizer(tokenizer).decode([token_id], skip_special_tokens=False)


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def total_steps(options: TrainingOptions, n_examples: int) -> int:
    if options.max_steps is not None:
        return options.max_steps
    return max(1, math.ceil(options.epochs * math.ceil(n_examples / options.batch_size)))


def step_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of one optimizer step: epochs are seeded permutations cut into batches,
    so a resumed fit sees exactly the batches an uninterrupted one would."""
    import torch

    steps_per_epoch = math.ceil(n_examples / batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_examples, generator=generator).tolist()
    return order[position * batch_size:(position + 1) * batch_size]


def _micro_batches(encoded: list[EncodedExample], indices: list[int], size: int, pad_id: int,
                   device: "torch.device", dtype: "torch.dtype"
                   ) -> Iterator[dict[str, "torch.Tensor"]]:
    import torch

    for start in range(0, len(indices), size):
        chunk = [encoded[i] for i in indices[start:start + size]]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, example in enumerate(chunk):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                 "labels": labels.to(device)}
        yield batch | _stacked_images([e.image_inputs for e in chunk if e.image_inputs], device,
                                      dtype)


def _stacked_images(image_inputs: list[dict[str, Any]], device: "torch.device",
                    dtype: "torch.dtype") -> dict[str, "torch.Tensor"]:
    """One batch of image tensors in the order of the rows' image tokens; floating tensors
    in the model's dtype, as HFMultimodalLM casts them."""
    import torch

    if not image_inputs:
        return {}
    stacked = {}
    for key in image_inputs[0]:
        tensor = torch.cat([inputs[key] for inputs in image_inputs])
        stacked[key] = tensor.to(device, dtype) if tensor.is_floating_point() else tensor.to(device)
    return stacked


def _optimizer(parameters: list[Any], options: TrainingOptions) -> Any:
    import torch

    if options.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed learning rate, no parameter scaling: the setting of prompt tuning (Lester et al.).
        return Adafactor(parameters, lr=options.lr, weight_decay=options.weight_decay,
                         scale_parameter=False, relative_step=False, warmup_init=False,
                         decay_rate=-0.8)
    return torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)


def _autocast(device: "torch.device") -> Any:
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress_bar(total: int, done: int, label: str, enabled: bool) -> Any:
    """A tqdm bar with the running loss, like lm-eval's and transformers' own bars (a rich
    display here would fight the CLI's live display for the terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=label, unit="step", dynamic_ncols=True,
                disable=not enabled or bool(os.environ.get("HARNESS_NO_PROGRESS")))


def _cuda_rng() -> list[Any]:
    """Dropout on GPU draws from the CUDA generators; a resumed fit restores them too."""
    import torch

    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def _train(model: Any, parameters: dict[str, Any], encoded: list[EncodedExample],
           options: TrainingOptions, seed: int, folder: FitFolder, pad_id: int, label: str,
           progress: bool) -> dict[str, Any]:
    import torch
    from transformers import get_scheduler

    device = _model_device(model)
    steps = total_steps(options, len(encoded))
    optimizer = _optimizer(list(parameters.values()), options)
    scheduler = get_scheduler(options.schedule, optimizer,
                              num_warmup_steps=round(options.warmup_ratio * steps),
                              num_training_steps=steps)
    state = {"step": 0, "train_tokens": 0, "train_seconds": 0.0, "first_loss": None,
             "final_loss": None}
    if folder.checkpoint.is_file():
        saved = torch.load(folder.checkpoint, map_location="cpu", weights_only=True)
        _load_into(parameters, saved["trainable"], folder.checkpoint)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = saved["state"]
    model.train()
    with _progress_bar(steps, state["step"], label, progress) as bar:
        while state["step"] < steps:
            started = time.perf_counter()
            indices = step_indices(state["step"], len(encoded), options.batch_size, seed)
            loss, tokens = _optimizer_step(model, optimizer, encoded, indices, options, pad_id,
                                           device)
            scheduler.step()
            state["step"] += 1
            state["train_tokens"] += tokens
            state["train_seconds"] += time.perf_counter() - started
            state["final_loss"] = loss
            state["first_loss"] = loss if state["first_loss"] is None else state["first_loss"]
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(1)
            if state["step"] % options.checkpoint_every == 0 and state["step"] < steps:
                _atomic_torch_save({"trainable": {n: p.detach().cpu() for n, p in parameters.items()},
                                    "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(),
                                    "rng": torch.get_rng_state(), "cuda_rng": _cuda_rng(),
                                    "state": state},
                                   folder.checkpoint)
    model.eval()
    return {"train_steps": steps, "train_tokens": state["train_tokens"],
            "train_seconds": round(state["train_seconds"], 3),
            "first_loss": state["first_loss"], "final_loss": state["final_loss"]}


def _optimizer_step(model: Any, optimizer: Any, encoded: list[EncodedExample],
                    indices: list[int], options: TrainingOptions, pad_id: int,
                    device: "torch.device") -> tuple[float, int]:
    """One optimizer step over `indices`, accumulated over micro-batches; the loss is the
    mean over every supervised token of the step. Returns (loss, tokens seen)."""
    batches = list(_micro_batches(encoded, indices, options.micro_batch_size, pad_id, device,
                                  model.dtype))
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
    supervised = sum(counts)
    step_loss, tokens = 0.0, 0
    for batch, count in zip(batches, counts):
        tokens += int(batch["attention_mask"].sum())
        if count == 0:
            continue
        with _autocast(device):
            loss = model(**batch).loss * (count / supervised)
        loss.backward()
        step_loss += float(loss.detach())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, tokens


def fitted_lm(ctx: BuildContext, method: str, adapt: Callable[[Any, Any], Any]) -> Any:
    """The whole `build` of a training method: load the base model, `adapt(model, options)`
    it (freeze the base, add trainable parameters; returns the model to train and
    evaluate), fit, and hand the result to lm-eval. A vision-language base model fits
    with its processor and is evaluated through HFMultimodalLM."""
    from harness.lm import hf_lm, hf_multimodal_lm
    from harness.models import is_vision_language, load_causal_lm, load_vision_lm

    ref = ctx.models[0]
    if is_vision_language(ref):
        model = adapt(load_vision_lm(ref), ctx.options)
        fit(ctx, model, load_processor(ref), method)
        return hf_multimodal_lm(model, ctx)
    model, tokenizer = load_causal_lm(ref)
    model = adapt(model, ctx.options)
    fit(ctx, model, tokenizer, method)
    return hf_lm(model, tokenizer, ctx)


def load_processor(ref: Any) -> Any:
    """The processor of a vision-language model, from its directory as HFMultimodalLM
    loads it, so that a fit encodes images exactly as evaluation does."""
    from transformers import AutoProcessor

    from harness.errors import ModelLoadError, first_line

    try:
        return AutoProcessor.from_pretrained(ref.location(), revision=ref.revision)
    except Exception as exc:  # transformers raises many types for a bad reference
        raise ModelLoadError(f"cannot load the processor of {ref.id!r}: {first_line(exc)}") from exc
