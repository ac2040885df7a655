"""The one training path every method that trains goes through.

A method that trains declares `MethodSpec.training`, makes its own parameters trainable
(everything else frozen) and calls `fit` inside its `build` (or hands an `adapt` function
to `fitted_lm`, which does the whole build). `fit` reads the training examples (the task's
own training split, or an Alpaca-format JSON file the user names), tokenises them as
lm-eval will see them (`training.data`), and optimises (`training.loop`): AdamW/Adafactor
with transformers' learning-rate schedules, gradient accumulation, bf16 autocast on GPU,
resumable checkpoints of the trainable parameters only. A finished fit is cached by
fingerprint (`training.cache`), so evaluating one adapter on several tasks trains it once.

Importing this package stays cheap (no torch): method plugins inherit `TrainingOptions`
at import time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.contract import BuildContext, MethodReport
from harness.errors import HarnessError
from harness.training import cache, checkpoint, data, loop
from harness.training.data import (IGNORE_INDEX, EncodedExample, encode_examples, read_alpaca_json,
                                   training_examples, untrainable_reason)
from harness.training.options import EarlyStopping, TrainingOptions

if TYPE_CHECKING:
    import torch

__all__ = ["TrainingOptions", "EarlyStopping", "fit", "fitted_lm", "freeze", "trainable_parameters",
           "parameter_digests", "tensor_digest", "untrainable_reason", "training_examples",
           "encode_examples", "read_alpaca_json", "EncodedExample", "IGNORE_INDEX"]


def freeze(model: Any) -> None:
    """Make every parameter of `model` untrainable (adapters add trainable ones after)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def peft_model(model: Any, config: Any) -> Any:
    """peft's `get_peft_model`, its calls counted as the model's (`harness.models.cost.watch_wrapper`:
    the adaption prompt bypasses the model's hooks). peft 0.21 reads transformers'
    deprecated `is_gradient_checkpointing` on every wrap; that one FutureWarning, which only
    peft can fix, is silenced here."""
    import warnings

    from peft import get_peft_model

    from harness.models.cost import watch_wrapper

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return watch_wrapper(get_peft_model(model, config), model)


def trainable_parameters(model: Any) -> dict[str, "torch.nn.Parameter"]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_digests(model: Any) -> dict[str, str]:
    """sha256 of every parameter's bytes, by name: proves which weights a fit changed."""
    return {name: tensor_digest(parameter) for name, parameter in model.named_parameters()}


def tensor_digest(tensor: "torch.Tensor") -> str:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"").hexdigest()


def fit(ctx: BuildContext, model: Any, tokenizer: Any, method: str,
        options: TrainingOptions | None = None,
        early_stopping: EarlyStopping | None = None) -> dict[str, Any]:
    """Train `model`'s trainable parameters (or load the cached fit); returns the report.

    The report (trainable/total parameter counts, training tokens, seconds, first and
    final loss, in the flat form records store) is merged into `ctx.report`, which the
    runner saves as the cell's `method_report`. The model is left in eval mode. With `early_stopping` and a task
    that has a validation split, the fit keeps its best validated parameters.
    """
    options = options if options is not None else ctx.options
    if not isinstance(options, TrainingOptions):
        raise HarnessError(f"{method}: options must subclass harness.api.TrainingOptions")
    parameters = trainable_parameters(model)
    if not parameters:
        raise HarnessError(f"{method}: the model has no trainable parameters to fit")
    examples, source = training_examples(ctx, options)
    validation = data.validation_examples(ctx) if early_stopping is not None else []
    data_hash = data.data_digest(examples)
    if validation:
        data_hash += f"+validation:{data.data_digest(validation)}"
    device = loop.model_device(model)
    key = cache.fit_fingerprint(ctx, method, options, data_hash, device.type)
    fits, label = cache.fit_cache(ctx), f"{method}-"
    stored = fits.load(key, cache.read_fit, label)
    if stored is not None:
        state, record = stored
        checkpoint.load_into(parameters, state, fits.path(key, label) / cache.ADAPTER)
        report = record | {"fit_cached": True}
    else:
        image_token = data.model_image_token(model, tokenizer)
        encoded = encode_examples(tokenizer, examples, options.max_seq_len, options.loss_on_prompt,
                                  image_token=image_token)
        validated = (loop.Validation(encode_examples(tokenizer, validation, options.max_seq_len,
                                                     options.loss_on_prompt,
                                                     image_token=image_token), early_stopping)
                     if validation and early_stopping is not None else None)
        report = loop.train(model, parameters, encoded, options, ctx.seed,
                            fits.scratch(key, label) / cache.CHECKPOINT,
                            pad_id=data.padding_id(data.text_tokenizer(tokenizer)),
                            validation=validated)
        report |= {"train_examples": len(encoded), "train_data": source, "fit_fingerprint": key}

        def write(folder: Path) -> None:
            import torch

            torch.save({n: p.detach().cpu() for n, p in parameters.items()},
                       folder / cache.ADAPTER)
            cache.write_record(folder, report)

        fits.publish(key, write, label)
        fits.discard_scratch(key, label)
        report |= {"fit_cached": False}
    from harness.lm import count_parameters
    from harness.models.cost import training_flops

    trainable, total = count_parameters(model)
    report |= {"trainable_params": trainable, "total_params": total,
               "train_flops": training_flops(model, trainable, report["train_tokens"])}
    model.eval()
    ctx.report.merge(MethodReport.from_dict(report))
    return report


def fitted_lm(ctx: BuildContext, method: str, adapt: Callable[[Any, Any], Any]) -> Any:
    """The whole `build` of a training method: load the base model, `adapt(model, options)`
    it (freeze the base, add trainable parameters; returns the model to train and
    evaluate), fit, and hand the result to lm-eval. A vision-language base model fits
    with its processor and is evaluated through HFMultimodalLM."""
    from harness.lm import hf_lm, hf_multimodal_lm
    from harness.models.loading import (is_vision_language, load_causal_lm, load_processor,
                                        load_vision_lm)

    ref = ctx.models[0]
    if is_vision_language(ref):
        model = adapt(load_vision_lm(ref), ctx.options)
        fit(ctx, model, load_processor(ref), method)
        return hf_multimodal_lm(model, ctx)
    model, tokenizer = load_causal_lm(ref)
    model = adapt(model, ctx.options)
    fit(ctx, model, tokenizer, method)
    return hf_lm(model, tokenizer, ctx)
