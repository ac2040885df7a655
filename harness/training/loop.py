"""The optimisation loop: seeded epoch permutations cut into steps, gradient
accumulation over micro-batches, AdamW/Adafactor with transformers' schedules, bf16
autocast on GPU, resumable checkpoints of the trainable parameters only. Progress (the
step and its loss) goes to `harness.run.progress`, which the CLI shows."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from harness.run import progress
from harness.training.cache import FitFolder, atomic_torch_save, load_into
from harness.training.data import IGNORE_INDEX, EncodedExample
from harness.training.options import EarlyStopping, TrainingOptions

if TYPE_CHECKING:
    import torch


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


def model_device(model: Any) -> "torch.device":
    return next(model.parameters()).device


def _cuda_rng() -> list[Any]:
    """Dropout on GPU draws from the CUDA generators; a resumed fit restores them too."""
    import torch

    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


@dataclass(frozen=True)
class Validation:
    """A fit's validation split (encoded) and when to stop on it."""

    encoded: list[EncodedExample]
    stopping: EarlyStopping


def validation_loss(model: Any, validation: Validation, options: TrainingOptions, pad_id: int,
                    device: "torch.device") -> float:
    """Mean loss over every supervised token of the validation split (eval mode, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in _micro_batches(validation.encoded, list(range(len(validation.encoded))),
                                    options.micro_batch_size, pad_id, device, model.dtype):
            tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            with _autocast(device):
                total += float(model(**batch).loss) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


def train(model: Any, parameters: dict[str, Any], encoded: list[EncodedExample],
          options: TrainingOptions, seed: int, folder: FitFolder, pad_id: int,
          validation: Validation | None = None) -> dict[str, Any]:
    """Run (or resume) the fit in `folder`; returns the budget it took and its losses.
    With `validation`, stops early and keeps the best validated parameters."""
    import torch
    from transformers import get_scheduler

    device = model_device(model)
    steps = total_steps(options, len(encoded))
    optimizer = _optimizer(list(parameters.values()), options)
    scheduler = get_scheduler(options.schedule, optimizer,
                              num_warmup_steps=round(options.warmup_ratio * steps),
                              num_training_steps=steps)
    state: dict[str, Any] = {"step": 0, "train_tokens": 0, "train_seconds": 0.0, "first_loss": None,
             "final_loss": None, "validation_losses": [], "best_step": None, "stale": 0}
    best: dict[str, Any] = {}
    if folder.checkpoint.is_file():
        saved = torch.load(folder.checkpoint, map_location="cpu", weights_only=True)
        load_into(parameters, saved["trainable"], folder.checkpoint)
        best = saved.get("best", {})
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = saved["state"]
    model.train()
    shown = progress.current()
    shown.phase("fit", steps)
    shown.advance(state["step"])
    while state["step"] < steps and (validation is None
                                     or state["stale"] < validation.stopping.patience):
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
        shown.advance(1, loss=loss)
        if validation is not None and (state["step"] % validation.stopping.every == 0
                                       or state["step"] == steps):
            checked = validation_loss(model, validation, options, pad_id, device)
            if not state["validation_losses"] or checked < min(state["validation_losses"]):
                best = {n: p.detach().cpu().clone() for n, p in parameters.items()}
                state["best_step"], state["stale"] = state["step"], 0
            else:
                state["stale"] += 1
            state["validation_losses"].append(checked)
        if state["step"] % options.checkpoint_every == 0 and state["step"] < steps:
            atomic_torch_save({"trainable": {n: p.detach().cpu() for n, p in parameters.items()},
                               "best": best, "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(),
                               "rng": torch.get_rng_state(), "cuda_rng": _cuda_rng(),
                               "state": state},
                              folder.checkpoint)
    model.eval()
    report = {"train_steps": state["step"], "train_tokens": state["train_tokens"],
              "train_seconds": round(state["train_seconds"], 3),
              "first_loss": state["first_loss"], "final_loss": state["final_loss"]}
    if validation is not None:
        load_into(parameters, best, folder.checkpoint)
        report |= {"validation_losses": state["validation_losses"],
                   "best_step": state["best_step"], "stopped_early": state["step"] < steps}
    return report


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
